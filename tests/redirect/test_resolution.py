"""Lookups under change and failure: invalidation of a running edge, Redis and Postgres outages."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
import redis.asyncio as aioredis

from api.schemas import LinkCreate, LinkUpdate
from api.services.context import ServiceContext
from api.services.links import create_link, delete_link, update_link
from api.services.workspaces import get_or_create_workspace
from h0p_settings import Settings
from tests.redirect.conftest import edge_client, edge_settings, served, unique, write_link
from tests.services import free_port, wait_for_port


async def eventually(check: Callable[[], Awaitable[bool]], within: float) -> float:
    """Seconds until ``check`` held; fails after ``within``."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > within:
            raise AssertionError(f"not true within {within}s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_running_edge_serves_updates_deletions_and_new_slugs_within_a_second(
    settings: Settings, tmp_path: Path, pool: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    ctx = ServiceContext(settings=settings, pool=pool, redis=redis)
    workspace = await get_or_create_workspace(ctx, unique("edge-ws-"))
    slug, fresh = unique("inv"), unique("new")
    async with served(edge_settings(settings, tmp_path)) as (app, base), httpx.AsyncClient(base_url=base) as client:
        await eventually(lambda: asyncio.sleep(0, app.subscriber.connected.is_set()), 5)
        link = await create_link(
            ctx, workspace.id, msgspec.convert({"url": "https://example.com/v1", "slug": slug}, LinkCreate)
        )
        assert (await client.get(f"/{slug}")).headers["location"] == "https://example.com/v1"  # now in the LRU

        await update_link(ctx, workspace.id, link.id, msgspec.convert({"url": "https://example.com/v2"}, LinkUpdate))

        async def updated() -> bool:
            location: str | None = (await client.get(f"/{slug}")).headers.get("location")
            return location == "https://example.com/v2"

        await eventually(updated, within=1.0)

        await delete_link(ctx, workspace.id, link.id)

        async def gone() -> bool:
            return (await client.get(f"/{slug}")).status_code == 404

        await eventually(gone, within=1.0)

        assert (await client.get(f"/{fresh}")).status_code == 404  # now a negative entry, in Redis and the LRU
        await create_link(
            ctx, workspace.id, msgspec.convert({"url": "https://example.com/new", "slug": fresh}, LinkCreate)
        )

        async def created() -> bool:
            return (await client.get(f"/{fresh}")).status_code == 302

        await eventually(created, within=1.0)


@asynccontextmanager
async def own_redis() -> AsyncIterator[tuple[int, Callable[[], None], Callable[[], None]]]:
    """A redis-server of this test only (stopping the shared one would break other tests)."""
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        procs.append(
            subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL,
            )
        )
        wait_for_port(port)

    def stop() -> None:
        proc = procs[-1]
        proc.terminate()
        proc.wait(5)

    start()
    try:
        yield port, stop, start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(5)


@asynccontextmanager
async def own_redis_with_link(
    settings: Settings, tmp_path: Path, pool: asyncpg.Pool, workspace_id: str, url: str, **changes: Any
) -> AsyncIterator[tuple[Settings, str, Callable[[], None], Callable[[], None]]]:
    """``own_redis`` with an edge's settings pointing at it and one link in it (and in Postgres).

    Yields (settings, slug, stop_redis, start_redis); ``changes`` go into the settings.
    """
    async with own_redis() as (port, stop_redis, start_redis):
        local = edge_settings(settings, tmp_path, redis_url=f"redis://127.0.0.1:{port}/0", **changes)
        slug = unique("ro")
        async with aioredis.Redis.from_url(local.redis_url, socket_timeout=2) as r:
            await write_link(pool, r, workspace_id, domain=local.default_domain, slug=slug, url=url)
        yield local, slug, stop_redis, start_redis


