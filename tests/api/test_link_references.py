"""A folder or tag deleted while a link is being written to it: a 400 naming the field, never a 500."""

from __future__ import annotations

import asyncio

import asyncpg
import msgspec
import pytest

from api.errors import ValidationFailed
from api.schemas import FolderWrite, LinkCreate, LinkUpdate, TagCreate
from api.services.context import ServiceContext
from api.services.folders import create_folder
from api.services.links import create_link, update_link
from api.services.tags import create_tag
from api.services.workspaces import Workspace


async def _until_waiting_for_a_lock(pool: asyncpg.Pool, task: asyncio.Task[object]) -> None:
    # the write must reach the row the uncommitted DELETE holds before that DELETE commits
    for _ in range(500):
        if task.done():
            return
        waiting = await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the link write never waited for the deleting transaction")


async def _write_while_deleting(ctx: ServiceContext, table: str, row_id: str, write: object) -> ValidationFailed:
    deleting = await ctx.pool.acquire()
    try:
        tx = deleting.transaction()
        await tx.start()
        await deleting.execute(f"DELETE FROM {table} WHERE id = $1", row_id)
        task = asyncio.ensure_future(write)  # type: ignore[call-overload]
        await _until_waiting_for_a_lock(ctx.pool, task)
        await tx.commit()
        with pytest.raises(ValidationFailed) as caught:
            await task
    finally:
        await ctx.pool.release(deleting)
    return caught.value


async def test_moving_a_link_to_a_folder_deleted_meanwhile_is_400_on_folder_id(
    ctx: ServiceContext, workspace: Workspace
) -> None:
    folder = await create_folder(ctx, workspace.id, FolderWrite(name="doomed"))
    link = await create_link(ctx, workspace.id, LinkCreate(url="https://example.com/"))
    update = msgspec.convert({"folderId": folder.id}, LinkUpdate)
    refused = await _write_while_deleting(ctx, "folders", folder.id, update_link(ctx, workspace.id, link.id, update))
    assert [d["path"] for d in refused.details] == ["folderId"]


async def test_creating_a_link_with_a_tag_deleted_meanwhile_is_400_on_tag_ids(
    ctx: ServiceContext, workspace: Workspace
) -> None:
    tag = await create_tag(ctx, workspace.id, TagCreate(name="doomed"))
    create = msgspec.convert({"url": "https://example.com/", "tagIds": [tag.id]}, LinkCreate)
    refused = await _write_while_deleting(ctx, "tags", tag.id, create_link(ctx, workspace.id, create))
    assert [d["path"] for d in refused.details] == ["tagIds[0]"]
