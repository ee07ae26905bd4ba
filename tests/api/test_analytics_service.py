"""Analytics queries against a fixed set of clicks stored through ingest's own write path."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from api.errors import QueryTimedOut, ValidationFailed
from api.services import analytics
from api.services.analytics_export import ClickExport
from api.services.analytics_query import AnalyticsQuery, parse_query
from api.services.context import ServiceContext
from h0p_settings import Settings
from tests.ingest.conftest import CHROME, click, make_link, make_workspace, store_clicks

NOW = datetime(2025, 3, 31, 12, 0, tzinfo=UTC)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.2 Mobile/15E148 Safari/604.1"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
US, GB, DE = "8.8.8.8", "81.2.69.142", "2a00:1450:4001:80b::200e"


def ago(**kw: float) -> float:
    return (NOW - timedelta(**kw)).timestamp()


@pytest.fixture(scope="module")
async def world(settings: Settings, pool: asyncpg.Pool) -> dict[str, Any]:
    ws = await make_workspace(pool)
    other_ws = await make_workspace(pool)
    host = f"go-{ws.lower()[-8:]}.example"
    await pool.execute(
        "INSERT INTO domains (id, workspace_id, hostname, verification_token) VALUES ($1, $2, $3, 't')",
        f"dom_{ws}", ws, host,
    )  # fmt: skip
    folder, tag = f"fold_{ws}", f"tag_{ws}"
    await pool.execute("INSERT INTO folders (id, workspace_id, name) VALUES ($1, $2, 'f')", folder, ws)
    await pool.execute("INSERT INTO tags (id, workspace_id, name) VALUES ($1, $2, 't')", tag, ws)
    a = await make_link(pool, ws, folder_id=folder, utm_medium="email")
    b = await make_link(pool, ws)
    c = await make_link(pool, other_ws)
    await pool.execute("INSERT INTO link_tags (link_id, tag_id) VALUES ($1, $2)", a["id"], tag)
    events = [
        click(a, ts=ago(hours=1), ip=US, referer="https://www.google.com/search?q=1", query="utm_source=news"),
        click(a, ts=ago(hours=2), ip=GB, ua=IPHONE, qr=True),
        click(a, ts=ago(hours=3), ip=GB, ua=IPHONE),  # same visitor as the previous one
        click(b, ts=ago(hours=30), ip=DE, referer="https://t.co/abc"),
        click(b, ts=ago(hours=1), ip=US, ua=GOOGLEBOT),
        click(None, ts=ago(hours=4), ip=US, domain=host, slug="gone"),  # orphan on the workspace's domain
        click(a, ts=ago(days=10), ip=US),
        click(c, ts=ago(hours=1), ip=US),  # another workspace: never visible to the first
        click(a, ts=ago(minutes=90, seconds=1), ip=DE, ua=CHROME + " extra"),  # partial hour at the range edge
    ]
    await store_clicks(settings, events)
    return {"ws": ws, "other": other_ws, "a": a, "b": b, "host": host, "folder": folder, "tag": tag}


@pytest.fixture(scope="module")
async def ctx(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[ServiceContext]:
    r = aioredis.Redis.from_url(settings.redis_url, socket_timeout=5)
    yield ServiceContext(settings=settings, pool=pool, redis=r)
    await r.aclose()


async def ask(ctx: ServiceContext, ws: str, **params: Any) -> Any:
    return await analytics.analytics(ctx, ws, parse_query(params, now=NOW))


# Non-bot clicks of the workspace in the last 24h: a×4 (1h, 90m, 2h, 3h) and the orphan (4h).


async def test_count_excludes_bots_and_other_workspaces(ctx: ServiceContext, world: dict[str, Any]) -> None:
    assert await ask(ctx, world["ws"]) == {"clicks": 5}
    assert await ask(ctx, world["ws"], includeBots="true") == {"clicks": 6}
    assert await ask(ctx, world["ws"], interval="7d") == {"clicks": 6}
    assert await ask(ctx, world["ws"], interval="30d") == {"clicks": 7}
    assert await ask(ctx, world["other"]) == {"clicks": 1}


async def test_unique_counts_visitors_beside_clicks(ctx: ServiceContext, world: dict[str, Any]) -> None:
    # US/Chrome (a and the orphan share ip+ua+day), GB/iPhone twice, DE/Chrome-extra
    assert await ask(ctx, world["ws"], unique="true") == {"clicks": 5, "visitors": 3}


async def test_countries_cities_and_regions(ctx: ServiceContext, world: dict[str, Any]) -> None:
    ws = world["ws"]
    assert await ask(ctx, ws, groupBy="countries") == [
        {"country": "GB", "clicks": 2}, {"country": "US", "clicks": 2}, {"country": "DE", "clicks": 1},
    ]  # fmt: skip
    cities = await ask(ctx, ws, groupBy="cities", interval="7d")
    assert {"city": "London", "country": "GB", "clicks": 2} in cities
    assert {"city": "Frankfurt am Main", "country": "DE", "clicks": 2} in cities
    assert await ask(ctx, ws, groupBy="continents") == [
        {"continent": "EU", "clicks": 3},
        {"continent": "NA", "clicks": 2},
    ]
    assert {"region": "England", "country": "GB", "clicks": 2} in await ask(ctx, ws, groupBy="regions")


async def test_devices_browsers_and_os(ctx: ServiceContext, world: dict[str, Any]) -> None:
    ws = world["ws"]
    assert await ask(ctx, ws, groupBy="devices") == [
        {"device": "desktop", "clicks": 3},
        {"device": "mobile", "clicks": 2},
    ]
    assert await ask(ctx, ws, groupBy="devices", includeBots="true") == [
        {"device": "desktop", "clicks": 3}, {"device": "mobile", "clicks": 2}, {"device": "bot", "clicks": 1},
    ]  # fmt: skip
    assert await ask(ctx, ws, groupBy="browsers") == [
        {"browser": "Chrome", "clicks": 3}, {"browser": "Mobile Safari", "clicks": 2},
    ]  # fmt: skip
    assert await ask(ctx, ws, groupBy="os") == [{"os": "Windows", "clicks": 3}, {"os": "iOS", "clicks": 2}]


async def test_referers_and_referer_urls(ctx: ServiceContext, world: dict[str, Any]) -> None:
    ws = world["ws"]
    assert await ask(ctx, ws, groupBy="referers", interval="7d") == [
        {"referer": None, "clicks": 4}, {"referer": "google.com", "clicks": 1}, {"referer": "t.co", "clicks": 1},
    ]  # fmt: skip
    urls = await ask(ctx, ws, groupBy="referer_urls", interval="7d")
    assert {"refererUrl": "https://t.co/abc", "clicks": 1} in urls


async def test_utm_groups_take_the_landing_query_then_the_links_fields(
    ctx: ServiceContext, world: dict[str, Any]
) -> None:
    ws = world["ws"]
    assert await ask(ctx, ws, groupBy="utm_sources") == [
        {"utm_source": None, "clicks": 4},
        {"utm_source": "news", "clicks": 1},
    ]
    assert await ask(ctx, ws, groupBy="utm_mediums") == [
        {"utm_medium": "email", "clicks": 4},
        {"utm_medium": None, "clicks": 1},
    ]
    for group, key in (("utm_campaigns", "utm_campaign"), ("utm_terms", "utm_term"), ("utm_contents", "utm_content")):
        assert await ask(ctx, ws, groupBy=group) == [{key: None, "clicks": 5}]


async def test_top_links_name_the_links_and_leave_out_orphans(ctx: ServiceContext, world: dict[str, Any]) -> None:
    top = await ask(ctx, world["ws"], groupBy="top_links", interval="7d")
    a, b = world["a"], world["b"]
    assert top == [
        {"linkId": a["id"], "clicks": 4, "domain": "localhost", "slug": a["slug"], "url": a["url"]},
        {"linkId": b["id"], "clicks": 1, "domain": "localhost", "slug": b["slug"], "url": b["url"]},
    ]


@pytest.mark.parametrize(
    ("params", "clicks"),
    [
        ({"linkId": "a"}, 5),
        ({"tagId": "tag"}, 5),
        ({"folderId": "folder"}, 5),
        ({"domain": "host"}, 1),
        ({"country": "GB"}, 2),
        ({"city": "London"}, 2),
        ({"region": "England"}, 2),
        ({"continent": "EU"}, 4),
        ({"device": "mobile"}, 2),
        ({"browser": "Chrome"}, 5),
        ({"os": "iOS"}, 2),
        ({"referer": "t.co"}, 1),
        ({"utm_source": "news"}, 1),
        ({"utm_medium": "email"}, 5),
        ({"qr": "true"}, 1),
        ({"qr": "false"}, 6),
        ({"linkId": "b", "includeBots": "true"}, 2),
        ({"country": "US", "linkId": "a"}, 2),
    ],
)
async def test_each_filter_over_thirty_days(
    ctx: ServiceContext, world: dict[str, Any], params: dict[str, str], clicks: int
) -> None:
    resolved = {k: (world[v]["id"] if v in ("a", "b") else world.get(v, v)) for k, v in params.items()}
    assert await ask(ctx, world["ws"], interval="30d", **resolved) == {"clicks": clicks}


async def test_rollup_and_raw_rows_give_the_same_answer(ctx: ServiceContext, world: dict[str, Any]) -> None:
    ws = world["ws"]
    for group in ("countries", "devices", "referers", "top_links", "utm_mediums"):
        q = parse_query({"groupBy": group, "interval": "30d"}, now=NOW)
        fast = await analytics.analytics(ctx, ws, q)
        assert fast == await analytics.analytics(ctx, ws, q, fast=False), group
    assert analytics.plan(parse_query({"groupBy": "countries"}, now=NOW)).source == "rollup"
    assert analytics.plan(parse_query({"groupBy": "countries", "device": "mobile"}, now=NOW)).source == "cube"


async def test_timeseries_is_zero_filled_hourly_over_a_day(ctx: ServiceContext, world: dict[str, Any]) -> None:
    series = await ask(ctx, world["ws"], groupBy="timeseries")
    assert len(series) == 24
    assert series[0]["start"] == "2025-03-30T12:00:00+00:00"
    assert sum(p["clicks"] for p in series) == 5
    by_start = {p["start"]: p["clicks"] for p in series}
    assert by_start["2025-03-31T10:00:00+00:00"] == 2  # 1h30 and 2h ago: 10:30 and 10:00
    assert by_start["2025-03-31T11:00:00+00:00"] == 1
    assert by_start["2025-03-31T05:00:00+00:00"] == 0


async def test_bucket_size_follows_the_range(ctx: ServiceContext, world: dict[str, Any]) -> None:
    assert len(await ask(ctx, world["ws"], groupBy="timeseries", interval="30d")) == 31  # days, partial ends
    assert len(await ask(ctx, world["ws"], groupBy="timeseries", interval="1y")) == 13  # months
    minutes = await ask(
        ctx, world["ws"], groupBy="timeseries", start="2025-03-31T10:00:00Z", end="2025-03-31T11:00:00Z"
    )
    assert len(minutes) == 60 and sum(p["clicks"] for p in minutes) == 2


async def test_all_time_starts_at_the_first_click(ctx: ServiceContext, world: dict[str, Any]) -> None:
    series = await ask(ctx, world["ws"], groupBy="timeseries", interval="all")
    assert series[0]["start"] == "2025-03-21T00:00:00+00:00"
    assert sum(p["clicks"] for p in series) == 7


@pytest.mark.parametrize(
    ("tz", "first_day", "second_day"),
    [
        # Paris moved to summer time that night: the local 30th has 23 hours
        ("Europe/Paris", ("2025-03-30T00:00:00+01:00", 1), ("2025-03-31T00:00:00+02:00", 1)),
        ("UTC", ("2025-03-30T00:00:00+00:00", 2), ("2025-03-31T00:00:00+00:00", 0)),
        # half-hour offset: the rollup cannot serve it, raw rows do
        ("Asia/Kolkata", ("2025-03-30T00:00:00+05:30", 0), ("2025-03-31T00:00:00+05:30", 2)),
    ],
)
async def test_day_buckets_follow_the_requested_time_zone(
    settings: Settings,
    pool: asyncpg.Pool,
    ctx: ServiceContext,
    tz: str,
    first_day: tuple[str, int],
    second_day: tuple[str, int],
) -> None:
    ws = await make_workspace(pool)
    link = await make_link(pool, ws)
    before = datetime(2025, 3, 30, 21, 59, 59, tzinfo=UTC).timestamp()  # 23:59:59 in Paris, 03:29 next day in Kolkata
    after = datetime(2025, 3, 30, 22, 0, 0, tzinfo=UTC).timestamp()  # midnight in Paris
    await store_clicks(settings, [click(link, ts=before), click(link, ts=after)])
    series = await analytics.analytics(
        ctx, ws, parse_query({"groupBy": "timeseries", "start": "2025-03-25", "end": "2025-04-02", "timezone": tz})
    )
    by_start = {p["start"]: p["clicks"] for p in series}
    assert by_start[first_day[0]] == first_day[1]
    assert by_start[second_day[0]] == second_day[1]
    assert sum(by_start.values()) == 2


def test_ranges_are_clamped_to_the_years_clicks_can_have() -> None:
    q = parse_query({"start": "0001-01-01T00:00:00+05:00", "end": "9999-12-31T23:59:59-05:00"}, now=NOW)
    assert q.start == datetime(2000, 1, 1, tzinfo=UTC) and q.end == datetime(9999, 1, 1, tzinfo=UTC)
    month = parse_query({"groupBy": "timeseries", "start": "1900-01-01", "end": "2100-01-01"}, now=NOW)
    assert month.bucket == "month" and month.start.year == 2000


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"groupBy": "planets"}, "groupBy"),
        ({"interval": "2w"}, "interval"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"start": "yesterday"}, "start"),
        ({"start": "2025-03-02", "end": "2025-03-01"}, "start"),
        ({"unique": "maybe"}, "unique"),
        ({"limit": "0"}, "limit"),
        ({"groupBy": "timeseries", "start": "2020-01-01", "end": "9999-06-01"}, "end"),  # ~96,000 months
        ({"timezone": "posixrules"}, "timezone"),  # a file zoneinfo loads, not an IANA zone name
    ],
)
def test_invalid_parameters_are_rejected_with_their_name(params: dict[str, str], path: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_query(params, now=NOW)
    assert info.value.details is not None and info.value.details[0]["path"] == path


async def test_events_are_listed_newest_first_and_paginated(ctx: ServiceContext, world: dict[str, Any]) -> None:
    q = parse_query({"interval": "30d"}, now=NOW)
    first = await analytics.list_events(ctx, world["ws"], q, page=0, limit=3)
    second = await analytics.list_events(ctx, world["ws"], q, page=1, limit=3)
    assert first["total"] == 7 and (first["page"], first["limit"]) == (0, 3)
    times = [e["timestamp"] for e in first["data"] + second["data"]]
    assert times == sorted(times, reverse=True) and len(times) == 6
    event = first["data"][0]
    assert event["country"] == "US" and event["utm_source"] == "news" and event["ip"] is None
    assert event["linkId"] == world["a"]["id"] and len(event["visitor"]) == 16


async def _export(ctx: ServiceContext, ws: str, q: AnalyticsQuery, fmt: str, chunk_rows: int) -> list[bytes]:
    export = await ClickExport.open(ctx.pool, ctx.settings, ws, q)
    try:
        return [c async for c in export.chunks(fmt, chunk_rows=chunk_rows)]
    finally:
        await export.close()


async def test_export_streams_csv_and_ndjson(ctx: ServiceContext, world: dict[str, Any]) -> None:
    q = parse_query({"interval": "30d", "includeBots": "true"}, now=NOW)
    csv_bytes = b"".join(await _export(ctx, world["ws"], q, "csv", chunk_rows=2))
    lines = csv_bytes.decode().splitlines()
    assert lines[0].startswith("id,timestamp,linkId,domain,slug")
    assert len(lines) == 1 + 8
    nd = await _export(ctx, world["ws"], q, "ndjson", chunk_rows=3)
    assert len(nd) == 3  # 8 rows in chunks of 3
    rows = [json.loads(line) for line in b"".join(nd).splitlines()]
    assert [r["timestamp"] for r in rows] == sorted(r["timestamp"] for r in rows)
    assert sum(r["bot"] for r in rows) == 1


async def test_an_export_fetch_past_the_statement_timeout_is_cut_and_frees_the_connection(
    settings: Settings, ctx: ServiceContext, pool: asyncpg.Pool, world: dict[str, Any]
) -> None:
    quick = dataclasses.replace(settings, analytics_statement_timeout_ms=200)
    q = parse_query({"interval": "30d"}, now=NOW)
    export = await ClickExport.open(ctx.pool, quick, world["ws"], q)
    async with pool.acquire() as blocker:
        locked = blocker.transaction()
        await locked.start()
        await blocker.execute("LOCK TABLE clicks IN ACCESS EXCLUSIVE MODE")  # stands in for a slow fetch
        try:
            with pytest.raises(QueryTimedOut):
                async for _ in export.chunks("ndjson"):
                    pass
        finally:
            await locked.rollback()
            await export.close()
    again = await ClickExport.open(ctx.pool, quick, world["ws"], q)  # the workspace's lock went with it
    try:
        assert len(b"".join([c async for c in again.chunks("ndjson")]).splitlines()) == 7
    finally:
        await again.close()


async def test_a_question_asked_again_and_again_is_planned_for_its_values_each_time(
    settings: Settings, world: dict[str, Any]
) -> None:
    """asyncpg prepares each statement once per connection, and from its sixth execution Postgres may run it
    with a generic plan, made without the values (range, link, built periods). On 10M clicks it did: a link's
    unique countries went from 35 ms to 1.6–2.1 s at the sixth refresh of the same view (loadtests/RESULTS.md).
    Tiny test data never makes Postgres prefer the generic plan, so this connection prefers it always."""
    generic = await asyncpg.create_pool(
        settings.database_url, min_size=1, max_size=1, server_settings={"plan_cache_mode": "force_generic_plan"}
    )
    try:
        ctx = ServiceContext(settings=settings, pool=generic, redis=None)  # type: ignore[arg-type]  # not used here
        for params in (
            {"groupBy": "countries", "linkId": world["a"]["id"]},
            {"groupBy": "count", "tagId": world["tag"]},
        ):
            q = parse_query({**params, "interval": "7d"}, now=NOW)
            answers = [await analytics.analytics(ctx, world["ws"], q) for _ in range(3)]
            assert answers[0] and all(a == answers[0] for a in answers), params
        plans = await generic.fetchrow(
            "SELECT count(*) AS statements, sum(generic_plans) AS generic, sum(custom_plans) AS custom"
            " FROM pg_prepared_statements WHERE statement LIKE '%FROM click%' AND statement NOT LIKE '%pg_prepared%'"
        )
        assert plans["statements"] >= 2 and plans["custom"] >= 6, dict(plans)
        assert plans["generic"] == 0, dict(plans)
    finally:
        await generic.close()


async def test_analytics_reads_are_not_jit_compiled(ctx: ServiceContext) -> None:
    # compiling took longer than the queries compiled (api/services/analytics.py ``reading``)
    async with analytics.reading(ctx.reader, 1000) as conn:
        assert await conn.fetchval("SHOW jit") == "off"
        assert await conn.fetchval("SHOW statement_timeout") == "1s"
