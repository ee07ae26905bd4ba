"""Dashboard accounts as services: users, memberships, invitations (real Postgres)."""

from __future__ import annotations

import secrets

import pytest

from api.errors import AlreadyExists, Forbidden, NotFound, ValidationFailed
from api.services import users
from api.services.context import ServiceContext
from api.services.workspaces import Workspace

PASSWORD = "a good long password"


def _email() -> str:
    return f"u-{secrets.token_hex(4)}@example.com"


async def test_emails_are_one_account_whatever_their_case(ctx: ServiceContext, workspace: Workspace) -> None:
    email = _email()
    await users.create_user(ctx, email, PASSWORD, workspace.id, "owner")
    with pytest.raises(AlreadyExists):
        await users.create_user(ctx, email.upper(), PASSWORD, workspace.id, "owner")
    assert (await users.authenticate_user(ctx, email.upper(), PASSWORD)) is not None


async def test_a_short_password_is_refused_on_its_field(ctx: ServiceContext, workspace: Workspace) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await users.create_user(ctx, _email(), "short", workspace.id, "member")
    assert caught.value.details == [{"path": "password", "message": "a password is at least 10 characters"}]


async def test_wrong_password_and_unknown_email_both_give_none(ctx: ServiceContext, workspace: Workspace) -> None:
    email = _email()
    await users.create_user(ctx, email, PASSWORD, workspace.id, "member")
    assert await users.authenticate_user(ctx, email, "not the password") is None
    assert await users.authenticate_user(ctx, _email(), PASSWORD) is None


async def test_the_last_owner_cannot_be_removed(ctx: ServiceContext, workspace: Workspace) -> None:
    owner = await users.create_user(ctx, _email(), PASSWORD, workspace.id, "owner")
    member = await users.create_user(ctx, _email(), PASSWORD, workspace.id, "member")
    with pytest.raises(Forbidden):
        await users.remove_member(ctx, workspace.id, owner.id)
    await users.remove_member(ctx, workspace.id, member.id)
    assert [m.user_id for m in await users.list_members(ctx, workspace.id)] == [owner.id]


async def test_an_expired_invitation_is_refused_and_adds_no_one(ctx: ServiceContext, workspace: Workspace) -> None:
    email = _email()
    invitation, token = await users.create_invitation(ctx, workspace.id, email, "member", None)
    await ctx.pool.execute(
        "UPDATE invitations SET expires_at = now() - interval '1 second' WHERE id = $1", invitation.id
    )
    with pytest.raises(NotFound):
        await users.accept_invitation(ctx, token, PASSWORD)
    assert email not in [m.email for m in await users.list_members(ctx, workspace.id)]


async def test_an_invitation_is_used_once(ctx: ServiceContext, workspace: Workspace) -> None:
    email = _email()
    _, token = await users.create_invitation(ctx, workspace.id, email, "owner", None)
    user = await users.accept_invitation(ctx, token, PASSWORD)
    assert await users.role_in(ctx, user.id, workspace.id) == "owner"
    with pytest.raises(NotFound):
        await users.accept_invitation(ctx, token, PASSWORD)
