"""API keys: created with scopes, shown once, stored as a sha256 hash, checked on every request.

Scopes are ``<resource>:read`` / ``<resource>:write``; a write scope includes the read scope
of the same resource. A key is 256 random bits, so a fast hash is enough (no brute force is
possible) and lets every request be authenticated with one indexed lookup.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from datetime import timedelta

import asyncpg
import msgspec

from api.errors import NotFound, Unauthorized, field_error
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
    ctx: ServiceContext, workspace_id: str, name: str, scopes: Sequence[str] | None = None
) -> tuple[ApiKey, str]:
    """Create a key (all scopes when ``scopes`` is None); returns it and the secret, shown once."""
    if len(name) > 100:
        raise field_error("name", "a key name is at most 100 characters")
    checked = list(ALL_SCOPES) if scopes is None else _check_scopes(scopes)
    if not checked:
        raise field_error("scopes", "a key needs at least one scope")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    async with ctx.pool.acquire() as conn, conn.transaction():
        plan_name = await conn.fetchval("SELECT plan FROM workspaces WHERE id = $1 FOR UPDATE", workspace_id)
        if plan_name is None:
            raise NotFound("workspace not found")
        plan = get_plan(ctx.settings, plan_name)
        if plan.keys is not None:
            used = await conn.fetchval("SELECT count(*) FROM api_keys WHERE workspace_id = $1", workspace_id)
            require_below(plan, "API keys", plan.keys, used)
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


async def delete_key(ctx: ServiceContext, workspace_id: str, key_id: str) -> None:
    """Revoke a key: the next request made with it is 401."""
    deleted = await ctx.pool.fetchval(
        "DELETE FROM api_keys WHERE id = $1 AND workspace_id = $2 RETURNING id", key_id, workspace_id
    )
    if deleted is None:
        raise NotFound("API key not found")


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
