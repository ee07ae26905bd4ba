"""An edge reading from a real Redis replica (``redis-server --replicaof``) on loopback.

Reads (record MGETs, the invalidation channel) go to the replica; writes (the refill of a
missed record, password attempt counters) go to the primary, since a replica refuses them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import msgspec
import pytest
import redis.asyncio as aioredis
from argon2 import PasswordHasher

from h0p_settings import Settings
from redirect.record import encode, link_key
from redirect.resolve import FILL_TTL_S
from tests.redirect.conftest import LinkMaker, edge_settings, served, unique
from tests.redirect.test_resolution import eventually
from tests.redis_server import RedisServer
from tests.services import free_port

HASH = PasswordHasher().hash("open sesame")


@pytest.fixture
async def replica(redis_server: RedisServer, redis: aioredis.Redis) -> AsyncIterator[aioredis.Redis]:
    """A replica of the session's Redis, caught up with it."""
    server = RedisServer(replica_of=redis_server).start()
    client = aioredis.Redis.from_url(server.url)
    try:
        marker = unique("h0p:test:sync:")
        await redis.set(marker, "1", ex=60)
        await eventually(lambda: _exists(client, marker), within=20)
        yield client
    finally:
        await client.aclose()
        server.stop()


async def _exists(client: aioredis.Redis, key: str) -> bool:
    return bool(await client.exists(key))


async def _calls(client: aioredis.Redis, command: str) -> int:
    stats = await client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def _replica_settings(settings: Settings, tmp_path: Path, replica: aioredis.Redis) -> Settings:
    kwargs = replica.connection_pool.connection_kwargs
    url = f"redis://{kwargs['host']}:{kwargs['port']}/0"
    return edge_settings(settings, tmp_path, edge_redis_url=url)


async def test_edge_reads_records_from_its_replica_and_writes_refills_to_the_primary(
    settings: Settings, tmp_path: Path, make_link: LinkMaker, redis: aioredis.Redis, replica: aioredis.Redis
) -> None:
    in_redis, only_postgres = unique("rr"), unique("rp")
    await make_link("https://example.com/from-redis", slug=in_redis)
    record = await make_link("https://example.com/from-postgres", slug=only_postgres)
    key = link_key(settings.default_domain, only_postgres)
    await redis.delete(key)  # in Postgres only: the edge must refill Redis
    await eventually(lambda: _not_exists(replica, key), within=10)
    await eventually(lambda: _exists(replica, link_key(settings.default_domain, in_redis)), within=10)
    replica_mgets, primary_mgets = await _calls(replica, "mget"), await _calls(redis, "mget")

    async with served(_replica_settings(settings, tmp_path, replica)) as (_, base):
        async with httpx.AsyncClient(base_url=base) as client:
            first = await client.get(f"/{in_redis}")
            second = await client.get(f"/{only_postgres}")

    assert first.status_code == 302 and first.headers["location"] == "https://example.com/from-redis"
    assert second.status_code == 302 and second.headers["location"] == "https://example.com/from-postgres"
    assert await _calls(replica, "mget") >= replica_mgets + 2  # both lookups asked the replica
    assert await _calls(redis, "mget") == primary_mgets  # and never the primary
    # The refill (a write, refused by a replica) landed on the primary, and replicated from there.
    assert await redis.get(key) == encode(record)
    assert 0 < await redis.ttl(key) <= FILL_TTL_S
    await eventually(lambda: _exists(replica, key), within=10)


async def _not_exists(client: aioredis.Redis, key: str) -> bool:
    return not await client.exists(key)


async def test_password_attempts_are_counted_on_the_primary_when_the_edge_reads_from_a_replica(
    settings: Settings, tmp_path: Path, make_link: LinkMaker, redis: aioredis.Redis, replica: aioredis.Redis
) -> None:
    slug = unique("rpw")
    record = await make_link(slug=slug, password_hash=HASH)
    await eventually(lambda: _exists(replica, link_key(settings.default_domain, slug)), within=10)
    async with served(_replica_settings(settings, tmp_path, replica)) as (_, base):
        async with httpx.AsyncClient(base_url=base) as client:
            wrong = await client.post(f"/{slug}", data={"password": "wrong"})
            right = await client.post(f"/{slug}", data={"password": "open sesame"})
    # Counted (a write): a 403 for the wrong one, not the 503 of a counter the replica refused.
    assert wrong.status_code == 403
    assert right.status_code == 303
    assert await redis.exists(f"h0p:pw:{{{record.link_id}}}:n") == 1  # the link's counter lives on the primary


async def test_an_invalidation_published_on_the_primary_reaches_an_edge_subscribed_on_the_replica(
    settings: Settings, tmp_path: Path, make_link: LinkMaker, redis: aioredis.Redis, replica: aioredis.Redis
) -> None:
    slug = unique("rinv")
    record = await make_link("https://example.com/before", slug=slug)
    key = link_key(settings.default_domain, slug)
    await eventually(lambda: _exists(replica, key), within=10)
    async with served(_replica_settings(settings, tmp_path, replica)) as (app, base):
        await asyncio.wait_for(app.subscriber.connected.wait(), 10)
        async with httpx.AsyncClient(base_url=base) as client:
            before = await client.get(f"/{slug}")
            assert before.headers["location"] == "https://example.com/before"
            assert app.cache.get(key) is not None  # now served from the edge's own memory

            # As the API's write-through does, on the primary only: the new record, then its key on the channel.
            changed = msgspec.structs.replace(record, url="https://example.com/after")
            await redis.set(key, encode(changed))
            await redis.publish(settings.invalidation_channel, key)

            async def moved() -> bool:
                return (await client.get(f"/{slug}")).headers["location"] == "https://example.com/after"

            await eventually(moved, within=10)


async def test_readyz_names_an_unreachable_replica_and_links_still_resolve(
    settings: Settings, tmp_path: Path, make_link: LinkMaker
) -> None:
    slug = unique("rdown")
    await make_link("https://example.com/still-here", slug=slug)
    local = edge_settings(settings, tmp_path, edge_redis_url=f"redis://127.0.0.1:{free_port()}/0")
    async with served(local) as (_, base), httpx.AsyncClient(base_url=base) as client:
        ready = await client.get("/readyz")
        link = await client.get(f"/{slug}")
    assert ready.status_code == 200 and "degraded: redis replica (H0P_EDGE_REDIS_URL) unreachable" in ready.text
    assert link.status_code == 302 and link.headers["location"] == "https://example.com/still-here"  # from Postgres


async def test_readyz_says_when_the_replica_has_lost_its_primary(settings: Settings, tmp_path: Path) -> None:
    primary = RedisServer().start()
    replica_server = RedisServer(replica_of=primary).start()
    replica_client = aioredis.Redis.from_url(replica_server.url)

    async def linked(status: str) -> bool:
        return (await replica_client.info("replication")).get("master_link_status") == status

    try:
        local = edge_settings(settings, tmp_path, redis_url=primary.url, edge_redis_url=replica_server.url)
        async with served(local) as (_, base), httpx.AsyncClient(base_url=base) as client:
            await eventually(lambda: linked("up"), within=20)
            ready = await client.get("/readyz")
            primary.stop()
            await eventually(lambda: linked("down"), within=20)
            cut_off = await client.get("/readyz")
    finally:
        await replica_client.aclose()
        replica_server.stop()
        primary.stop()
    assert ready.status_code == 200, ready.text
    assert cut_off.status_code == 503 and "redis replica (H0P_EDGE_REDIS_URL) has lost its primary" in cut_off.text
