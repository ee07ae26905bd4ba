"""Dashboard accounts: users (email + argon2 password), their roles in workspaces, invitations.

A role is ``owner`` (everything: members, keys, webhooks, settings) or ``member`` (links,
domains, folders, tags, QR, analytics). An invitation is a single-use link that expires; the
invitee sets a password there. Sessions are the dashboard's (Redis), not this module's.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Literal

import argon2
import asyncpg
import msgspec
from argon2.exceptions import InvalidHashError, VerificationError

from api.errors import AlreadyExists, Forbidden, NotFound, field_error
from api.ids import new_id
from api.services.context import ServiceContext

Role = Literal["owner", "member"]
ROLES: tuple[Role, ...] = ("owner", "member")
MIN_PASSWORD = 10
MAX_PASSWORD = 200
INVITATION_TTL = timedelta(days=7)
_hasher = argon2.PasswordHasher()
# Verified when the email is unknown, so a wrong email costs the same time as a wrong password
_DUMMY_HASH = _hasher.hash("h0p-no-such-user")


class User(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    email: str


class Membership(msgspec.Struct, frozen=True, kw_only=True):
    """A user's role in one workspace (what the dashboard's workspace switcher lists)."""

    workspace_id: str
    workspace_name: str
    role: Role


class Member(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    email: str
    role: Role
    created_at: datetime


class Invitation(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    email: str
    role: Role
    created_at: datetime
    expires_at: datetime
    accepted_at: datetime | None


def _check_email(email: str) -> str:
    email = email.strip()
    local, at, host = email.rpartition("@")
    if not at or not local or not host or len(email) > 254 or any(c.isspace() for c in email):
        raise field_error("email", "enter an email address such as name@example.com")
    return email


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise field_error("password", f"a password is at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD or "\x00" in password:
        raise field_error("password", f"a password is at most {MAX_PASSWORD} characters, without NUL")


def _check_role(role: str) -> Role:
    if role not in ROLES:
        raise field_error("role", "the role is owner or member")
    return "owner" if role == "owner" else "member"


async def _hash(password: str) -> str:
    # argon2 costs ~50 ms of CPU: off the event loop
    return await asyncio.to_thread(_hasher.hash, password)


async def _verify(password_hash: str, password: str) -> bool:
    def verify() -> bool:
        try:
            return _hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(verify)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_user(ctx: ServiceContext, email: str, password: str, workspace_id: str, role: str) -> User:
    """A new user with ``role`` in the workspace; AlreadyExists if the email has an account."""
    email = _check_email(email)
    _check_password(password)
    checked_role = _check_role(role)
    password_hash = await _hash(password)
    async with ctx.pool.acquire() as conn, conn.transaction():
        try:
            user_id = await conn.fetchval(
                "INSERT INTO users (id, email, password_hash) VALUES ($1, $2, $3) RETURNING id",
                new_id("user"),
                email,
                password_hash,
            )
        except asyncpg.UniqueViolationError:
            raise AlreadyExists("a user with this email already exists") from None
        await _add_membership(conn, user_id, workspace_id, checked_role)
    return User(id=user_id, email=email)


async def _add_membership(conn: asyncpg.Connection, user_id: str, workspace_id: str, role: Role) -> None:
    try:
        await conn.execute(
            "INSERT INTO memberships (user_id, workspace_id, role) VALUES ($1, $2, $3)"
            " ON CONFLICT (user_id, workspace_id) DO UPDATE SET role = EXCLUDED.role",
            user_id,
            workspace_id,
            role,
        )
    except asyncpg.ForeignKeyViolationError:
        raise NotFound("workspace not found") from None


async def add_member(ctx: ServiceContext, email: str, workspace_id: str, role: str) -> User:
    """Give an existing user ``role`` in the workspace (replacing the role they had there)."""
    row = await ctx.pool.fetchrow("SELECT id, email FROM users WHERE lower(email) = lower($1)", email.strip())
    if row is None:
        raise NotFound("no user has this email")
    async with ctx.pool.acquire() as conn:
        await _add_membership(conn, row["id"], workspace_id, _check_role(role))
    return User(id=row["id"], email=row["email"])


async def authenticate_user(ctx: ServiceContext, email: str, password: str) -> User | None:
    """The user if the email and password match, else None (the same time either way)."""
    row = await ctx.pool.fetchrow(
        "SELECT id, email, password_hash FROM users WHERE lower(email) = lower($1)", email.strip()[:254]
    )
    ok = await _verify(row["password_hash"] if row else _DUMMY_HASH, password[:MAX_PASSWORD])
    if row is None or not ok:
        return None
    return User(id=row["id"], email=row["email"])


async def get_user(ctx: ServiceContext, user_id: str) -> User:
    """The user with this id; NotFound otherwise."""
    row = await ctx.pool.fetchrow("SELECT id, email FROM users WHERE id = $1", user_id)
    if row is None:
        raise NotFound("user not found")
    return User(id=row["id"], email=row["email"])


async def change_password(ctx: ServiceContext, user_id: str, current: str, new: str) -> None:
    """Set a new password after checking the current one (ValidationFailed on ``currentPassword``)."""
    row = await ctx.pool.fetchrow("SELECT password_hash FROM users WHERE id = $1", user_id)
    if row is None:
        raise NotFound("user not found")
    if not await _verify(row["password_hash"], current):
        raise field_error("currentPassword", "the current password is not correct")
    try:
        _check_password(new)
    except Exception as exc:
        raise field_error("newPassword", str(exc)) from None
    await ctx.pool.execute(
        "UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1", user_id, await _hash(new)
    )


async def memberships(ctx: ServiceContext, user_id: str) -> list[Membership]:
    """The workspaces the user belongs to, by name."""
    rows = await ctx.pool.fetch(
        "SELECT m.workspace_id, w.name, m.role FROM memberships m JOIN workspaces w ON w.id = m.workspace_id"
        " WHERE m.user_id = $1 ORDER BY w.name",
        user_id,
    )
    return [Membership(workspace_id=r["workspace_id"], workspace_name=r["name"], role=r["role"]) for r in rows]


async def role_in(ctx: ServiceContext, user_id: str, workspace_id: str) -> Role | None:
    """The user's role in the workspace, or None if they are not a member."""
    role: Role | None = await ctx.pool.fetchval(
        "SELECT role FROM memberships WHERE user_id = $1 AND workspace_id = $2", user_id, workspace_id
    )
    return role


