"""The in-process cache, miss coalescing, and the client address behind proxies."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from pathlib import Path

import httpx

from h0p_settings import Settings
from redirect.cache import MISSING, RecordCache
from redirect.client import ClientAddress
from redirect.record import RECORD_VERSION, LinkRecord
from tests.redirect.conftest import LinkMaker, edge_client, edge_settings, served, unique

RECORD = LinkRecord(v=RECORD_VERSION, link_id="l", workspace_id="w", url="https://example.com")


def test_cache_evicts_least_recently_used_and_expires_entries() -> None:
    cache = RecordCache(size=2, ttl_s=60, negative_ttl_s=0.05)
    cache.put("a", RECORD)
    cache.put("b", None)
    assert cache.get("a") is RECORD  # "a" is now the most recent
    cache.put("c", RECORD)
    assert cache.get("b") is MISSING and cache.get("c") is RECORD
    cache.put("n", None)
    time.sleep(0.06)
    assert cache.get("n") is MISSING  # negative entries are short-lived


def test_invalidation_during_a_lookup_keeps_the_stale_answer_out() -> None:
    cache = RecordCache(size=10, ttl_s=60, negative_ttl_s=5)
    generation = cache.generation
    cache.invalidate("k")  # arrives while the lookup is in flight
    cache.put("k", RECORD, generation)
    assert cache.get("k") is MISSING


def test_cache_size_zero_disables_the_cache() -> None:
    cache = RecordCache(size=0, ttl_s=60, negative_ttl_s=5)
    cache.put("a", RECORD)
    assert cache.get("a") is MISSING


def test_client_address_is_the_peer_unless_the_peer_is_a_trusted_proxy() -> None:
    proxies = ClientAddress([ipaddress.ip_network("10.0.0.0/8")])
    assert proxies.resolve("198.51.100.1", "1.2.3.4") == "198.51.100.1"  # untrusted peer: header ignored
    assert proxies.resolve("10.0.0.5", "1.2.3.4") == "1.2.3.4"
    assert proxies.resolve("10.0.0.5", "6.6.6.6, 1.2.3.4, 10.1.1.1") == "1.2.3.4"  # first untrusted from the right
    assert proxies.resolve("10.0.0.5", "garbage, 10.1.1.1") == "10.1.1.1"
    assert proxies.resolve("10.0.0.5", "[2001:db8::1]:443") == "2001:db8::1"
    assert ClientAddress([]).resolve("10.0.0.5", "1.2.3.4") == "10.0.0.5"  # nothing trusted by default


async def test_concurrent_misses_for_one_slug_make_one_redis_lookup(
    settings: Settings, tmp_path: Path, make_link: LinkMaker
) -> None:
    slug = unique("co")
    await make_link("https://example.com/co", slug=slug)
    async with edge_client(edge_settings(settings, tmp_path)) as (app, client):
        responses = await asyncio.gather(*(client.get(f"/{slug}") for _ in range(50)))
        assert {r.headers["location"] for r in responses} == {"https://example.com/co"}
        assert app.metrics.redis_hit._value.get() == 1
        assert app.metrics.postgres_lookups._value.get() == 0


async def test_a_slug_missing_from_redis_is_read_from_postgres_and_written_back(
    settings: Settings, tmp_path: Path, make_link: LinkMaker, redis: object
) -> None:
    import redis.asyncio as aioredis

    assert isinstance(redis, aioredis.Redis)
    slug = unique("pg")
    await make_link("https://example.com/pg", slug=slug)
    key = f"h0p:l:{settings.default_domain}/{slug}"
    await redis.delete(key)
    async with edge_client(edge_settings(settings, tmp_path, cache_size=0)) as (app, client):
        assert (await client.get(f"/{slug}")).headers["location"] == "https://example.com/pg"
        assert await redis.get(key) is not None
        assert (await client.get(f"/{slug}")).status_code == 302
        assert app.metrics.postgres_lookups._value.get() == 1


async def test_running_edge_ignores_x_forwarded_for_from_an_untrusted_local_peer(
    settings: Settings, tmp_path: Path, make_link: LinkMaker
) -> None:
    # uvicorn's own proxy-headers middleware would believe 127.0.0.1; only H0P_TRUSTED_PROXIES may
    slug = unique("xff")
    rule = {"conditions": [{"type": "ip", "value": "81.2.69.142"}], "url": "https://example.com/spoofed"}
    await make_link("https://example.com/default", slug=slug, rules=[rule])
    async with served(edge_settings(settings, tmp_path)) as (_, base), httpx.AsyncClient(base_url=base) as client:
        r = await client.get(f"/{slug}", headers={"x-forwarded-for": "81.2.69.142"})
    assert r.headers["location"] == "https://example.com/default"
