"""Tags: a workspace's labels for links (any number per link; names unique per workspace)."""

from __future__ import annotations

import asyncpg
import msgspec

from api.errors import AlreadyExists, NotFound
from api.ids import new_id
from api.schemas import PageQuery, Tag, TagCreate, TagList, TagUpdate
from api.services.context import ServiceContext

_SELECT = (
    "SELECT t.id, t.name, t.color, t.created_at, t.updated_at,"
    " (SELECT count(*) FROM link_tags lt WHERE lt.tag_id = t.id) AS links FROM tags t"
)


def _tag(row: asyncpg.Record) -> Tag:
    return Tag(
        id=row["id"],
        name=row["name"],
        color=row["color"],
        links=row["links"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def create_tag(ctx: ServiceContext, workspace_id: str, data: TagCreate) -> Tag:
    """A new tag; AlreadyExists if the workspace has one with this name."""
    tag_id = new_id("tag")
    try:
        await ctx.pool.execute(
            "INSERT INTO tags (id, workspace_id, name, color) VALUES ($1, $2, $3, $4)",
            tag_id,
            workspace_id,
            data.name.strip(),
            data.color,
        )
    except asyncpg.UniqueViolationError:
        raise AlreadyExists(f"a tag named {data.name!r} already exists") from None
    return await get_tag(ctx, workspace_id, tag_id)


async def get_tag(ctx: ServiceContext, workspace_id: str, tag_id: str) -> Tag:
    """One of the workspace's tags; NotFound otherwise."""
    row = await ctx.pool.fetchrow(_SELECT + " WHERE t.id = $1 AND t.workspace_id = $2", tag_id, workspace_id)
    if row is None:
        raise NotFound(f"tag {tag_id!r} not found")
    return _tag(row)


async def list_tags(ctx: ServiceContext, workspace_id: str, page: PageQuery) -> TagList:
    """The workspace's tags by name."""
    total = await ctx.pool.fetchval("SELECT count(*) FROM tags WHERE workspace_id = $1", workspace_id)
    rows = await ctx.pool.fetch(
        _SELECT + " WHERE t.workspace_id = $1 ORDER BY t.name, t.id LIMIT $2 OFFSET $3",
        workspace_id,
        page.limit,
        page.page * page.limit,
    )
    return TagList(data=[_tag(r) for r in rows], page=page.page, limit=page.limit, total=total)


async def update_tag(ctx: ServiceContext, workspace_id: str, tag_id: str, data: TagUpdate) -> Tag:
    """Rename or recolour a tag; AlreadyExists if the new name is taken."""
    name = data.name.strip() if data.name is not msgspec.UNSET else None
    color = data.color if data.color is not msgspec.UNSET else None
    try:
        done = await ctx.pool.fetchval(
            "UPDATE tags SET name = coalesce($3, name), color = coalesce($4, color), updated_at = now()"
            " WHERE id = $1 AND workspace_id = $2 RETURNING id",
            tag_id,
            workspace_id,
            name,
            color,
        )
    except asyncpg.UniqueViolationError:
        raise AlreadyExists(f"a tag named {name!r} already exists") from None
    if done is None:
        raise NotFound(f"tag {tag_id!r} not found")
    return await get_tag(ctx, workspace_id, tag_id)


async def delete_tag(ctx: ServiceContext, workspace_id: str, tag_id: str) -> None:
    """Delete a tag; links keep existing, without it."""
    done = await ctx.pool.fetchval(
        "DELETE FROM tags WHERE id = $1 AND workspace_id = $2 RETURNING id", tag_id, workspace_id
    )
    if done is None:
        raise NotFound(f"tag {tag_id!r} not found")
