"""The pre-aggregated answers (rollup, cube, pairs, HyperLogLog visitors) against the raw rows.

Clicks are stored through ingest's own write path (rollup and cube increments in the batch's
transaction), some folded and some still increments, over six weeks; the pairs of the closed
periods built by ingest's background job, then a few clicks stored late into periods already
built; then random queries (groupBy, zero to two filters, interval or start/end, time zone, qr,
bots, unique) are answered both ways.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from api import db
from api.services import analytics
from api.services.analytics_query import GROUP_BYS, parse_query
from api.services.context import ServiceContext
from h0p_settings import Settings
from ingest.pairs import (
    BUILD_SQL,
    BUSY_LINK_CLICKS,
    DAY,
    FEW_VALUED_PAIRS,
    HOUR,
    aggregate_closed_periods,
    build_days,
    build_period,
    closed_before,
    floor_week,
    scope_fingerprint,
    stale_scope_periods,
)
from ingest.store import ClickStore, rebuild_rollup
from tests.ingest.conftest import CHROME, click, make_link, make_workspace, store_clicks

NOW = datetime(2025, 3, 31, 12, 17, 23, tzinfo=UTC)
UAS = [
    CHROME,
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.2 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 "
    "Mobile Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
]
# addresses the test GeoIP database places (US, GB, DE, SE, CN, US) and one it does not
IPS = ["8.8.8.8", "81.2.69.142", "2a00:1450:4001:80b::200e", "89.160.20.112", "175.16.199.0", "216.160.83.56",
       "1.2.3.4"]  # fmt: skip
REFERERS = ["", "https://www.google.com/search?q=1", "https://t.co/abc", "https://news.ycombinator.com/item?id=7"]
QUERIES = ["", "utm_source=newsletter&utm_medium=email", "utm_source=twitter&utm_campaign=launch&utm_term=x",
           "utm_content=ad1"]  # fmt: skip
ZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu", "Australia/Adelaide"]


@pytest.fixture(scope="module", autouse=True)
def busy_links() -> Iterator[None]:
    """Busy links' rows (ingest/pairs.py) for the links busy in a period, here with a few clicks (the defaults
    are for real traffic): with this data's ~3 clicks per link and day, a link is busy on some days and
    hours and not on others, so its rankings mix both."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(BUSY_LINK_CLICKS, DAY, 4)
        patch.setitem(BUSY_LINK_CLICKS, HOUR, 2)
        yield


@pytest.fixture(scope="module")
async def world(settings: Settings, pool: asyncpg.Pool) -> dict[str, Any]:
    rng = random.Random(16)
    ws = await make_workspace(pool)
    host = f"go-{ws.lower()[-8:]}.example"
    await pool.execute(
        "INSERT INTO domains (id, workspace_id, hostname, verification_token) VALUES ($1, $2, $3, 't')",
        f"dom_{ws}", ws, host,
    )  # fmt: skip
    folder, tag = f"fold_{ws}", f"tag_{ws}"
    await pool.execute("INSERT INTO folders (id, workspace_id, name) VALUES ($1, $2, 'f')", folder, ws)
    await pool.execute("INSERT INTO tags (id, workspace_id, name) VALUES ($1, $2, 't')", tag, ws)
    links = [
        await make_link(pool, ws, folder_id=folder if i % 3 == 0 else None, domain=host if i % 2 else "localhost")
        for i in range(8)
    ]
    for link in links[:3]:
        await pool.execute("INSERT INTO link_tags (link_id, tag_id) VALUES ($1, $2)", link["id"], tag)

    def event(ts: float) -> Any:
        link = None if rng.random() < 0.05 else rng.choice(links)
        extra = {"domain": host, "slug": "gone"} if link is None else {}
        return click(link, ts=ts, ip=rng.choice(IPS), ua=rng.choice(UAS), referer=rng.choice(REFERERS),
                     query=rng.choice(QUERIES), qr=rng.random() < 0.2, **extra)  # fmt: skip

    span = timedelta(days=42).total_seconds()
    old = [event(NOW.timestamp() - rng.random() * span) for _ in range(900)]
    recent = [event(NOW.timestamp() - rng.random() * 7200) for _ in range(150)]  # the last hours: raw edges
    await store_clicks(settings, sorted(old, key=lambda e: e.ts), fold=True, batch=97)
    await store_clicks(settings, recent, fold=False, batch=97)  # still increments: read through the *_totals views
    await _aggregate_pairs(settings, NOW)
    # stored after their periods were built (a late batch): raw rows for those until rebuilt
    late = [event(NOW.timestamp() - rng.random() * span) for _ in range(12)]
    await store_clicks(settings, late, fold=False, batch=97)
    return {"ws": ws, "links": links, "tag": tag, "folder": folder, "host": host, "late": late}


async def _aggregate_pairs(settings: Settings, now: datetime) -> int:
    """Run ingest's background job until it has nothing left to build; how many periods it built
    (late clicks looked for over the whole six weeks, not only the last days)."""
    conn = await asyncpg.connect(settings.database_url)
    total = 0
    weeks = timedelta(days=45)
    try:
        while built := await aggregate_closed_periods(conn, now, lookback=weeks, limit=100, late_check=weeks):
            total += built
    finally:
        await conn.close()
    return total


