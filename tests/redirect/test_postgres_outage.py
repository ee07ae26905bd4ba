"""The edge with Postgres cut (a TCP proxy between them): what must not need Postgres.

A Host that is not a verified domain (an IP literal, a stray alias) is answered from the set of
verified domains the edge holds; a flood of unknown slugs spends a bounded miss budget instead
of every request going to Postgres, and other tenants' uncached links keep resolving.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from h0p_settings import Settings
from redirect.app import EdgeApp
from redirect.record import domain_key
from tests.ingest.proxy import TcpProxy
from tests.redirect.conftest import edge_settings, served, unique, write_domain, write_link
from tests.redirect.test_resolution import eventually


@asynccontextmanager
async def edge_behind_proxy(
    settings: Settings, tmp_path: Path, **changes: object
) -> AsyncIterator[tuple[EdgeApp, str, TcpProxy, Settings]]:
    """A served edge whose Postgres is reached through a proxy the test can cut."""
    parts = urlsplit(settings.database_url)
    proxy = await TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432).start()
    netloc = f"{parts.username}@127.0.0.1:{proxy.port}"
    local = edge_settings(settings, tmp_path, database_url=urlunsplit(parts._replace(netloc=netloc)), **changes)
    try:
        async with served(local) as (app, base):
            await eventually(lambda: asyncio.sleep(0, app.subscriber.connected.is_set()), 5)
            await eventually(lambda: asyncio.sleep(0, app.domains.fresh), 5)
            yield app, base, proxy, local
    finally:
        await proxy.close()


@pytest.mark.chaos
async def test_with_postgres_cut_an_unknown_host_gets_the_cached_link_without_a_503(
    settings: Settings, tmp_path: Path, pool: asyncpg.Pool, redis: aioredis.Redis, workspace_id: str
) -> None:
    slug, brand = unique("ip"), f"{unique('brand')}.example"
    await write_link(pool, redis, workspace_id, domain=settings.default_domain, slug=slug, url="https://example.com/ip")
    await write_domain(pool, redis, workspace_id, brand)
    await write_link(pool, redis, workspace_id, domain=brand, slug="promo", url="https://example.com/brand")
    async with edge_behind_proxy(settings, tmp_path) as (app, base, proxy, local):
        port = urlsplit(base).port
        async with httpx.AsyncClient(base_url=base) as client:
            assert (await client.get(f"/{slug}", headers={"host": local.default_domain})).status_code == 302
            assert (await client.get("/promo", headers={"host": brand})).headers[
                "location"
            ] == "https://example.com/brand"
            await proxy.cut()
            hosts = [f"127.0.0.1:{port}", "127.0.0.1", f"[::1]:{port}", "203.0.113.5", "stray-alias.example", ""]
            answers = {}
            for host in hosts:
                for _ in range(3):
                    r = await client.get(f"/{slug}", headers={"host": host})
                    answers.setdefault(host, []).append((r.status_code, r.headers.get("location")))
            assert answers == {h: [(302, "https://example.com/ip")] * 3 for h in hosts}
            # the verified domain's cached link still answers from its own namespace
            assert (await client.get("/promo", headers={"host": brand})).headers[
                "location"
            ] == "https://example.com/brand"

            # A domain verified now (Postgres still cut) is learnt from the invalidation channel:
            # the API writes its record to Redis and publishes its key.
            fresh = f"{unique('late')}.example"
            await proxy.restore()
            await write_domain(pool, redis, workspace_id, fresh)
            await write_link(pool, redis, workspace_id, domain=fresh, slug="promo", url="https://example.com/late")
            await proxy.cut()
            heard = app.metrics.invalidations._value.get()
            await redis.publish(local.invalidation_channel, domain_key(fresh))
            await eventually(lambda: asyncio.sleep(0, app.metrics.invalidations._value.get() > heard), 5)
            late = await client.get("/promo", headers={"host": fresh})
            assert (late.status_code, late.headers.get("location")) == (302, "https://example.com/late")
        assert app.metrics.postgres_lookups._value.get() == 0  # nothing above needed Postgres
