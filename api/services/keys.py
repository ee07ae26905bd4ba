"""API keys: created with scopes, shown once, stored as a sha256 hash, checked on every request.

Scopes are ``<resource>:read`` / ``<resource>:write``; a write scope includes the read scope
of the same resource. A key acting on keys (``by``) may create or revoke only keys whose
scopes it holds itself, so ``keys:write`` is never a way to a stronger key. A workspace holds
at most ``max_keys_per_workspace`` keys (or its plan's ``keys``, if lower).

A key is 256 random bits, so a fast hash is enough (no brute force is possible) and lets
every request be authenticated with one indexed lookup.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from datetime import timedelta

import asyncpg
import msgspec

from api.errors import ActionNotAllowed, NotFound, PlanLimitReached, Unauthorized, field_error
from api.ids import new_id
from api.schemas import Timestamp
from api.services.context import ServiceContext
from api.services.plans import Plan, get_plan, require_below

RESOURCES = ("links", "domains", "folders", "tags", "analytics", "keys", "workspace", "files", "webhooks")
ALL_SCOPES: tuple[str, ...] = tuple(f"{r}:{a}" for r in RESOURCES for a in ("read", "write"))
KEY_PREFIX = "h0p_"
# last_used_at is written at most this often per key, so a busy key costs no write per request
_LAST_USED_RESOLUTION = timedelta(seconds=60)


class ApiKey(msgspec.Struct, kw_only=True, rename="camel"):
    """An API key as listed (never the secret: only its last characters, ``hint``)."""

    id: str
    name: str
    scopes: list[str]
    hint: str
    created_at: Timestamp
    last_used_at: Timestamp | None


class CreatedApiKey(ApiKey, kw_only=True, rename="camel"):
    """Returned once, at creation: the only time ``key`` (the secret) is shown."""

    key: str


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """Who is calling: the key, its workspace and plan, and its scopes."""

    key_id: str
    workspace_id: str
    plan: Plan
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        """True if the key has ``scope`` (a write scope includes the matching read)."""
        if scope in self.scopes:
            return True
        resource, _, action = scope.partition(":")
        return action == "read" and f"{resource}:write" in self.scopes


def hash_key(secret: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _require_within(by: Principal | None, scopes: Sequence[str], doing: str) -> None:
    """ActionNotAllowed unless ``by`` (None: an operator, e.g. the CLI) holds every scope in ``scopes``."""
    if by is None:
        return
    missing = sorted(s for s in scopes if not by.allows(s))
    if missing:
        raise ActionNotAllowed(f"this API key cannot {doing} a key with scopes it does not have: {', '.join(missing)}")


def _check_scopes(scopes: Sequence[str]) -> list[str]:
    unknown = [s for s in scopes if s not in ALL_SCOPES]
    if unknown:
        raise field_error("scopes", f"unknown scopes {unknown}; known: {', '.join(ALL_SCOPES)}")
    return sorted(set(scopes))


def _key_from_row(r: asyncpg.Record) -> ApiKey:
    return ApiKey(
        id=r["id"],
        name=r["name"],
        scopes=list(r["scopes"]),
        hint=r["hint"],
        created_at=r["created_at"],
        last_used_at=r["last_used_at"],
    )


async def create_key(
    ctx: ServiceContext,
    workspace_id: str,
    name: str,
    scopes: Sequence[str] | None = None,
    by: Principal | None = None,
) -> tuple[ApiKey, str]:
    """Create a key (``scopes`` None: all ``by`` holds, or all); returns it and the secret, shown once.

    ActionNotAllowed if ``by`` lacks a requested scope; PlanLimitReached at the workspace's key cap.
    """
    if len(name) > 100:
        raise field_error("name", "a key name is at most 100 characters")
    if scopes is None:
        checked = [s for s in ALL_SCOPES if by is None or by.allows(s)]
    else:
        checked = _check_scopes(scopes)
    if not checked:
        raise field_error("scopes", "a key needs at least one scope")
    _require_within(by, checked, "create")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    async with ctx.pool.acquire() as conn, conn.transaction():
        plan_name = await conn.fetchval("SELECT plan FROM workspaces WHERE id = $1 FOR UPDATE", workspace_id)
        if plan_name is None:
            raise NotFound("workspace not found")
        plan = get_plan(ctx.settings, plan_name)
        # The row lock above serialises creations of this workspace: the count cannot be overtaken.
        used = await conn.fetchval("SELECT count(*) FROM api_keys WHERE workspace_id = $1", workspace_id)
        require_below(plan, "API keys", plan.keys, used)
        cap = ctx.settings.max_keys_per_workspace
        if used >= cap:
            raise PlanLimitReached(f"a workspace holds at most {cap} API keys; {used} exist: revoke one first")
        row = await conn.fetchrow(
            "INSERT INTO api_keys (id, workspace_id, name, key_hash, hint, scopes) VALUES ($1, $2, $3, $4, $5, $6)"
            " RETURNING id, name, scopes, hint, created_at, last_used_at",
            new_id("key"),
            workspace_id,
            name,
            hash_key(secret),
            secret[-4:],
            checked,
        )
    return _key_from_row(row), secret


class ApiKeyList(msgspec.Struct, kw_only=True, rename="camel"):
    data: list[ApiKey]
    page: int
    limit: int
    total: int


async def list_keys(ctx: ServiceContext, workspace_id: str) -> list[ApiKey]:
    """The workspace's keys, newest first."""
    return (await list_keys_page(ctx, workspace_id, 0, 1000)).data