@pytest.fixture(scope="module")
async def ctx(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[ServiceContext]:
    r = aioredis.Redis.from_url(settings.redis_url, socket_timeout=5)
    yield ServiceContext(settings=settings, pool=pool, redis=r)
    await r.aclose()


def _random_params(rng: random.Random, world: dict[str, Any]) -> dict[str, Any]:
    filters = {
        "country": ["US", "GB", "DE", "SE"], "continent": ["EU", "NA"], "city": ["London", "Milton"],
        "device": ["desktop", "mobile"], "browser": ["Chrome", "Mobile Safari", "Firefox"],
        "os": ["Windows", "iOS", "Android"], "referer": ["google.com", "t.co"],
        "refererUrl": ["https://t.co/abc"], "utm_source": ["newsletter", "twitter"], "utm_medium": ["email"],
        "utm_campaign": ["launch"], "utm_term": ["x"], "utm_content": ["ad1"],
        "linkId": [lk["id"] for lk in world["links"]], "domain": [world["host"], "localhost"],
        "tagId": [world["tag"]], "folderId": [world["folder"]],
    }  # fmt: skip
    params: dict[str, Any] = {"groupBy": rng.choice(GROUP_BYS), "timezone": rng.choice(ZONES)}
    for name in rng.sample(sorted(filters), rng.choice([0, 0, 1, 1, 1, 2])):
        params[name] = rng.choice(filters[name])
    shape = rng.random()
    if shape < 0.7:
        params["interval"] = rng.choice(["24h", "7d", "30d", "90d", "mtd", "all"])
    else:  # arbitrary instants, whole hours or not
        start = NOW - timedelta(hours=rng.randrange(3, 1000), minutes=rng.choice([0, 0, 13]))
        params["start"] = start.isoformat()
        params["end"] = (start + timedelta(hours=rng.randrange(2, 900), minutes=rng.choice([0, 41]))).isoformat()
    if rng.random() < 0.5:
        params["unique"] = "true"
    if rng.random() < 0.2:
        params["qr"] = rng.choice(["true", "false"])
    if rng.random() < 0.2:
        params["includeBots"] = "true"
    return params


def _within_sketch_error(raw: Any) -> Any:
    """The raw rows' answer, its visitor counts above 640 (a sketch's estimate past its exact set) as ±3 %."""
    if isinstance(raw, list):
        return [_within_sketch_error(row) for row in raw]
    return {k: pytest.approx(v, rel=0.03) if k == "visitors" and v > 640 else v for k, v in raw.items()}


async def test_fast_paths_equal_the_raw_rows_over_random_queries(
    ctx: ServiceContext, world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rollup, cube and sketches give the raw rows' answer: clicks exactly, visitors exactly up to the 640
    visitors a sketch holds as an exact set (every count here but the workspace's over weeks), else within
    the sketch's error."""
    monkeypatch.setattr(analytics, "EXACT_VISITORS_MAX_CLICKS", -1)  # the sketches always, not the raw recount
    rng = random.Random(1620)
    sources: dict[str, int] = {}
    for _ in range(400):
        params = _random_params(rng, world)
        q = parse_query(params, now=NOW)
        fast = await analytics.analytics(ctx, world["ws"], q)
        raw = await analytics.analytics(ctx, world["ws"], q, fast=False)
        assert fast == _within_sketch_error(raw), params
        how = analytics.plan(q)
        source = how.source
        sources[source] = sources.get(source, 0) + 1
        sources["link pairs"] = sources.get("link pairs", 0) + (how.bdim == "link")
        sources["scope"] = sources.get("scope", 0) + analytics._scoped(how)
        sources["few valued"] = sources.get("few valued", 0) + ((how.dim, how.bdim) in FEW_VALUED_PAIRS)
        if source in ("rollup", "cube", "pairs"):
            pieces, stale = await _pieces_read(ctx, world["ws"], q)
            busy = analytics._busy_link(how) and pieces is not None
            sources["busy link"] = sources.get("busy link", 0) + (busy and bool(pieces.days or pieces.hours))
            sources["stale weeks"] = sources.get("stale weeks", 0) + any(h == 168 for _, h in stale)
        if source in ("rollup", "cube"):
            sources["days read"] = sources.get("days read", 0) + bool(pieces and pieces.days)
            sources["stale days"] = sources.get("stale days", 0) + any(h == 24 for _, h in stale)
            # a series in a zone whose buckets start inside UTC hours: the other hours pre-aggregated
            split = q.group_by == "timeseries" and q.timezone in ("Asia/Kolkata", "Australia/Adelaide")
            sources["split buckets"] = sources.get("split buckets", 0) + bool(split and pieces and pieces.hours)
            sources["quarters read"] = sources.get("quarters read", 0) + bool(pieces and pieces.quartered)
    # the comparison exercised every source, not raw against raw; the link pairs; the day rows, and the hours
    # of days the late clicks changed since they were built; hours between split ones, and split ones' quarters;
    # and the days of weeks the late clicks changed (weeks read: test_pairs_read_the_whole_weeks_built)
    assert sources.get("rollup", 0) > 30 and sources.get("cube", 0) > 30 and sources.get("pairs", 0) > 30, sources
    # (a tag's or folder's rankings by a cube dimension: their own rows since, "scope")
    assert sources["link pairs"] >= 2 and sources["busy link"] >= 1 and sources["scope"] >= 5, sources
    assert sources["few valued"] >= 5, sources
    assert sources["days read"] > 30 and sources["stale days"] > 10, sources
    assert sources["split buckets"] >= 3 and sources["quarters read"] >= 3, sources
    assert sources["stale weeks"] >= 10, sources


async def _pieces_read(ctx: ServiceContext, ws: str, q: Any) -> tuple[Any, set[tuple[datetime, int]]]:
    """The weeks, days, hours and raw runs a pre-aggregated answer reads (None: raw rows only), and the weeks
    and days of its range marked built whose rows no longer hold the clicks stored (read from shorter periods)."""
    if q.needs_first_click:
        first = await ctx.pool.fetchval("SELECT min(ts) FROM clicks WHERE workspace_id = $1", ws)
        q = q.with_start(first or q.end)
    async with ctx.pool.acquire() as conn:
        how = analytics.plan(q)
        built = await analytics.built_pairs(conn, ws, q, analytics._reads_complete(q, how))
        used = await analytics.periods_read(conn, ws, q, how)  # as analytics() does
        marked = await conn.fetch(
            "SELECT period, hours FROM click_pairs_built"
            " WHERE hours IN (24, 168) AND period >= $1 AND period + make_interval(hours => hours) <= $2",
            q.start, q.end,
        )  # fmt: skip
    pieces = analytics._plan_pieces(q, how, used)
    return pieces, {(r["period"], r["hours"]) for r in marked} - built


async def test_the_questions_of_the_issue_are_not_read_from_raw_rows(world: dict[str, Any]) -> None:
    link = world["links"][0]["id"]
    fast = [
        {"groupBy": "countries", "device": "mobile"},
        {"groupBy": "devices", "country": "US", "os": "iOS"},
        {"groupBy": "timeseries", "utm_source": "newsletter"},
        {"groupBy": "count", "city": "London"},
        {"groupBy": "count", "tagId": world["tag"], "unique": "true"},
        {"groupBy": "count", "unique": "true"},
        {"groupBy": "timeseries", "unique": "true", "timezone": "Europe/Paris"},
        {"groupBy": "countries", "unique": "true"},
        {"groupBy": "devices", "unique": "true"},
        {"groupBy": "top_links", "unique": "true"},
        {"groupBy": "count", "linkId": link, "unique": "true", "interval": "all"},
        {"groupBy": "timeseries", "linkId": link, "unique": "true"},
        {"groupBy": "countries", "linkId": link, "unique": "true", "interval": "all"},
        {"groupBy": "devices", "linkId": link, "unique": "true", "interval": "all"},
        {"groupBy": "top_links", "device": "mobile"},
        {"groupBy": "browsers", "tagId": world["tag"]},
        {"groupBy": "count", "linkId": link, "device": "mobile"},
    ]
    for params in fast:
        q = parse_query({"interval": "30d", **params}, now=NOW)
        assert analytics.plan(q).source != "raw", params


async def test_unique_visitors_are_exact_for_few_clicks_and_within_the_stated_error_above(
    settings: Settings, pool: asyncpg.Pool, ctx: ServiceContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """12,000 visitors: exact while the range holds at most EXACT_VISITORS_MAX_CLICKS clicks (the raw
    rows recounted), else the sketch's estimate, within 3 % (about 2.5 standard errors of log2m 13)."""
    ws = await make_workspace(pool)
    link = await make_link(pool, ws)
    base = NOW - timedelta(hours=5)
    # 12,000 addresses in one UTC day: 12,000 visitors
    ips = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(12_000)]
    events = [click(link, ts=(base + timedelta(seconds=i % 7200)).timestamp(), ip=ip) for i, ip in enumerate(ips)]
    await store_clicks(settings, events, fold=True, batch=97)
    q = parse_query({"groupBy": "count", "unique": "true", "interval": "24h"}, now=NOW)
    assert analytics.plan(q).source == "rollup"
    assert await analytics.analytics(ctx, ws, q) == {"clicks": 12_000, "visitors": 12_000}
    monkeypatch.setattr(analytics, "EXACT_VISITORS_MAX_CLICKS", 10_000)
    estimate = await analytics.analytics(ctx, ws, q)
    assert estimate["clicks"] == 12_000
    assert abs(estimate["visitors"] - 12_000) <= 360, estimate
    by_link = await analytics.analytics(ctx, ws, parse_query({"groupBy": "top_links", "unique": "true"}, now=NOW))
    assert abs(by_link[0]["visitors"] - 12_000) <= 360, by_link


async def test_unique_visitors_of_few_clicks_are_recounted_from_raw_rows_only_when_an_index_finds_them(
    ctx: ServiceContext, world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Few clicks of one link (or of the whole workspace) are recounted exactly from the raw rows; a city's
    few clicks are not: finding them would scan every click of the range (2 s for 7 days of 10M clicks), and
    their sketches answer, exact at this size (explicit up to 640 visitors)."""
    raw_reads: list[dict[str, str]] = []
    answer = analytics._answer

    async def recorded(conn: Any, ws: str, q: Any, fast: bool, built: Any = frozenset()) -> Any:
        if not fast:
            raw_reads.append(dict(q.filters))
        return await answer(conn, ws, q, fast, built)

    monkeypatch.setattr(analytics, "_answer", recorded)
    link = world["links"][0]["id"]
    for params, recounted in (({"linkId": link}, True), ({"city": "London"}, False), ({"country": "US"}, False)):
        q = parse_query({"groupBy": "count", "unique": "true", "interval": "30d", **params}, now=NOW)
        raw_reads.clear()
        fast = await analytics.analytics(ctx, world["ws"], q)
        assert bool(raw_reads) == recounted, params
        assert 0 < fast["clicks"] <= analytics.EXACT_VISITORS_MAX_CLICKS
        assert fast == await analytics.analytics(ctx, world["ws"], q, fast=False), params


async def test_a_rebuild_from_the_raw_rows_gives_what_ingest_built(
    world: dict[str, Any], pool: asyncpg.Pool, settings: Settings
) -> None:
    """rebuild_rollup (bulk loads, repairs) recomputes the rollup and the cube, sketches included."""
    store = ClickStore(settings.database_url)
    try:
        assert await store.fold() is not None  # everything in click_rollups / click_cube, to compare rows
    finally:
        await store.close()
    rollup = (
        "SELECT dim, hour, value, bot, qr, clicks, hll_cardinality(visitors) FROM click_rollups WHERE workspace_id = $1"
    )
    cube = (
        "SELECT hour, bot, qr, country, device, browser, os, clicks, hll_cardinality(visitors) FROM click_cube"
        " WHERE workspace_id = $1"
    )

    async def rows() -> tuple[list[Any], list[Any]]:
        return (
            sorted(tuple(r) for r in await pool.fetch(rollup, world["ws"])),
            sorted(tuple(r) for r in await pool.fetch(cube, world["ws"])),
        )

    before = await rows()
    async with pool.acquire() as conn:
        await rebuild_rollup(conn, NOW - timedelta(days=60), NOW + timedelta(hours=1))
    after = await rows()
    assert after == before
    assert any(r[0] == "link" and r[6] for r in after[0])  # the link rows carry their visitors


async def test_each_one_filter_count_and_series_from_the_rollup_equal_the_raw_rows(
    ctx: ServiceContext, world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every filter's own rollup rows (city and region under every country code, a tag's or folder's links)."""
    monkeypatch.setattr(analytics, "EXACT_VISITORS_MAX_CLICKS", -1)
    rng = random.Random(7)
    values = {"city": "London", "region": "England", "tagId": world["tag"], "folderId": world["folder"],
              "domain": world["host"], "linkId": world["links"][2]["id"], "country": "GB", "device": "mobile",
              "referer": "t.co", "utm_source": "newsletter", "utm_campaign": "launch"}  # fmt: skip
    for name, value in values.items():
        for group_by in ("count", "timeseries"):
            for interval in ("7d", "30d"):
                params = {"groupBy": group_by, "interval": interval, name: value, "unique": rng.choice(["true", ""])}
                q = parse_query(params, now=NOW)
                if not q.unique:  # unique: from the rollup for the dimensions with sketches only
                    assert analytics.plan(q).source == "rollup", params
                fast = await analytics.analytics(ctx, world["ws"], q)
                assert fast == await analytics.analytics(ctx, world["ws"], q, fast=False), params
                if group_by == "count":
                    assert fast["clicks"] > 0, params  # the value is there: the comparison means something


async def test_ingest_job_and_a_rebuild_build_the_same_pairs_and_late_clicks_are_rebuilt(
    world: dict[str, Any], pool: asyncpg.Pool, settings: Settings
) -> None:
    """The periods the late clicks changed are read raw until the job's next run rebuilds them; then
    rebuild_rollup (bulk loads, repairs) makes exactly the rows the job made."""
    q = parse_query({"groupBy": "cities", "interval": "30d", "device": "mobile"}, now=NOW)
    pairs = (
        "SELECT period, hours, adim, avalue, bdim, bvalue, bot, qr, clicks, hll_cardinality(visitors) FROM click_pairs"
        " WHERE workspace_id = $1 AND period >= $2 ORDER BY 1, 2, 3, 4, 5, 6, 7, 8"
    )
    days = [
        "SELECT day, dim, value, bot, qr, clicks, hll_cardinality(visitors) FROM click_rollup_days"
        " WHERE workspace_id = $1 AND day >= $2 ORDER BY 1, 2, 3, 4, 5",
        "SELECT day, bot, qr, country, continent, device, browser, os, clicks, hll_cardinality(visitors)"
        " FROM click_cube_days WHERE workspace_id = $1 AND day >= $2 ORDER BY 1, 2, 3, 4, 5, 6, 7, 8",
        "SELECT quarter, bot, qr, clicks, hll_cardinality(visitors) FROM click_quarters"
        " WHERE workspace_id = $1 AND quarter >= $2 ORDER BY 1, 2, 3",
        "SELECT week, dim, value, bot, qr, clicks, hll_cardinality(visitors) FROM click_rollup_weeks"
        " WHERE workspace_id = $1 AND week >= $2 ORDER BY 1, 2, 3, 4, 5",
    ]
    since = (NOW - timedelta(days=40)).replace(hour=0, minute=0, second=0, microsecond=0)
    # late clicks into a built day and a built hour of the range (the tests before rebuilt the others)
    late = [(NOW - timedelta(days=9, hours=5)).timestamp(), (NOW - timedelta(hours=7)).timestamp()]
    await store_clicks(
        settings, [click(world["links"][0], ts=ts, ip=IPS[1], ua=UAS[1]) for ts in late], fold=False, batch=97
    )
    async with pool.acquire() as conn:
        built_marks = await conn.fetchval(  # built_pairs looks at the range's whole weeks
            "SELECT count(*) FROM click_pairs_built WHERE period >= $1 AND period < $2",
            floor_week(q.start),
            floor_week(q.end) + timedelta(days=7),
        )
        stale = built_marks - len(await analytics.built_pairs(conn, world["ws"], q))
        assert stale == 3  # the day, its week and the hour: read from shorter periods or raw rows meanwhile
        assert await _aggregate_pairs(settings, NOW) >= stale
        assert len(await analytics.built_pairs(conn, world["ws"], q)) == built_marks
        by_job = [[tuple(r) for r in await conn.fetch(sql, world["ws"], since)] for sql in (pairs, *days)]
        # as after a bulk load: the raw rows only (the rebuild makes the hours, then the days from them)
        for table, column in (
            ("click_rollups", "hour"),
            ("click_rollup_deltas", "hour"),
            ("click_cube", "hour"),
            ("click_cube_deltas", "hour"),
            ("click_rollup_days", "day"),
            ("click_cube_days", "day"),
            ("click_rollup_weeks", "week"),
        ):
            await conn.execute(f"DELETE FROM {table} WHERE workspace_id = $1 AND {column} >= $2", world["ws"], since)
        # the closed periods' quarters (a test before built the open hour's, with today as its "now")
        await conn.execute(
            "DELETE FROM click_quarters WHERE workspace_id = $1 AND quarter >= $2 AND quarter < $3",
            world["ws"], since, closed_before(NOW),
        )  # fmt: skip
        await rebuild_rollup(conn, since, NOW + timedelta(hours=1), now=NOW)
        by_rebuild = [[tuple(r) for r in await conn.fetch(sql, world["ws"], since)] for sql in (pairs, *days)]
    assert by_job == by_rebuild
    assert {r[1] for r in by_job[0]} == {1, 24, 168}  # hours, days and weeks
    assert any(r[4] == "" and r[9] for r in by_job[0])  # the single-dimension rows carry their visitors
    assert len(by_job[1]) > 100 and len(by_job[2]) > 100  # the days' rollup and cube rows
    assert any(r[1] == "link" and r[6] for r in by_job[1]) and all(r[9] for r in by_job[2])  # with their visitors
    assert any(r[4] == "link" for r in by_job[0]) and len(by_job[3]) > 100  # link pairs; quarters
    assert any(r[1] == 168 and r[4] == "link" and r[9] for r in by_job[0])  # weeks: link pairs, sketches
    assert any(r[1] == "link" and r[6] for r in by_job[4])  # the rollup's weeks, with their visitors


async def test_pairs_and_rollup_answers_read_the_whole_weeks_built(
    ctx: ServiceContext, world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the job rebuilt the periods the late clicks changed (the test before), a pairs or rollup ranking or
    count over a range holding whole UTC weeks reads their week rows (summed from the days), and still gives
    the raw rows' answer, visitors from the weeks' sketches included; a time series reads no weeks."""
    monkeypatch.setattr(analytics, "EXACT_VISITORS_MAX_CLICKS", -1)  # the sketches, not the raw recount
    link = world["links"][0]["id"]
    pairs = [
        {"groupBy": "top_links", "device": "mobile"},
        {"groupBy": "countries", "tagId": world["tag"], "unique": "true"},  # (clicks only: the tag's own rows)
        {"groupBy": "cities", "country": "US"},
        {"groupBy": "count", "utm_source": "newsletter", "unique": "true"},
        {"groupBy": "devices", "linkId": link, "unique": "true"},
        {"groupBy": "count", "os": "iOS", "referer": "google.com"},
        {"groupBy": "top_links", "domain": world["host"]},
        {"groupBy": "referers", "utm_source": "twitter"},
        {"groupBy": "utm_mediums", "city": "London"},
    ]
    rollup = [
        {"groupBy": "top_links"},
        {"groupBy": "top_links", "unique": "true"},
        {"groupBy": "cities"},
        {"groupBy": "countries", "unique": "true"},
        {"groupBy": "count", "country": "US", "unique": "true"},
        {"groupBy": "count", "tagId": world["tag"]},
    ]
    for source, params in [*(("pairs", p) for p in pairs), *(("rollup", p) for p in rollup)]:
        for interval in ("30d", "90d"):
            q = parse_query({**params, "interval": interval}, now=NOW)
            assert analytics.plan(q).source == source, params
            pieces, stale = await _pieces_read(ctx, world["ws"], q)
            assert pieces and len(pieces.weeks) >= 4 and not stale, (params, interval)
            fast = await analytics.analytics(ctx, world["ws"], q)
            assert fast == await analytics.analytics(ctx, world["ws"], q, fast=False), (params, interval)
    for params in ({"device": "mobile", "city": "London"}, {}):  # the pairs', the rollup's
        series = parse_query({"groupBy": "timeseries", "interval": "30d", **params}, now=NOW)
        pieces, _ = await _pieces_read(ctx, world["ws"], series)
        assert pieces and not pieces.weeks and len(pieces.days) >= 20


async def test_the_job_rebuilds_a_period_that_late_clicks_changed_only_once_they_stop_landing(
    world: dict[str, Any], pool: asyncpg.Pool, settings: Settings
) -> None:
    """A backlog replayed into a closed hour (ingest catching up) is not rebuilt on every run while it
    lands: the job waits for a run that finds the hour's clicks unchanged, then rebuilds it once."""
    q = parse_query({"groupBy": "cities", "interval": "24h", "device": "mobile"}, now=NOW)
    hour_ago = (NOW - timedelta(hours=5)).timestamp()
    seen: dict[tuple[datetime, int], int] = {}
    conn = await asyncpg.connect(settings.database_url)
    try:

        async def job() -> int | None:
            weeks = timedelta(days=45)  # as _aggregate_pairs
            return await aggregate_closed_periods(conn, NOW, lookback=weeks, limit=100, late_check=weeks, seen=seen)

        async def usable() -> int:  # the built periods a 24h question reads from the pairs
            async with pool.acquire() as c:
                return len(await analytics.built_pairs(c, world["ws"], q))

        assert await job() == 0  # everything built by the tests before
        built = await usable()
        for landing in range(3):  # a batch lands between each two runs: still changing, not rebuilt
            await store_clicks(
                settings, [click(world["links"][0], ts=hour_ago - landing, ip=IPS[2], ua=UAS[2])], fold=False, batch=97
            )
            assert await job() == 0
            assert await usable() == built - 1  # read from the raw rows meanwhile
        assert await job() == 1  # unchanged since the last run: rebuilt now
        assert await usable() == built
        assert await job() == 0
    finally:
        await conn.close()


async def test_each_pairs_question_over_each_interval_equals_the_raw_rows(
    ctx: ServiceContext, world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The questions click_pairs answers, over 24h (hour rows), 7d and 30d (days, hours and raw edges), in
    UTC and in a zone whose days are not UTC days (the days' rows left out of a daily series there): with a
    high-cardinality dimension or the link (one link, a tag's or a folder's links) on one side, or a domain, a
    UTM source or medium and another high-cardinality dimension or the link, asked from either side."""
    monkeypatch.setattr(analytics, "EXACT_VISITORS_MAX_CLICKS", -1)
    link = world["links"][0]["id"]
    questions = [
        {"groupBy": "countries", "linkId": link},
        {"groupBy": "countries", "linkId": link, "unique": "true"},
        {"groupBy": "devices", "tagId": world["tag"], "unique": "true"},
        {"groupBy": "os", "folderId": world["folder"]},
        {"groupBy": "top_links", "device": "mobile", "unique": "true"},
        {"groupBy": "top_links", "browser": "Chrome"},
        {"groupBy": "timeseries", "linkId": link, "country": "US", "unique": "true"},
        {"groupBy": "count", "tagId": world["tag"], "os": "iOS"},
        {"groupBy": "cities", "device": "mobile"},
        {"groupBy": "referers", "country": "US"},
        {"groupBy": "utm_sources", "browser": "Chrome"},
        {"groupBy": "countries", "referer": "t.co"},
        {"groupBy": "devices", "city": "London"},
        {"groupBy": "count", "country": "US", "utm_source": "newsletter"},
        {"groupBy": "timeseries", "device": "desktop", "referer": "google.com"},
        {"groupBy": "count", "city": "London", "unique": "true"},
        {"groupBy": "timeseries", "utm_source": "twitter", "unique": "true"},
        {"groupBy": "cities", "domain": world["host"]},
        {"groupBy": "top_links", "domain": world["host"]},
        {"groupBy": "referers", "domain": "localhost", "includeBots": "true"},
        {"groupBy": "count", "domain": world["host"], "utm_source": "newsletter"},
        {"groupBy": "timeseries", "domain": world["host"], "linkId": link},
        {"groupBy": "cities", "utm_source": "newsletter"},
        {"groupBy": "top_links", "utm_medium": "email", "includeBots": "true"},
        {"groupBy": "utm_campaigns", "utm_source": "twitter"},
        {"groupBy": "utm_sources", "city": "London"},
        {"groupBy": "utm_mediums", "linkId": link},
        {"groupBy": "referers", "utm_medium": "email"},
        {"groupBy": "count", "referer": "t.co", "utm_source": "twitter"},
        {"groupBy": "timeseries", "utm_medium": "email", "linkId": link},
    ]
    few_valued = 0
    for params in questions:
        for interval in ("24h", "7d", "30d"):
            for zone in ("UTC", "America/New_York"):
                q = parse_query({**params, "interval": interval, "timezone": zone}, now=NOW)
                how = analytics.plan(q)
                assert how.source == "pairs", params
                few_valued += (how.dim, how.bdim) in FEW_VALUED_PAIRS
                fast = await analytics.analytics(ctx, world["ws"], q)
                assert fast == await analytics.analytics(ctx, world["ws"], q, fast=False), (params, interval, zone)
    assert few_valued == 13 * 6  # the domain's five questions and the UTM source's and medium's eight


async def test_a_links_cities_referrers_and_utm_read_its_busy_periods_rows_and_its_raw_rows_elsewhere(
    ctx: ServiceContext, world: dict[str, Any], pool: asyncpg.Pool
) -> None:
    """A link's rankings by a high-cardinality dimension: the busy links' rows of the periods in which it had at
    least BUSY_LINK_CLICKS clicks (this module: 4 a day, 2 an hour), its raw rows for the others; every answer
    equal to the raw rows', over hour rows (24h), days and both ends (7d, 30d), and all-time."""
    ws = world["ws"]
    marked = await pool.fetch(
        "SELECT avalue AS link, period, hours, sum(clicks) AS clicks FROM click_pairs"
        " WHERE workspace_id = $1 AND adim = 'link' AND bdim = '' GROUP BY 1, 2, 3",
        ws,
    )  # fmt: skip
    stored = await pool.fetch(
        "SELECT link_id AS link, date_trunc('day', ts, 'UTC') AS period, 24 AS hours, count(*) AS clicks FROM clicks"
        " WHERE workspace_id = $1 AND link_id IS NOT NULL GROUP BY 1, 2"
        " UNION ALL SELECT link_id, date_trunc('hour', ts), 1, count(*) FROM clicks"
        " WHERE workspace_id = $1 AND link_id IS NOT NULL AND ts >= $2 GROUP BY 1, 2",
        ws, NOW - timedelta(hours=50),
    )  # fmt: skip
    busy = {(r["link"], r["period"], r["hours"]): r["clicks"] for r in marked}
    clicks = {(r["link"], r["period"], r["hours"]): r["clicks"] for r in stored}
    # a marker for exactly the busy periods built, with the link's clicks (but those of the late clicks)
    late = {datetime.fromtimestamp(e.ts, UTC).replace(minute=0, second=0, microsecond=0) for e in world["late"]}
    late |= {t.replace(hour=0) for t in late}
    assert busy and all(clicks[key] == n for key, n in busy.items() if key[1] not in late)
    threshold = {DAY: BUSY_LINK_CLICKS[DAY], HOUR: BUSY_LINK_CLICKS[HOUR]}
    assert all(clicks.get(key, 0) >= threshold[key[2]] for key in busy)
    quiet = [key for key, n in clicks.items() if n < threshold[key[2]]]
    assert quiet and not any(key in busy for key in quiet)

    reads = {"busy": 0, "quiet": 0}
    for link in world["links"]:
        for params in (
            {"groupBy": "cities"},
            {"groupBy": "regions"},
            {"groupBy": "referers"},
            {"groupBy": "referer_urls"},
            {"groupBy": "utm_campaigns"},
            {"groupBy": "utm_terms", "includeBots": "true"},
            {"groupBy": "utm_contents", "qr": "true"},
            {"groupBy": "count", "utm_campaign": "launch"},
            {"groupBy": "timeseries", "referer": "t.co"},
            {"groupBy": "timeseries", "city": "London", "timezone": "Asia/Kolkata"},
        ):
            for interval in ("24h", "7d", "30d", "all"):
                q = parse_query({**params, "linkId": link["id"], "interval": interval}, now=NOW)
                assert analytics._busy_link(analytics.plan(q)), params
                fast = await analytics.analytics(ctx, ws, q)
                assert fast == await analytics.analytics(ctx, ws, q, fast=False), (params, link, interval)
                pieces, _ = await _pieces_read(ctx, ws, q)
                if pieces is not None:
                    periods = [(p, DAY) for p in pieces.days] + [(p, HOUR) for p in pieces.hours]
                    read = [(link["id"], p, h) in busy for p, h in periods]
                    reads["busy"] += any(read)
                    reads["quiet"] += not all(read)
    assert reads["busy"] > 50 and reads["quiet"] > 50, reads


async def test_a_tags_and_folders_rankings_read_their_rows_and_their_raw_rows_where_their_links_changed(
    ctx: ServiceContext, world: dict[str, Any], pool: asyncpg.Pool, settings: Settings
) -> None:
    """A tag's or folder's rankings by every dimension but the link, and its count and series with one more
    filter, read its own rows (ingest/pairs.py SCOPE_SQL) in the periods whose marker has the fingerprint of
    its links now. A link tagged or moved into the folder since: those periods are its raw rows, until the job
    rebuilds them. Every answer equal to the raw rows', before, meanwhile and after."""
    ws, tag, folder = world["ws"], world["tag"], world["folder"]
    questions = [
        {"groupBy": "cities"},
        {"groupBy": "regions", "includeBots": "true"},
        {"groupBy": "referers"},
        {"groupBy": "referer_urls", "qr": "true"},
        {"groupBy": "utm_sources"},
        {"groupBy": "utm_campaigns"},
        {"groupBy": "countries"},
        {"groupBy": "browsers"},
        {"groupBy": "count", "city": "London"},
        {"groupBy": "timeseries", "referer": "t.co"},
        {"groupBy": "timeseries", "country": "US", "timezone": "America/New_York"},
    ]

    async def answers_equal_the_raw_rows() -> dict[str, int]:
        reads = {"rows": 0, "raw": 0}
        for scope in ({"tagId": tag}, {"folderId": folder}):
            for params in questions:
                for interval in ("24h", "7d", "30d", "all"):
                    q = parse_query({**params, **scope, "interval": interval}, now=NOW)
                    assert analytics._scoped(analytics.plan(q)), params
                    fast = await analytics.analytics(ctx, ws, q)
                    assert fast == await analytics.analytics(ctx, ws, q, fast=False), (params, scope, interval)
                    pieces, _ = await _pieces_read(ctx, ws, q)
                    if pieces is not None:
                        kind, scope_id = ("tag", tag) if "tagId" in scope else ("folder", folder)
                        # of the periods read in which the workspace has clicks (a marker is due): how many
                        # have a marker with the fingerprint of the scope's links now
                        row = await pool.fetchrow(
                            "SELECT count(*) AS due, count(*) FILTER (WHERE EXISTS (SELECT 1 FROM click_pairs AS m"
                            "  WHERE m.workspace_id = $1 AND m.adim = $2 AND m.avalue = $3 AND m.bdim = ''"
                            "   AND m.period = d.period AND m.hours = d.hours AND m.bvalue = "
                            + scope_fingerprint(kind, "$3")
                            + ")) AS fresh FROM (SELECT DISTINCT period, hours FROM click_pairs"
                            "  WHERE workspace_id = $1 AND adim = 'domain' AND bdim = ''"
                            "   AND (period = ANY($4::timestamptz[]) AND hours = 24"
                            "        OR period = ANY($5::timestamptz[]) AND hours = 1)) AS d",
                            ws, kind, scope_id, pieces.days, pieces.hours,
                        )  # fmt: skip
                        reads["rows"] += row["fresh"]
                        reads["raw"] += row["due"] - row["fresh"]
        return reads

    async with pool.acquire() as conn:
        assert not await stale_scope_periods(conn, NOW - timedelta(days=44))
    reads = await answers_equal_the_raw_rows()
    assert reads["rows"] > 300 and reads["raw"] == 0, reads
    # a link tagged, another moved into the folder: every period of theirs is stale
    untagged, outside = world["links"][3]["id"], world["links"][1]["id"]  # (links 0-2 tagged; 0, 3, 6 in it)
    await pool.execute("INSERT INTO link_tags (link_id, tag_id) VALUES ($1, $2)", untagged, tag)
    await pool.execute("UPDATE links SET folder_id = $1 WHERE id = $2", folder, outside)
    try:
        async with pool.acquire() as conn:
            stale = await stale_scope_periods(conn, NOW - timedelta(days=44))
        assert len(stale) > 40, stale
        reads = await answers_equal_the_raw_rows()
        assert reads["raw"] > 300 and reads["rows"] == 0, reads
        assert await _aggregate_pairs(settings, NOW) > 0
        async with pool.acquire() as conn:
            assert not await stale_scope_periods(conn, NOW - timedelta(days=44))
        reads = await answers_equal_the_raw_rows()
        assert reads["rows"] > 300 and reads["raw"] == 0, reads
    finally:  # the world as the other tests know it
        await pool.execute("DELETE FROM link_tags WHERE link_id = $1 AND tag_id = $2", untagged, tag)
        await pool.execute("UPDATE links SET folder_id = NULL WHERE id = $1", outside)
        await _aggregate_pairs(settings, NOW)


async def test_a_day_without_its_link_pairs_is_read_raw_for_link_questions_until_the_job_rebuilds_it(
    world: dict[str, Any], pool: asyncpg.Pool, ctx: ServiceContext, settings: Settings
) -> None:
    """Migration 0024: a day built before it has no link rows, and one rebuilt by an ingest process of the
    previous release (a rolling upgrade) has lost them; a link question reads neither from the day's rows,
    other questions still do, and the job rebuilds both."""
    day = (NOW - timedelta(days=16)).replace(hour=0, minute=0, second=0, microsecond=0)
    q = parse_query({"groupBy": "countries", "linkId": world["links"][0]["id"], "interval": "30d"}, now=NOW)
    other = parse_query({"groupBy": "cities", "device": "mobile", "interval": "30d"}, now=NOW)
    expected = await analytics.analytics(ctx, world["ws"], q, fast=False)
    link_rows = "SELECT count(*) FROM click_pairs WHERE period = $1 AND hours = 24 AND bdim = 'link'"
    async with pool.acquire() as conn:
        assert (day, 24) in await analytics.built_pairs(conn, world["ws"], q, complete=True)
        # the previous release's rebuild of the day: its rows without the link rows, and its mark
        await conn.execute("DELETE FROM click_pairs WHERE period = $1 AND hours = 24 AND bdim = 'link'", day)
        await conn.execute(
            "INSERT INTO click_pairs_built (period, hours) VALUES ($1, $2)"
            " ON CONFLICT (period, hours) DO UPDATE SET built_at = now()",
            day, 24,
        )  # fmt: skip
        assert (day, 24) in await analytics.built_pairs(conn, world["ws"], other)
        assert (day, 24) not in await analytics.built_pairs(conn, world["ws"], q, complete=True)
        assert await analytics.analytics(ctx, world["ws"], q) == expected
        # as built before the migration
        await conn.execute("UPDATE click_pairs_built SET complete_at = NULL WHERE period = $1 AND hours = 24", day)
        assert (day, 24) not in await analytics.built_pairs(conn, world["ws"], q, complete=True)
        assert await analytics.analytics(ctx, world["ws"], q) == expected
        assert await _aggregate_pairs(settings, NOW) >= 1
        assert await conn.fetchval(link_rows, day) > 0
        assert (day, 24) in await analytics.built_pairs(conn, world["ws"], q, complete=True)
    assert await analytics.analytics(ctx, world["ws"], q) == expected


async def test_after_migration_0025_a_links_cities_are_read_raw_until_the_job_rebuilds_its_busy_rows(
    world: dict[str, Any], pool: asyncpg.Pool, ctx: ServiceContext, settings: Settings
) -> None:
    """Days and hours built before migration 0025 have no busy links' rows: the migration clears their complete
    mark (not the weeks', whose rows it does not change), a link's cities are read from its raw rows meanwhile,
    and the job rebuilds those periods with them."""
    link = world["links"][1]["id"]
    q = parse_query({"groupBy": "cities", "linkId": link, "interval": "30d"}, now=NOW)
    expected = await analytics.analytics(ctx, world["ws"], q, fast=False)
    migration = (Path(db.__file__).parent / "migrations" / "0025_busy_link_pairs.sql").read_text()
    complete = "SELECT hours, count(*) FROM click_pairs_built WHERE complete_at = built_at GROUP BY 1"
    async with pool.acquire() as conn:
        weeks = {r["hours"]: r["count"] for r in await conn.fetch(complete)}[168]
        await conn.execute("DELETE FROM click_pairs WHERE adim = 'link'")  # as built by the previous release
        await conn.execute(migration)
        assert {r["hours"]: r["count"] for r in await conn.fetch(complete)} == {168: weeks}
        days_and_hours = [
            p for p in await analytics.periods_read(conn, world["ws"], q, analytics.plan(q)) if p[1] < 168
        ]
        assert not days_and_hours
        assert await analytics.analytics(ctx, world["ws"], q) == expected
        assert await _aggregate_pairs(settings, NOW) > 30
        days_and_hours = [
            p for p in await analytics.periods_read(conn, world["ws"], q, analytics.plan(q)) if p[1] < 168
        ]
        assert len(days_and_hours) > 25
        assert await conn.fetchval("SELECT count(*) FROM click_pairs WHERE adim = 'link' AND bdim = 'city'") > 0
    assert await analytics.analytics(ctx, world["ws"], q) == expected


_UTM_PAIRS = "0029_utm_source_and_medium_pairs.sql"


@pytest.mark.parametrize(
    ("migration", "adims", "params"),
    [
        ("0028_domain_and_scope_pairs.sql", ("domain",), {"groupBy": "cities", "domain": "{host}"}),
        (_UTM_PAIRS, ("utm_source", "utm_medium"), {"groupBy": "cities", "utm_source": "twitter"}),
        (_UTM_PAIRS, ("utm_source", "utm_medium"), {"groupBy": "utm_mediums", "city": "London"}),
    ],
)
async def test_after_the_migration_that_adds_its_pairs_a_few_valued_dimensions_cities_are_read_raw_until_rebuilt(
    world: dict[str, Any],
    pool: asyncpg.Pool,
    ctx: ServiceContext,
    settings: Settings,
    migration: str,
    adims: tuple[str, ...],
    params: dict[str, str],
) -> None:
    """Periods built before migration 0028 have no domain pairs, before 0029 no UTM source or medium pairs:
    the migration clears every complete mark (days, hours, weeks), a domain's (a source's) cities are read from
    the raw rows meanwhile while other questions still read the built periods, and the job rebuilds them with
    those pairs."""
    params = {name: value.format(host=world["host"]) for name, value in params.items()}
    q = parse_query({**params, "interval": "30d"}, now=NOW)
    other = parse_query({"groupBy": "cities", "device": "mobile", "interval": "30d"}, now=NOW)
    expected = await analytics.analytics(ctx, world["ws"], q, fast=False)
    sql = (Path(db.__file__).parent / "migrations" / migration).read_text()
    pair_rows = "SELECT count(*) FROM click_pairs WHERE adim = ANY($1::text[]) AND bdim <> ''"
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM click_pairs WHERE adim = ANY($1::text[]) AND bdim <> ''", adims)  # before
        await conn.execute(sql)
        assert not await analytics.periods_read(conn, world["ws"], q, analytics.plan(q))
        assert len(await analytics.periods_read(conn, world["ws"], other, analytics.plan(other))) > 25
        assert await analytics.analytics(ctx, world["ws"], q) == expected
        assert await _aggregate_pairs(settings, NOW) > 30
        read = await analytics.periods_read(conn, world["ws"], q, analytics.plan(q))
        assert len([p for p in read if p[1] == 168]) >= 4 and len(read) > 25
        assert await conn.fetchval(pair_rows, adims) > 0
    assert await analytics.analytics(ctx, world["ws"], q) == expected


async def test_after_migration_0027_weeks_are_read_as_days_until_the_job_builds_their_rollup_rows(
    world: dict[str, Any], pool: asyncpg.Pool, ctx: ServiceContext, settings: Settings
) -> None:
    """Weeks built before migration 0027 have their pairs but no click_rollup_weeks rows: the migration clears
    their complete mark, their days answer meanwhile (for the pairs too: one mark governs both), and the job
    rebuilds them with their rollup rows."""
    questions = [
        parse_query({"groupBy": "top_links", "interval": "30d"}, now=NOW),
        parse_query({"groupBy": "top_links", "device": "mobile", "interval": "30d"}, now=NOW),
    ]
    expected = [await analytics.analytics(ctx, world["ws"], q, fast=False) for q in questions]
    migration = (Path(db.__file__).parent / "migrations" / "0027_rollup_weeks.sql").read_text()
    clear_marks = [line for line in migration.splitlines() if line.startswith("UPDATE")]  # the table exists

    async def weeks_read() -> list[int]:
        async with pool.acquire() as conn:
            read = [await analytics.periods_read(conn, world["ws"], q, analytics.plan(q)) for q in questions]
        return [sum(1 for _, hours in periods if hours == 168) for periods in read]

    assert min(await weeks_read()) >= 4
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM click_rollup_weeks")  # as built by the previous release
        await conn.execute(*clear_marks)
    assert await weeks_read() == [0, 0]
    assert [await analytics.analytics(ctx, world["ws"], q) for q in questions] == expected
    assert await _aggregate_pairs(settings, NOW) >= 4
    assert min(await weeks_read()) >= 4
    assert [await analytics.analytics(ctx, world["ws"], q) for q in questions] == expected


async def test_a_click_stored_late_into_a_ranges_last_day_is_not_offset_by_the_clicks_after_its_end(
    settings: Settings, pool: asyncpg.Pool, ctx: ServiceContext
) -> None:
    """Whether a built day still holds every click stored is checked over the whole day: a click stored
    late into the range's last day and one already built after the range's end that day do not cancel
    out (they did while the check summed the rollup's hours up to the range's end only)."""
    ws = await make_workspace(pool)
    link = await make_link(pool, ws)
    day = (NOW - timedelta(days=20)).replace(hour=0, minute=0, second=0, microsecond=0)
    built = [click(link, ts=(day + timedelta(hours=h)).timestamp(), ip=IPS[1], ua=UAS[1]) for h in (2, 22)]
    await store_clicks(settings, built, fold=True, batch=97)
    async with pool.acquire() as conn, conn.transaction():
        await build_period(conn, day, 24)
    late = click(link, ts=(day + timedelta(hours=15)).timestamp(), ip=IPS[1], ua=UAS[1])
    await store_clicks(settings, [late], fold=False, batch=97)
    end = day + timedelta(hours=20, minutes=30)  # the day's row minus 20:30–24:00 (the 22:00 click)
    params = {"groupBy": "cities", "device": "mobile", "start": day.isoformat(), "end": end.isoformat()}
    q = parse_query(params, now=NOW)
    assert analytics.plan(q).source == "pairs"
    fast = await analytics.analytics(ctx, ws, q)
    assert fast == await analytics.analytics(ctx, ws, q, fast=False)
    assert [r["clicks"] for r in fast] == [2]


async def test_a_value_met_only_in_the_subtracted_rest_of_a_day_is_not_in_the_ranking(
    settings: Settings, pool: asyncpg.Pool, ctx: ServiceContext
) -> None:
    """A range from 03:00 to the end of a built day reads the day's row minus its first three hours: a city
    clicked only before 03:00 nets zero and is left out, as the raw rows leave it out."""
    ws = await make_workspace(pool)
    link = await make_link(pool, ws)
    day = (NOW - timedelta(days=12)).replace(hour=0, minute=0, second=0, microsecond=0)
    before = click(link, ts=(day + timedelta(hours=2)).timestamp(), ip=IPS[1], ua=UAS[1])  # London, before start
    inside = click(link, ts=(day + timedelta(hours=20)).timestamp(), ip=IPS[5], ua=UAS[1])  # Milton, inside
    await store_clicks(settings, [before, inside], fold=True, batch=97)
    async with pool.acquire() as conn, conn.transaction():
        await build_period(conn, day, 24)
    start = day + timedelta(hours=3)
    params = {
        "groupBy": "cities",
        "device": "mobile",
        "start": start.isoformat(),
        "end": (day + timedelta(days=1)).isoformat(),
    }
    q = parse_query(params, now=NOW)
    assert analytics.plan(q).source == "pairs"
    fast = await analytics.analytics(ctx, ws, q)
    assert fast == await analytics.analytics(ctx, ws, q, fast=False)
    assert len(fast) == 1 and fast[0]["city"] != "London"  # the city clicked inside the range only


async def test_a_day_whose_rows_miss_clicks_of_its_hours_is_read_from_the_hours_until_the_job_rebuilds_it(
    settings: Settings, pool: asyncpg.Pool, ctx: ServiceContext
) -> None:
    """A batch committed between a day's pairs and its day rows (two statements) is in the pairs and not in
    the day rows: the day is not whole (its hours answer), and the job rebuilds it."""
    ws = await make_workspace(pool)
    link = await make_link(pool, ws)
    day = (NOW - timedelta(days=11)).replace(hour=0, minute=0, second=0, microsecond=0)
    at = [(day + timedelta(hours=h, minutes=7)).timestamp() for h in (1, 5, 22)]
    await store_clicks(settings, [click(link, ts=ts, ip=IPS[i], ua=UAS[i]) for i, ts in enumerate(at)], fold=True)
    async with pool.acquire() as conn, conn.transaction():
        await build_period(conn, day, 24)
    late = click(link, ts=(day + timedelta(hours=9)).timestamp(), ip=IPS[3], ua=UAS[3])
    await store_clicks(settings, [late], fold=True)
    async with pool.acquire() as conn, conn.transaction():  # the pairs see the late click, the day rows do not
        await conn.execute("DELETE FROM click_pairs WHERE period = $1 AND hours = 24", day)
        for sql in BUILD_SQL:
            await conn.execute(sql, day, day + timedelta(days=1), 24)
    questions = [{"groupBy": "count"}, {"groupBy": "countries"}, {"groupBy": "browsers", "device": "desktop"},
                 {"groupBy": "timeseries", "unique": "true"}]  # fmt: skip
    span = {"start": (day - timedelta(days=1)).isoformat(), "end": (day + timedelta(days=2)).isoformat()}

    async def check(whole: bool) -> None:
        for params in questions:
            q = parse_query({**params, **span}, now=NOW)
            assert analytics.plan(q).source in ("rollup", "cube"), params
            async with pool.acquire() as conn:
                built = await analytics.built_pairs(conn, ws, q)
            assert ((day, 24) in built) == whole
            assert await analytics.analytics(ctx, ws, q) == await analytics.analytics(ctx, ws, q, fast=False), params

    await check(whole=False)
    assert await _aggregate_pairs(settings, NOW) >= 1
    await check(whole=True)
    assert (await analytics.analytics(ctx, ws, parse_query({"groupBy": "count", **span}, now=NOW)))["clicks"] == 4


async def test_unique_visitors_over_built_days_hours_and_raw_edges_are_within_the_sketch_error(
    settings: Settings, pool: asyncpg.Pool, ctx: ServiceContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """12,000 visitors on three built days, 1,500 in the hours after them: the day sketches unioned with the
    hours' and the partial hour's raw sketch, within 3 % of the distinct count (about 2.5 standard errors)."""
    monkeypatch.setattr(analytics, "EXACT_VISITORS_MAX_CLICKS", -1)
    ws = await make_workspace(pool)
    links = [await make_link(pool, ws) for _ in range(3)]
    first = (NOW - timedelta(days=15)).replace(hour=0, minute=0, second=0, microsecond=0)
    events = [
        click(links[i % 3], ts=(first + timedelta(days=i // 4000, seconds=i % 4000 * 20)).timestamp(),
              ip=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
        for i in range(12_000)
    ] + [
        click(links[i % 3], ts=(first + timedelta(days=3, seconds=i * 6)).timestamp(), ip=f"10.9.{i // 256}.{i % 256}")
        for i in range(1_500)
    ]  # fmt: skip
    await store_clicks(settings, events, fold=True, batch=500)
    async with pool.acquire() as conn, conn.transaction():
        for d in range(3):
            await build_period(conn, first + timedelta(days=d), 24)
    span = {
        "start": (first - timedelta(minutes=20)).isoformat(),
        "end": (first + timedelta(days=3, hours=2, minutes=5)).isoformat(),
    }
    for params in ({"groupBy": "count"}, {"groupBy": "top_links"}, {"groupBy": "devices"}, {"groupBy": "timeseries"}):
        q = parse_query({**params, **span, "unique": "true"}, now=NOW)
        pieces, _ = await _pieces_read(ctx, ws, q)
        assert pieces and len(pieces.days) == 3 or params["groupBy"] == "timeseries", (
            params
        )  # days from 23:40 UTC: hour buckets
        fast, raw = await analytics.analytics(ctx, ws, q), await analytics.analytics(ctx, ws, q, fast=False)
        rows = [fast] if isinstance(fast, dict) else fast
        raw_rows = [raw] if isinstance(raw, dict) else raw
        assert [r["clicks"] for r in rows] == [r["clicks"] for r in raw_rows], params
        for got, want in zip(rows, raw_rows, strict=True):
            assert abs(got["visitors"] - want["visitors"]) <= max(0.03 * want["visitors"], 0), (params, got, want)
    whole = parse_query({"groupBy": "count", "unique": "true", "start": first.isoformat(),
                         "end": (first + timedelta(days=3)).isoformat()}, now=NOW)  # fmt: skip
    pieces, _ = await _pieces_read(ctx, ws, whole)
    assert pieces and len(pieces.days) == 3
    estimate = await analytics.analytics(ctx, ws, whole)
    assert estimate["clicks"] == 12_000 and abs(estimate["visitors"] - 12_000) <= 360, estimate


# migration 0022's backfill of the days built before it
_BACKFILL = next(
    line
    for line in (Path(db.__file__).parent / "migrations" / "0022_rollup_days.sql").read_text().splitlines()
    if line.startswith("SELECT build_click_days(")
)


async def test_the_migrations_backfill_makes_the_day_rows_the_job_makes(settings: Settings) -> None:
    """Days built before migration 0022 (their pairs marked built, no day rows): the migration's backfill
    statement makes their day rows, equal to ``build_days``', and none for the days not built. (The statement
    is run on today's schema: ingest cannot store clicks into a database at 0021 any more.)"""
    url = settings.database_url + "_m22"
    await db.migrate(url)
    local = dataclasses.replace(settings, database_url=url)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        ws = await make_workspace(pool)
        link = await make_link(pool, ws)
        first = (NOW - timedelta(days=6)).replace(hour=0, minute=0, second=0, microsecond=0)
        rng = random.Random(22)
        events = [
            click(link, ts=(first + timedelta(seconds=rng.random() * 4 * 86400)).timestamp(), ip=rng.choice(IPS),
                  ua=rng.choice(UAS), referer=rng.choice(REFERERS), qr=rng.random() < 0.2)
            for _ in range(400)
        ]  # fmt: skip
        await store_clicks(local, events[:300], fold=True, batch=50)
        await store_clicks(local, events[300:], fold=False, batch=50)  # increments too
        built = [first, first + timedelta(days=2)]  # as the job at 0021 marked them (day 1 and 3 not built)
        await pool.executemany("INSERT INTO click_pairs_built (period, hours) VALUES ($1, 24)", [(d,) for d in built])
        await pool.execute(_BACKFILL)
        queries = [
            "SELECT day, dim, value, bot, qr, clicks, hll_cardinality(visitors)::int FROM click_rollup_days"
            " ORDER BY 1, 2, 3, 4, 5",
            "SELECT day, bot, qr, country, continent, device, browser, os, clicks, hll_cardinality(visitors)::int"
            " FROM click_cube_days ORDER BY 1, 2, 3, 4, 5, 6, 7, 8",
        ]
        by_migration = [[tuple(r) for r in await pool.fetch(sql)] for sql in queries]
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM click_rollup_days")
            await conn.execute("DELETE FROM click_cube_days")
            for day in built:
                await build_days(conn, [day])
        by_job = [[tuple(r) for r in await pool.fetch(sql)] for sql in queries]
        assert by_migration == by_job
        assert {r[0] for r in by_job[0]} == set(built) == {r[0] for r in by_job[1]}
        on_built = [
            e
            for e in events
            if datetime.fromtimestamp(e.ts, UTC).replace(hour=0, minute=0, second=0, microsecond=0) in built
        ]
        assert sum(r[5] for r in by_job[0] if r[1] == "count") == len(on_built) > 0
    finally:
        await pool.close()
        await db.drop_database(url)


async def test_series_in_half_hour_zones_read_the_hours_a_bucket_starts_in_from_quarters_or_raw_rows(
    ctx: ServiceContext, world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asia/Kolkata (+05:30), Asia/Kathmandu (+05:45) and Australia/Adelaide (+10:30/+09:30, a DST change in
    the range) days start inside a UTC hour. Those hours: from click_quarters for a series of all clicks,
    from the raw rows with a filter; the other hours from the rollup or cube; equal to the raw rows'
    series. Hour buckets there split every hour: quarters only, or raw rows only with a filter."""
    monkeypatch.setattr(analytics, "EXACT_VISITORS_MAX_CLICKS", -1)
    questions = [{}, {"unique": "true"}, {"qr": "false"}, {"country": "US"}, {"device": "mobile", "os": "iOS"}]
    for zone in ("Asia/Kolkata", "Asia/Kathmandu", "Australia/Adelaide"):
        for interval in ("24h", "7d", "30d", "90d"):
            for params in questions:
                q = parse_query({"groupBy": "timeseries", "interval": interval, "timezone": zone, **params}, now=NOW)
                how = analytics.plan(q)
                assert how.source in ("rollup", "cube"), params
                pieces, _ = await _pieces_read(ctx, world["ws"], q)
                everything = how.source == "rollup" and not q.filters  # the workspace's clicks: quarters
                assert analytics._quarters_serve(q, how) == everything, params
                if everything:
                    assert pieces is not None
                    quartered, runs = pieces.quartered, pieces.runs
                    # only the partial hours at the range's ends are raw (a run per day without quarters); 90d:
                    # and the days before the 45 the job built here
                    assert len(quartered) >= (23 if interval == "24h" else 7), (zone, interval)
                    assert len(runs) <= 2 or interval == "90d", (zone, interval)
                elif interval == "24h":
                    assert pieces is None  # hour buckets: every hour split
                else:
                    assert pieces is not None
                    days, hours, quartered, runs = pieces.days, pieces.hours, pieces.quartered, pieces.runs
                    assert not days and not quartered and len(hours) > 100 and len(runs) >= 7, (zone, interval)
                fast = await analytics.analytics(ctx, world["ws"], q)
                assert fast == await analytics.analytics(ctx, world["ws"], q, fast=False), (zone, interval, params)