async def list_members(ctx: ServiceContext, workspace_id: str) -> list[Member]:
    """The workspace's members, owners first."""
    rows = await ctx.pool.fetch(
        "SELECT u.id, u.email, m.role, m.created_at FROM memberships m JOIN users u ON u.id = m.user_id"
        " WHERE m.workspace_id = $1 ORDER BY m.role DESC, lower(u.email)",
        workspace_id,
    )
    return [Member(user_id=r["id"], email=r["email"], role=r["role"], created_at=r["created_at"]) for r in rows]


async def remove_member(ctx: ServiceContext, workspace_id: str, user_id: str) -> None:
    """Remove a member; Forbidden when it would leave the workspace without an owner."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        owners = await conn.fetch(
            "SELECT user_id FROM memberships WHERE workspace_id = $1 AND role = 'owner' FOR UPDATE", workspace_id
        )
        if [r["user_id"] for r in owners] == [user_id]:
            raise Forbidden("a workspace keeps at least one owner")
        deleted = await conn.fetchval(
            "DELETE FROM memberships WHERE workspace_id = $1 AND user_id = $2 RETURNING user_id", workspace_id, user_id
        )
    if deleted is None:
        raise NotFound("member not found")


async def create_invitation(
    ctx: ServiceContext, workspace_id: str, email: str, role: str, created_by: str | None
) -> tuple[Invitation, str]:
    """A single-use invitation valid for 7 days; returns it and its token (shown once, in the link)."""
    email = _check_email(email)
    checked_role = _check_role(role)
    token = secrets.token_urlsafe(32)
    try:
        row = await ctx.pool.fetchrow(
            "INSERT INTO invitations (id, workspace_id, token_hash, email, role, created_by, expires_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, now() + $7::interval)"
            " RETURNING id, email, role, created_at, expires_at, accepted_at",
            new_id("inv"),
            workspace_id,
            _token_hash(token),
            email,
            checked_role,
            created_by,
            INVITATION_TTL,
        )
    except asyncpg.ForeignKeyViolationError:
        raise NotFound("workspace not found") from None
    return _invitation(row), token


def _invitation(r: asyncpg.Record) -> Invitation:
    return Invitation(
        id=r["id"],
        email=r["email"],
        role=r["role"],
        created_at=r["created_at"],
        expires_at=r["expires_at"],
        accepted_at=r["accepted_at"],
    )


async def list_invitations(ctx: ServiceContext, workspace_id: str) -> list[Invitation]:
    """The workspace's invitations not yet accepted, newest first (expired ones included)."""
    rows = await ctx.pool.fetch(
        "SELECT id, email, role, created_at, expires_at, accepted_at FROM invitations"
        " WHERE workspace_id = $1 AND accepted_at IS NULL ORDER BY id DESC",
        workspace_id,
    )
    return [_invitation(r) for r in rows]


