"""Folders: a workspace's named groups of links (a link is in at most one; names unique per workspace)."""

from __future__ import annotations

import asyncpg

from api.errors import AlreadyExists, NotFound
from api.ids import new_id
from api.schemas import Folder, FolderList, FolderWrite, PageQuery
from api.services.context import ServiceContext

_SELECT = (
    "SELECT f.id, f.name, f.created_at, f.updated_at,"
    " (SELECT count(*) FROM links l WHERE l.folder_id = f.id) AS links FROM folders f"
)


def _folder(row: asyncpg.Record) -> Folder:
    return Folder(
        id=row["id"], name=row["name"], links=row["links"], created_at=row["created_at"], updated_at=row["updated_at"]
    )


async def create_folder(ctx: ServiceContext, workspace_id: str, data: FolderWrite) -> Folder:
    """A new folder; AlreadyExists if the workspace has one with this name."""
    folder_id = new_id("fold")
    try:
        await ctx.pool.execute(
            "INSERT INTO folders (id, workspace_id, name) VALUES ($1, $2, $3)",
            folder_id,
            workspace_id,
            data.name.strip(),
        )
    except asyncpg.UniqueViolationError:
        raise AlreadyExists(f"a folder named {data.name!r} already exists") from None
    return await get_folder(ctx, workspace_id, folder_id)


async def get_folder(ctx: ServiceContext, workspace_id: str, folder_id: str) -> Folder:
    """One of the workspace's folders; NotFound otherwise."""
    row = await ctx.pool.fetchrow(_SELECT + " WHERE f.id = $1 AND f.workspace_id = $2", folder_id, workspace_id)
    if row is None:
        raise NotFound(f"folder {folder_id!r} not found")
    return _folder(row)


async def list_folders(ctx: ServiceContext, workspace_id: str, page: PageQuery) -> FolderList:
    """The workspace's folders by name."""
    total = await ctx.pool.fetchval("SELECT count(*) FROM folders WHERE workspace_id = $1", workspace_id)
    rows = await ctx.pool.fetch(
        _SELECT + " WHERE f.workspace_id = $1 ORDER BY f.name, f.id LIMIT $2 OFFSET $3",
        workspace_id,
        page.limit,
        page.page * page.limit,
    )
    return FolderList(data=[_folder(r) for r in rows], page=page.page, limit=page.limit, total=total)


async def rename_folder(ctx: ServiceContext, workspace_id: str, folder_id: str, data: FolderWrite) -> Folder:
    """Rename a folder; AlreadyExists if the name is taken."""
    try:
        done = await ctx.pool.fetchval(
            "UPDATE folders SET name = $3, updated_at = now() WHERE id = $1 AND workspace_id = $2 RETURNING id",
            folder_id,
            workspace_id,
            data.name.strip(),
        )
    except asyncpg.UniqueViolationError:
        raise AlreadyExists(f"a folder named {data.name!r} already exists") from None
    if done is None:
        raise NotFound(f"folder {folder_id!r} not found")
    return await get_folder(ctx, workspace_id, folder_id)


async def delete_folder(ctx: ServiceContext, workspace_id: str, folder_id: str) -> None:
    """Delete a folder; its links stay, outside any folder."""
    done = await ctx.pool.fetchval(
        "DELETE FROM folders WHERE id = $1 AND workspace_id = $2 RETURNING id", folder_id, workspace_id
    )
    if done is None:
        raise NotFound(f"folder {folder_id!r} not found")
