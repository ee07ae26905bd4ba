"""API keys and workspaces through their services."""

from __future__ import annotations

import pytest

from api.errors import NotFound, PlanLimitReached, Unauthorized, ValidationFailed
from api.services.context import ServiceContext
from api.services.keys import ALL_SCOPES, authenticate, create_key, delete_key, hash_key, list_keys
from api.services.workspaces import Workspace, get_or_create_workspace, set_plan, workspace_info


async def test_get_or_create_workspace_is_idempotent(ctx: ServiceContext, workspace: Workspace) -> None:
    again = await get_or_create_workspace(ctx, workspace.name)
    assert again == workspace and workspace.plan == "self-hosted" and workspace.id.startswith("ws_")


async def test_key_secret_is_returned_once_and_stored_only_as_a_hash(ctx: ServiceContext, workspace: Workspace) -> None:
    key, secret = await create_key(ctx, workspace.id, "ci", ["links:read"])
    assert secret.startswith("h0p_") and len(secret) > 40 and key.hint == secret[-4:]
    stored = await ctx.pool.fetchrow("SELECT * FROM api_keys WHERE id = $1", key.id)
    assert secret not in [str(v) for v in stored.values()]
    assert stored["key_hash"] == hash_key(secret)
    listed = await list_keys(ctx, workspace.id)
    assert [k.id for k in listed] == [key.id] and not hasattr(listed[0], "key")


async def test_authenticate_returns_workspace_scopes_and_marks_last_use(
    ctx: ServiceContext, workspace: Workspace
) -> None:
    key, secret = await create_key(ctx, workspace.id, "app", ["links:write"])
    principal = await authenticate(ctx, secret)
    assert principal.workspace_id == workspace.id and principal.key_id == key.id
    assert principal.allows("links:write") and principal.allows("links:read")  # write includes read
    assert not principal.allows("domains:read")
    assert (await list_keys(ctx, workspace.id))[0].last_used_at is not None


@pytest.mark.parametrize("secret", [None, "", "nope", "h0p_" + "x" * 43])
async def test_unknown_secrets_are_unauthorized(ctx: ServiceContext, secret: str | None) -> None:
    with pytest.raises(Unauthorized):
        await authenticate(ctx, secret)


async def test_a_deleted_key_no_longer_authenticates(ctx: ServiceContext, workspace: Workspace) -> None:
    key, secret = await create_key(ctx, workspace.id, "old", None)
    assert sorted(key.scopes) == sorted(ALL_SCOPES)
    await delete_key(ctx, workspace.id, key.id)
    with pytest.raises(Unauthorized):
        await authenticate(ctx, secret)
    with pytest.raises(NotFound):
        await delete_key(ctx, workspace.id, key.id)


async def test_unknown_scopes_are_refused(ctx: ServiceContext, workspace: Workspace) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await create_key(ctx, workspace.id, "bad", ["links:destroy"])
    assert [d["path"] for d in caught.value.details or []] == ["scopes"]


async def test_the_free_plan_limits_keys(ctx: ServiceContext, workspace: Workspace) -> None:
    await set_plan(ctx, workspace.id, "free")
    await create_key(ctx, workspace.id, "1", ["links:read"])
    await create_key(ctx, workspace.id, "2", ["links:read"])
    with pytest.raises(PlanLimitReached):
        await create_key(ctx, workspace.id, "3", ["links:read"])
    info = await workspace_info(ctx, workspace.id)
    assert (info.plan.name, info.plan.keys, info.usage.keys) == ("free", 2, 2)
