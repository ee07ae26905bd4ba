"""Cache coherence: committed changes reach Redis, and a Redis outage is bridged by the outbox."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import AsyncIterator

import msgspec
import pytest
import redis.asyncio as aioredis

from api import cache_sync, db
from api.schemas import LinkCreate, LinkUpdate
from api.services.context import ServiceContext
from api.services.links import create_link, delete_link, update_link
from api.services.workspaces import Workspace, get_or_create_workspace
from redirect.record import NEGATIVE, decode_link, link_key
from tests.api.conftest import raw
from tests.redis_server import RedisServer


@pytest.fixture
async def private_redis(ctx: ServiceContext) -> AsyncIterator[tuple[RedisServer, ServiceContext, Workspace]]:
    """A context whose Redis is our own server, which the test may stop and start, on a database of
    its own: the API processes other tests run on the session's database drain any cache outbox
    they see into the session's Redis, which would take these rows from this test's."""
    server = RedisServer().start()
    client = aioredis.Redis.from_url(server.url, socket_timeout=1.0, socket_connect_timeout=1.0)
    database_url = f"{ctx.settings.database_url}_cache_{secrets.token_hex(4)}"
    await db.migrate(database_url)
    pool = await db.create_pool(database_url, max_size=4)
    private = ServiceContext(
        dataclasses.replace(ctx.settings, redis_url=server.url, database_url=database_url), pool, client
    )
    try:
        yield server, private, await get_or_create_workspace(private, "cache-sync")
    finally:
        await pool.close()
        await db.drop_database(database_url)
        await client.aclose()
        server.stop()


async def outbox_rows(ctx: ServiceContext, slug: str) -> int:
    count: int = await ctx.pool.fetchval("SELECT count(*) FROM cache_outbox WHERE slug = $1", slug)
    return count


@pytest.mark.chaos
async def test_a_write_during_a_redis_outage_lands_when_redis_is_back(
    private_redis: tuple[RedisServer, ServiceContext, Workspace],
) -> None:
    server, ctx, workspace = private_redis
    server.stop()
    link = await create_link(
        ctx, workspace.id, msgspec.convert({"url": "https://example.com/a", "slug": "outage-1"}, LinkCreate)
    )
    await update_link(ctx, workspace.id, link.id, LinkUpdate(url="https://example.com/b"))
    assert await outbox_rows(ctx, "outage-1") == 2  # committed in Postgres, waiting for Redis

    server.start()
    stop = asyncio.Event()
    loop_task = asyncio.create_task(cache_sync.run_outbox_loop(ctx, stop, interval_s=0.2))
    try:
        for _ in range(100):  # up to 10 s
            if not await outbox_rows(ctx, "outage-1"):
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await loop_task
    record = decode_link(await raw(ctx.redis, link_key(link.domain, "outage-1")))
    assert record is not None and record.url == "https://example.com/b"  # the latest state, not the first


@pytest.mark.chaos
async def test_a_delete_during_a_redis_outage_replaces_the_stale_record(
    private_redis: tuple[RedisServer, ServiceContext, Workspace],
) -> None:
    server, ctx, workspace = private_redis
    link = await create_link(
        ctx, workspace.id, msgspec.convert({"url": "https://example.com/", "slug": "outage-2"}, LinkCreate)
    )
    assert decode_link(await raw(ctx.redis, link_key(link.domain, "outage-2"))) is not None
    server.stop()
    await delete_link(ctx, workspace.id, link.id)
    server.start()  # a fresh, empty server: the outbox must still publish the invalidation
    pubsub = ctx.redis.pubsub()
    await pubsub.subscribe(ctx.settings.invalidation_channel)
    await pubsub.get_message(timeout=1.0)
    assert await cache_sync.push_pending(ctx, older_than_s=0.0) >= 1
    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2.0)
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    assert message is not None and message["data"] == link_key(link.domain, "outage-2").encode()
    assert await ctx.redis.get(link_key(link.domain, "outage-2")) == NEGATIVE
    assert await outbox_rows(ctx, "outage-2") == 0


async def test_outbox_loop_drains_on_stop(ctx: ServiceContext, workspace: Workspace) -> None:
    async with ctx.pool.acquire() as conn:
        await cache_sync.enqueue_link(conn, ctx.settings.default_domain, "drain-on-stop")
    stop = asyncio.Event()
    stop.set()
    await asyncio.wait_for(cache_sync.run_outbox_loop(ctx, stop, interval_s=5.0), timeout=5.0)
    assert await outbox_rows(ctx, "drain-on-stop") == 0
    assert await ctx.redis.get(link_key(ctx.settings.default_domain, "drain-on-stop")) == NEGATIVE


async def test_concurrent_updates_leave_the_last_committed_state_in_redis(
    ctx: ServiceContext, workspace: Workspace
) -> None:
    link = await create_link(ctx, workspace.id, msgspec.convert({"url": "https://example.com/0"}, LinkCreate))
    await asyncio.gather(
        *(update_link(ctx, workspace.id, link.id, LinkUpdate(url=f"https://example.com/{i}")) for i in range(1, 9))
    )
    final = await ctx.pool.fetchval("SELECT url FROM links WHERE id = $1", link.id)
    record = decode_link(await raw(ctx.redis, link_key(link.domain, link.slug)))
    assert record is not None and record.url == final