async def revoke_invitation(ctx: ServiceContext, workspace_id: str, invitation_id: str) -> None:
    """Delete an invitation: its link stops working."""
    deleted = await ctx.pool.fetchval(
        "DELETE FROM invitations WHERE id = $1 AND workspace_id = $2 RETURNING id", invitation_id, workspace_id
    )
    if deleted is None:
        raise NotFound("invitation not found")


class PendingInvitation(msgspec.Struct, frozen=True, kw_only=True):
    """What the invite page shows before the invitee accepts."""

    email: str
    workspace_name: str
    role: Role
    has_account: bool


async def find_invitation(ctx: ServiceContext, token: str) -> PendingInvitation:
    """The invitation of a link's token; NotFound if unknown, used or expired."""
    row = await ctx.pool.fetchrow(
        "SELECT i.email, i.role, w.name, EXISTS (SELECT 1 FROM users u WHERE lower(u.email) = lower(i.email)) AS has"
        " FROM invitations i JOIN workspaces w ON w.id = i.workspace_id"
        " WHERE i.token_hash = $1 AND i.accepted_at IS NULL AND i.expires_at > now()",
        _token_hash(token[:100]),
    )
    if row is None:
        raise NotFound("this invitation link is not valid: it was used, revoked or has expired")
    return PendingInvitation(email=row["email"], workspace_name=row["name"], role=row["role"], has_account=row["has"])


async def accept_invitation(ctx: ServiceContext, token: str, password: str) -> User:
    """Use an invitation once: a new user sets ``password``, an existing one confirms theirs."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        inv = await conn.fetchrow(
            "SELECT id, workspace_id, email, role FROM invitations"
            " WHERE token_hash = $1 AND accepted_at IS NULL AND expires_at > now() FOR UPDATE",
            _token_hash(token[:100]),
        )
        if inv is None:
            raise NotFound("this invitation link is not valid: it was used, revoked or has expired")
        user = await conn.fetchrow(
            "SELECT id, email, password_hash FROM users WHERE lower(email) = lower($1)", inv["email"]
        )
        if user is None:
            _check_password(password)
            user_id = await conn.fetchval(
                "INSERT INTO users (id, email, password_hash) VALUES ($1, $2, $3) RETURNING id",
                new_id("user"),
                inv["email"],
                await _hash(password),
            )
        elif await _verify(user["password_hash"], password):
            user_id = user["id"]
        else:
            raise field_error("password", "the password of this account is not correct")
        await _add_membership(conn, user_id, inv["workspace_id"], inv["role"])
        await conn.execute("UPDATE invitations SET accepted_at = now() WHERE id = $1", inv["id"])
    return User(id=user_id, email=inv["email"])
