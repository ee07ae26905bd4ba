"""Workspaces: the tenant every key, link, domain, folder and tag belongs to."""

from __future__ import annotations

import asyncpg
import msgspec

from api.errors import AlreadyExists, NotFound, field_error
from api.ids import new_id
from api.schemas import Timestamp
from api.services.context import ServiceContext
from api.services.plans import DEFAULT_PLAN, Plan, all_plans, get_plan


class Workspace(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    id: str
    name: str
    plan: str


class Usage(msgspec.Struct, kw_only=True, rename="camel"):
    links: int
    links_this_month: int
    domains: int
    keys: int
    folders: int
    tags: int


class WorkspaceInfo(msgspec.Struct, kw_only=True, rename="camel"):
    """``GET /workspace``: the workspace, its plan's limits and features, and what it uses."""

    id: str
    name: str
    plan: Plan
    usage: Usage
    created_at: Timestamp


async def get_or_create_workspace(ctx: ServiceContext, name: str) -> Workspace:
    """The workspace called ``name``, created on the default plan if it does not exist."""
    workspace, _ = await ensure_workspace(ctx, name)
    return workspace


async def ensure_workspace(ctx: ServiceContext, name: str) -> tuple[Workspace, bool]:
    """Like ``get_or_create_workspace``, and whether this call created it (exactly one caller does)."""
    name = name.strip()
    if not name or len(name) > 100:
        raise field_error("name", "a workspace name is 1 to 100 characters")
    row = await ctx.pool.fetchrow(
        "INSERT INTO workspaces (id, name, plan) VALUES ($1, $2, $3)"
        " ON CONFLICT (name) DO NOTHING RETURNING id, name, plan",
        new_id("ws"),
        name,
        DEFAULT_PLAN,
    )
    created = row is not None
    if row is None:  # it existed (or a concurrent caller just created it)
        row = await ctx.pool.fetchrow("SELECT id, name, plan FROM workspaces WHERE name = $1", name)
    assert row is not None
    return Workspace(id=row["id"], name=row["name"], plan=row["plan"]), created


async def get_workspace_by_name(ctx: ServiceContext, name: str) -> Workspace:
    """The workspace called ``name``; NotFound otherwise (never creates one)."""
    row = await ctx.pool.fetchrow("SELECT id, name, plan FROM workspaces WHERE name = $1", name.strip())
    if row is None:
        raise NotFound(f"no workspace named {name.strip()!r}")
    return Workspace(id=row["id"], name=row["name"], plan=row["plan"])


async def get_workspace(ctx: ServiceContext, workspace_id: str) -> Workspace:
    """The workspace with this id; NotFound otherwise."""
    row = await ctx.pool.fetchrow("SELECT id, name, plan FROM workspaces WHERE id = $1", workspace_id)
    if row is None:
        raise NotFound("workspace not found")
    return Workspace(id=row["id"], name=row["name"], plan=row["plan"])


async def set_plan(ctx: ServiceContext, workspace_id: str, plan: str) -> Workspace:
    """Move a workspace to another configured plan (operators, CLI and tests)."""
    if plan not in all_plans(ctx.settings):
        raise field_error("plan", f"unknown plan {plan!r}")
    row = await ctx.pool.fetchrow(
        "UPDATE workspaces SET plan = $2 WHERE id = $1 RETURNING id, name, plan", workspace_id, plan
    )
    if row is None:
        raise NotFound("workspace not found")
    return Workspace(id=row["id"], name=row["name"], plan=row["plan"])


async def workspace_plan(ctx: ServiceContext, workspace_id: str) -> Plan:
    """The plan the workspace is on."""
    plan = await ctx.pool.fetchval("SELECT plan FROM workspaces WHERE id = $1", workspace_id)
    if plan is None:
        raise NotFound("workspace not found")
    return get_plan(ctx.settings, plan)


async def workspace_info(ctx: ServiceContext, workspace_id: str) -> WorkspaceInfo:
    """The workspace with its plan and current usage."""
    row = await ctx.pool.fetchrow(
        "SELECT w.id, w.name, w.plan, w.created_at,"
        " w.link_count AS links,"
        " (SELECT count(*) FROM links WHERE workspace_id = w.id"
        "   AND created_at >= date_trunc('month', now())) AS links_this_month,"
        " (SELECT count(*) FROM domains WHERE workspace_id = w.id) AS domains,"
        " (SELECT count(*) FROM api_keys WHERE workspace_id = w.id) AS keys,"
        " (SELECT count(*) FROM folders WHERE workspace_id = w.id) AS folders,"
        " (SELECT count(*) FROM tags WHERE workspace_id = w.id) AS tags"
        " FROM workspaces w WHERE w.id = $1",
        workspace_id,
    )
    if row is None:
        raise NotFound("workspace not found")
    usage = Usage(
        links=row["links"],
        links_this_month=row["links_this_month"],
        domains=row["domains"],
        keys=row["keys"],
        folders=row["folders"],
        tags=row["tags"],
    )
    plan = get_plan(ctx.settings, row["plan"])
    return WorkspaceInfo(id=row["id"], name=row["name"], plan=plan, usage=usage, created_at=row["created_at"])


async def rename_workspace(ctx: ServiceContext, workspace_id: str, name: str) -> Workspace:
    """Give the workspace another name; AlreadyExists if another workspace has it."""
    name = name.strip()
    if not name or len(name) > 100 or "\x00" in name:
        raise field_error("name", "a workspace name is 1 to 100 characters")
    try:
        row = await ctx.pool.fetchrow(
            "UPDATE workspaces SET name = $2 WHERE id = $1 RETURNING id, name, plan", workspace_id, name
        )
    except asyncpg.UniqueViolationError:
        raise AlreadyExists(f"a workspace is already called {name!r}") from None
    if row is None:
        raise NotFound("workspace not found")
    return Workspace(id=row["id"], name=row["name"], plan=row["plan"])
