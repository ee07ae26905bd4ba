"""Analytics and the edge's fallback reading a real streaming replica (``H0P_READ_DATABASE_URL``).

A primary of our own and its standby (``tests.pg_replica``: initdb, pg_basebackup -R, free
loopback ports). Replay on the standby is paused to make it lag: what a reader then sees tells
which server answered, and the API's /metrics must report the lag.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from api import db
from api.metrics import MetricsServer
from api.schemas import LinkCreate
from api.services import analytics, links
from api.services.analytics_query import parse_query
from api.services.context import close_context, open_context
from api.services.workspaces import get_or_create_workspace
from h0p_settings import Settings
from redirect.record import link_key
from redirect.resolve import REPLICA_FILL_TTL_S
from tests.pg_replica import PostgresPair
from tests.redirect.conftest import edge_settings, served, unique
from tests.redirect.test_resolution import eventually
from tests.services import free_port


@pytest.fixture(scope="module")
def pair() -> Iterator[PostgresPair]:
    servers = PostgresPair()
    try:
        servers.start()
    except (RuntimeError, OSError) as exc:
        servers.stop()
        pytest.skip(f"no streaming replica on this machine: {exc}")
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture
async def replicated(pair: PostgresPair, settings: Settings) -> AsyncIterator[Settings]:
    """Settings writing to the primary and reading from the replica, schema migrated (and replicated)."""
    name = unique("h0p_replica_")
    primary, replica = pair.url(pair.primary_port, name), pair.url(pair.replica_port, name)
    await db.migrate(primary)
    await eventually(lambda: _answers(replica), within=30)
    yield dataclasses.replace(settings, database_url=primary, read_database_url=replica)
    await _set_replay(replica, paused=False)


async def _answers(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=2)
    except (OSError, asyncpg.PostgresError):
        return False
    try:
        return bool(await conn.fetchval("SELECT to_regclass('clicks') IS NOT NULL"))
    finally:
        await conn.close()


async def _set_replay(url: str, *, paused: bool) -> None:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        await conn.execute("SELECT pg_wal_replay_pause()" if paused else "SELECT pg_wal_replay_resume()")
    finally:
        await conn.close()


async def _replayed(url: str, link_id: str) -> bool:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        return bool(await conn.fetchval("SELECT 1 FROM links WHERE id = $1", link_id))
    finally:
        await conn.close()


async def _click(pool: asyncpg.Pool, workspace_id: str) -> None:
    await pool.execute(
        "INSERT INTO clicks (event_id, ts, workspace_id, domain, slug, visitor)"
        " VALUES (gen_random_uuid(), now(), $1, 'localhost', 'x', 1)",
        workspace_id,
    )


async def _scrape(port: int) -> dict[str, float]:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    return {
        name: float(value)
        for line in text.splitlines()
        if line.startswith("h0p_") and (parts := line.split()) and (name := parts[0]) and (value := parts[-1])
    }


async def test_analytics_read_the_replica_writes_go_to_the_primary_and_metrics_report_the_lag(
    replicated: Settings,
) -> None:
    ctx = await open_context(replicated, pool_size=2)
    metrics = MetricsServer(ctx.read_pool, "127.0.0.1", free_port())
    try:
        # A write through the service layer: it would fail on the read-only standby.
        workspace = await get_or_create_workspace(ctx, unique("ws-replica-"))
        await _click(ctx.pool, workspace.id)

        async def events_seen(n: int) -> bool:
            return (await analytics.list_events(ctx, workspace.id, parse_query({}), 10))["total"] == n

        await eventually(lambda: events_seen(1), within=20)  # replayed: the replica has it
        caught_up = await _scrape(metrics.port)
        assert caught_up["h0p_read_replica_up"] == 1 and caught_up["h0p_read_replica_standby"] == 1
        assert caught_up["h0p_read_replica_streaming"] == 1

        await _set_replay(replicated.read_url, paused=True)
        await _click(ctx.pool, workspace.id)
        assert await ctx.pool.fetchval("SELECT count(*) FROM clicks WHERE workspace_id = $1", workspace.id) == 2

        async def lagging() -> bool:
            state = await _scrape(metrics.port)
            return state["h0p_read_replica_replay_pending_bytes"] > 0 and state["h0p_read_replica_lag_seconds"] > 0

        await eventually(lagging, within=20)  # received, not replayed: the lag shows
        assert await events_seen(1)  # analytics answer from the lagging replica, not the primary (2)

        await _set_replay(replicated.read_url, paused=False)
        await eventually(lambda: events_seen(2), within=20)

        async def caught_up_again() -> bool:
            state = await _scrape(metrics.port)
            return state["h0p_read_replica_lag_seconds"] == 0 and state["h0p_read_replica_replay_pending_bytes"] == 0

        await eventually(caught_up_again, within=20)
    finally:
        metrics.close()
        await close_context(ctx)


async def test_metrics_say_when_the_read_replica_does_not_answer(settings: Settings) -> None:
    gone = dataclasses.replace(settings, read_database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/h0p")
    ctx = await open_context(gone, pool_size=2)  # the API starts without its replica
    metrics = MetricsServer(ctx.read_pool, "127.0.0.1", free_port())
    try:
        state = await _scrape(metrics.port)
    finally:
        metrics.close()
        await close_context(ctx)
    assert state["h0p_read_replica_configured"] == 1 and state["h0p_read_replica_up"] == 0
    assert "h0p_read_replica_lag_seconds" not in state


async def test_the_edge_falls_back_to_the_replica_and_refills_redis_briefly(
    replicated: Settings, tmp_path: Path, redis: aioredis.Redis
) -> None:
    ctx = await open_context(replicated, pool_size=2)
    try:
        workspace = await get_or_create_workspace(ctx, unique("ws-edge-replica-"))
        seen = await links.create_link(ctx, workspace.id, LinkCreate(url="https://example.com/seen", slug=unique("rs")))
        await eventually(lambda: _replayed(replicated.read_url, seen.id), within=20)
        await _set_replay(replicated.read_url, paused=True)
        unseen = await links.create_link(
            ctx, workspace.id, LinkCreate(url="https://example.com/new", slug=unique("rn"))
        )
    finally:
        await close_context(ctx)
    for link in (seen, unseen):  # in Postgres only: the edge must ask Postgres
        await redis.delete(link_key(replicated.default_domain, link.slug))

    local = edge_settings(replicated, tmp_path, negative_ttl_s=0.5, cache_ttl_s=0.5)
    async with served(local) as (_, base), httpx.AsyncClient(base_url=base) as client:
        found = await client.get(f"/{seen.slug}")
        missing = await client.get(f"/{unseen.slug}")
        assert found.status_code == 302 and found.headers["location"] == "https://example.com/seen"
        assert missing.status_code == 404  # the primary has it; the paused replica does not yet

        await _set_replay(replicated.read_url, paused=False)

        async def redirects() -> bool:
            return (await client.get(f"/{unseen.slug}")).status_code == 302

        await eventually(redirects, within=20)
    # Refilled from a replica: kept briefly, in case the replica was behind a change already pushed.
    assert 0 < await redis.ttl(link_key(replicated.default_domain, seen.slug)) <= REPLICA_FILL_TTL_S
