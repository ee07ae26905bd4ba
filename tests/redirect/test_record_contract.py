"""Reader side of the cache record contract: the edge decodes the current version; any other is a miss."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from h0p_settings import Settings
from redirect.record import RECORD_VERSION, decode_domain, decode_link, link_key
from redirect.rules import Visitor, choose_rule
from tests.golden.records import golden
from tests.redirect.conftest import LinkMaker, edge_client, edge_settings, unique

IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148 Safari/604.1"


def test_the_edge_reads_the_golden_record_of_the_current_version() -> None:
    record = decode_link(golden("link", RECORD_VERSION))
    assert record is not None
    assert (record.link_id, record.url, record.status_code, record.expired_url) == (
        "link_golden", "https://example.com/landing", 301, "https://example.com/gone",
    )  # fmt: skip
    assert record.utm == (("utm_source", "news"), ("utm_campaign", "spring"))
    assert [t.weight for t in record.split] == [30, 70]
    rule = choose_rule(record, Visitor(user_agent=IPHONE, query_string="ref=b", now=1.9e9))
    assert rule == ("https://apps.example.com/ios", "rule:1")
    net = Visitor(ip="198.51.100.4", referer="https://www.news.example/a", user_agent=IPHONE, now=1.8e9)
    assert choose_rule(record, net) == ("https://example.com/net", "rule:2")
    domain = decode_domain(golden("domain", RECORD_VERSION))
    assert domain is not None and domain.expired_url == "https://example.com/expired"


@pytest.mark.parametrize("version", [v for v in range(1, RECORD_VERSION)])
def test_a_record_of_another_version_is_a_cache_miss(version: int) -> None:
    assert decode_link(golden("link", version)) is None
    assert decode_domain(golden("domain", version)) is None


async def test_the_edge_answers_from_postgres_when_redis_holds_an_old_version(
    settings: Settings, tmp_path: Path, make_link: LinkMaker, pool: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    slug = unique("old")
    await make_link("https://example.com/current", slug=slug)
    await redis.set(link_key(settings.default_domain, slug), golden("link", 1))  # a v1 API wrote it
    async with edge_client(edge_settings(settings, tmp_path)) as (_, client):
        r = await client.get(f"/{slug}")
    assert r.status_code == 302 and r.headers["location"] == "https://example.com/current"
