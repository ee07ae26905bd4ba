"""A key manages only keys no stronger than itself, and a workspace has a bounded number of keys."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from api.app import create_app
from api.services.context import ServiceContext
from api.services.keys import ALL_SCOPES, create_key, list_keys
from api.services.workspaces import Workspace
from h0p_settings import Settings
from tests.api.conftest import client_for, running


@pytest.fixture
async def narrow(api_app: Starlette, ctx: ServiceContext, workspace: Workspace) -> AsyncIterator[httpx.AsyncClient]:
    """A client with a key that may manage keys but holds only two other scopes."""
    _, secret = await create_key(ctx, workspace.id, "narrow", ["keys:write", "links:read"])
    async with client_for(api_app, secret) as client:
        yield client


async def test_a_narrow_key_cannot_mint_an_all_scopes_key(
    narrow: httpx.AsyncClient, ctx: ServiceContext, workspace: Workspace
) -> None:
    r = await narrow.post("/keys", json={"name": "escalate", "scopes": list(ALL_SCOPES)})
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "ACTION_NOT_ALLOWED"
    assert [k.name for k in await list_keys(ctx, workspace.id)] == ["narrow"]


async def test_a_narrow_key_mints_by_default_only_its_own_scopes(narrow: httpx.AsyncClient) -> None:
    r = await narrow.post("/keys", json={"name": "child"})
    assert r.status_code == 201
    assert sorted(r.json()["scopes"]) == ["keys:read", "keys:write", "links:read"]


async def test_a_narrow_key_cannot_revoke_a_broader_key(
    narrow: httpx.AsyncClient, api_app: Starlette, ctx: ServiceContext, workspace: Workspace
) -> None:
    broad, secret = await create_key(ctx, workspace.id, "admin", None)
    r = await narrow.delete(f"/keys/{broad.id}")
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "ACTION_NOT_ALLOWED"
    async with client_for(api_app, secret) as admin:
        assert (await admin.get("/workspace")).status_code == 200  # still works


async def test_a_narrow_key_revokes_a_key_within_its_scopes(
    narrow: httpx.AsyncClient, api_app: Starlette, ctx: ServiceContext, workspace: Workspace
) -> None:
    lesser, secret = await create_key(ctx, workspace.id, "reader", ["links:read"])
    r = await narrow.delete(f"/keys/{lesser.id}")
    assert r.status_code == 200
    async with client_for(api_app, secret) as gone:
        assert (await gone.get("/links")).status_code == 401


async def test_the_keys_per_workspace_cap_gives_plan_limit_reached(
    api_settings: Settings, ctx: ServiceContext, workspace: Workspace
) -> None:
    _, secret = await create_key(ctx, workspace.id, "admin", None)
    async with (
        running(create_app(dataclasses.replace(api_settings, max_keys_per_workspace=3))) as app,
        client_for(app, secret) as client,
    ):
        codes = [(await client.post("/keys", json={"name": f"k{i}"})).status_code for i in range(2)]
        refused = await client.post("/keys", json={"name": "one too many"})
    assert codes == [201, 201]
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "PLAN_LIMIT_REACHED"
    assert len(await list_keys(ctx, workspace.id)) == 3
