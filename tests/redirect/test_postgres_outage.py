"""The edge with Postgres cut (a TCP proxy between them): what must not need Postgres.

A Host that is not a verified domain (an IP literal, a stray alias) is answered from the set of
verified domains the edge holds; a flood of unknown slugs spends a bounded miss budget instead
of every request going to Postgres, and other tenants' uncached links keep resolving.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from h0p_settings import Settings
from redirect.app import EdgeApp
from redirect.record import domain_key, link_key
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


LOOPBACK = (ipaddress.ip_network("127.0.0.1/32"),)  # the test client is the trusted proxy: X-Forwarded-For counts


async def flood(client: httpx.AsyncClient, host: str, count: int, ip_of: Callable[[int], str]) -> list[int]:
    """``count`` requests for unknown slugs on ``host``, 50 at a time; their status codes."""
    codes: list[int] = []
    for start in range(0, count, 50):
        batch = [
            client.get(f"/{unique('nope')}", headers={"host": host, "x-forwarded-for": ip_of(i)})
            for i in range(start, min(start + 50, count))
        ]
        codes += [r.status_code for r in await asyncio.gather(*batch)]
    return codes


async def cold_link(pool: asyncpg.Pool, redis: aioredis.Redis, workspace_id: str, domain: str, url: str) -> str:
    """A link in Postgres only (its Redis record expired): the edge must read it from Postgres."""
    slug = unique("cold")
    await write_link(pool, redis, workspace_id, domain=domain, slug=slug, url=url)
    await redis.delete(link_key(domain, slug))
    return slug


@pytest.mark.chaos
async def test_a_flood_of_unknown_slugs_from_many_clients_spends_its_domains_budget_only(
    settings: Settings, tmp_path: Path, pool: asyncpg.Pool, redis: aioredis.Redis, workspace_id: str
) -> None:
    flooded, other = f"{unique('flooded')}.example", f"{unique('other')}.example"
    for host in (flooded, other):
        await write_domain(pool, redis, workspace_id, host)
    cold = await cold_link(pool, redis, workspace_id, other, "https://example.com/other-tenant")
    cold_default = await cold_link(pool, redis, workspace_id, settings.default_domain, "https://example.com/dflt")
    local = edge_settings(
        settings, tmp_path, trusted_proxies=LOOPBACK, miss_budget_domain=2, miss_budget_client=5, cache_size=0
    )
    async with served(local) as (app, base), httpx.AsyncClient(base_url=base, timeout=30) as client:
        await eventually(lambda: asyncio.sleep(0, app.domains.fresh), 5)
        before = app.metrics.postgres_lookups._value.get()
        codes = await flood(client, flooded, 400, lambda i: f"198.18.{i // 250}.{i % 250 + 1}")
        reached = app.metrics.postgres_lookups._value.get() - before
        # another tenant's link that only Postgres knows, asked for right after the flood
        r = await client.get(f"/{cold}", headers={"host": other, "x-forwarded-for": "192.0.2.10"})
        d = await client.get(f"/{cold_default}", headers={"x-forwarded-for": "192.0.2.11"})
    assert set(codes) <= {404, 503} and codes.count(503) > 0
    assert reached <= 100, f"{reached} of 400 unknown slugs reached Postgres"
    assert (r.status_code, r.headers.get("location")) == (302, "https://example.com/other-tenant")
    assert (d.status_code, d.headers.get("location")) == (302, "https://example.com/dflt")


@pytest.mark.chaos
async def test_one_client_flooding_the_default_domain_leaves_its_budget_to_everyone_else(
    settings: Settings, tmp_path: Path, pool: asyncpg.Pool, redis: aioredis.Redis, workspace_id: str
) -> None:
    cold = await cold_link(pool, redis, workspace_id, settings.default_domain, "https://example.com/neighbour")
    local = edge_settings(
        settings, tmp_path, trusted_proxies=LOOPBACK, miss_budget_domain=10, miss_budget_client=1, cache_size=0
    )
    async with served(local) as (app, base), httpx.AsyncClient(base_url=base, timeout=30) as client:
        before = app.metrics.postgres_lookups._value.get()
        # one IPv6 client rotating addresses in its /64
        codes = await flood(client, local.default_domain, 300, lambda i: f"2001:db8:5:6::{i + 1:x}")
        reached = app.metrics.postgres_lookups._value.get() - before
        r = await client.get(f"/{cold}", headers={"x-forwarded-for": "192.0.2.20"})
    assert set(codes) <= {404, 503}
    assert reached <= 50, f"{reached} of 300 unknown slugs from one client reached Postgres"
    assert (r.status_code, r.headers.get("location")) == (302, "https://example.com/neighbour")