async def list_keys_page(ctx: ServiceContext, workspace_id: str, page: int = 0, limit: int = 10) -> ApiKeyList:
    """One page of the workspace's keys, newest first (``GET /keys``)."""
    total = await ctx.pool.fetchval("SELECT count(*) FROM api_keys WHERE workspace_id = $1", workspace_id)
    rows = await ctx.pool.fetch(
        "SELECT id, name, scopes, hint, created_at, last_used_at FROM api_keys"
        " WHERE workspace_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3",
        workspace_id,
        limit,
        page * limit,
    )
    return ApiKeyList(data=[_key_from_row(r) for r in rows], page=page, limit=limit, total=total)


async def delete_key(ctx: ServiceContext, workspace_id: str, key_id: str, by: Principal | None = None) -> None:
    """Revoke a key: the next request made with it is 401. ActionNotAllowed if ``by`` lacks one of its scopes."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        scopes = await conn.fetchval(
            "SELECT scopes FROM api_keys WHERE id = $1 AND workspace_id = $2 FOR UPDATE", key_id, workspace_id
        )
        if scopes is None:
            raise NotFound("API key not found")
        _require_within(by, scopes, "revoke")
        await conn.execute("DELETE FROM api_keys WHERE id = $1", key_id)


async def authenticate(ctx: ServiceContext, secret: str | None) -> Principal:
    """The principal for the secret of an ``x-api-key`` header; Unauthorized if none matches."""
    if not secret or not secret.startswith(KEY_PREFIX) or len(secret) > 200:
        raise Unauthorized()
    row = await ctx.pool.fetchrow(
        "SELECT k.id, k.workspace_id, k.scopes, k.last_used_at, w.plan, now() AS now"
        " FROM api_keys k JOIN workspaces w ON w.id = k.workspace_id WHERE k.key_hash = $1",
        hash_key(secret),
    )
    if row is None:
        raise Unauthorized()
    if row["last_used_at"] is None or row["now"] - row["last_used_at"] > _LAST_USED_RESOLUTION:
        await ctx.pool.execute("UPDATE api_keys SET last_used_at = now() WHERE id = $1", row["id"])
    return Principal(
        key_id=row["id"],
        workspace_id=row["workspace_id"],
        plan=get_plan(ctx.settings, row["plan"]),
        scopes=frozenset(row["scopes"]),
    )