@pytest.mark.chaos
async def test_redis_outage_falls_back_to_postgres_and_recovers(
    settings: Settings, tmp_path: Path, pool: asyncpg.Pool, workspace_id: str
) -> None:
    link = own_redis_with_link(settings, tmp_path, pool, workspace_id, "https://example.com/r", cache_size=0)
    async with link as (s, slug, stop_redis, start_redis):
        async with edge_client(s) as (app, client):
            assert (await client.get(f"/{slug}")).headers["location"] == "https://example.com/r"
            assert app.metrics.redis_hit._value.get() >= 1
            stop_redis()
            for _ in range(5):
                r1 = await client.get(f"/{slug}")
                assert r1.status_code == 302 and r1.headers["location"] == "https://example.com/r"
            assert (await client.get("/never-existed-slug")).status_code == 404
            ready = await client.get("/readyz")  # Postgres answers: still ready, and says why degraded
            assert ready.status_code == 200 and "redis unreachable" in ready.text
            start_redis()  # empty: the edge refills it from Postgres

            async def redis_used_again() -> bool:
                before = app.metrics.redis_hit._value.get()
                assert (await client.get(f"/{slug}")).headers["location"] == "https://example.com/r"
                return float(app.metrics.redis_hit._value.get()) > float(before)

            await eventually(redis_used_again, within=10)
            await eventually(lambda: asyncio.sleep(0, app.subscriber.connected.is_set()), 10)


@pytest.mark.chaos
async def test_with_redis_and_postgres_down_cached_links_resolve_and_others_answer_503(
    settings: Settings, tmp_path: Path, pool: asyncpg.Pool, workspace_id: str
) -> None:
    down = f"postgresql://postgres@127.0.0.1:{free_port()}/h0p"  # nothing listens: Postgres down
    link = own_redis_with_link(settings, tmp_path, pool, workspace_id, "https://example.com/c", database_url=down)
    async with link as (s, slug, stop_redis, _start):
        async with edge_client(s) as (app, client):
            # (the subscriber clears the LRU when it connects: let that happen first)
            await eventually(lambda: asyncio.sleep(0, app.subscriber.connected.is_set()), 5)
            assert (await client.get(f"/{slug}")).status_code == 302  # from Redis, now in the LRU
            assert (await client.get("/not-in-redis")).status_code == 503  # Redis up, Postgres down
            stop_redis()
            assert (await client.get(f"/{slug}")).headers["location"] == "https://example.com/c"
            unavailable = await client.get("/not-cached-anywhere")
            assert unavailable.status_code == 503 and unavailable.headers["retry-after"] == "5"


async def test_stop_returns_even_when_a_background_task_ignores_its_cancellation(
    settings: Settings, tmp_path: Path
) -> None:
    """Shutdown must not hang on a library that swallows a cancellation (it happened with redis-py)."""
    from redirect.app import STOP_TIMEOUT_S, create_app

    app = create_app(edge_settings(settings, tmp_path))
    await app.start()
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                pass  # what a library that swallows the cancellation does

    task = asyncio.create_task(stubborn())
    app.tasks.insert(0, task)  # the sender stays last: stop() drains it first
    started = time.monotonic()
    await asyncio.wait_for(app.stop(), STOP_TIMEOUT_S * 3)
    assert time.monotonic() - started < STOP_TIMEOUT_S * 2
    release.set()
    task.cancel()
    await task


@pytest.mark.chaos
async def test_readyz_is_503_only_when_neither_redis_nor_postgres_can_look_a_link_up(
    settings: Settings, tmp_path: Path, pool: asyncpg.Pool, workspace_id: str
) -> None:
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/h0p"  # nothing listens: Postgres is gone too
    link = own_redis_with_link(settings, tmp_path, pool, workspace_id, "https://example.com/r", database_url=nowhere)
    async with link as (s, slug, stop_redis, start_redis), edge_client(s) as (_, client):
        assert (await client.get("/readyz")).status_code == 200
        stop_redis()
        gone = await client.get("/readyz")
        assert gone.status_code == 503 and "no link can be looked up" in gone.text
        start_redis()
        assert (await client.get("/readyz")).status_code == 200
