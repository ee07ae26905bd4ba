"""The write path without Kafka: rollups and link counters computed in Python equal the SQL truth."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg

from h0p_settings import Settings
from ingest.enrich.row import Enricher
from ingest.links import LinkDirectory
from ingest.store import _DIMS_VALUES, ClickStore
from redirect.events import ClickEvent
from tests.ingest.conftest import click, make_link, make_workspace

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.2 Mobile/15E148 Safari/604.1"
)
IPS = ["8.8.8.8", "81.2.69.142", "2a00:1450:4001:80b::200e", "1.1.1.1", "10.0.0.1", ""]
UAS = [IPHONE, "curl/8.5.0", "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", ""]
REFERERS = ["", "https://www.google.com/search?q=1", "https://t.co/abc"]
QUERIES = ["", "utm_source=news&utm_medium=email", "utm_campaign=launch&utm_term=x&utm_content=y"]

# What the rollup must hold: the former SQL rollup, computed over the raw rows stored.
TRUTH_SQL = f"""
SELECT d.dim, date_trunc('hour', ts, 'UTC') AS hour, d.value, bot, qr, count(*) AS clicks
FROM clicks CROSS JOIN LATERAL (VALUES {_DIMS_VALUES}) AS d(dim, value)
WHERE workspace_id = $1
GROUP BY 1, 2, 3, 4, 5
ORDER BY 1, 2, 3, 4, 5
"""


def _events(links: list[dict[str, Any]], n: int) -> list[ClickEvent]:
    now = time.time()
    out = []
    for i in range(n):
        link = links[i % len(links)]
        out.append(
            click(
                link,
                ts=now - (i % 7) * 1900,  # several hours
                ip=IPS[i % len(IPS)],
                ua=UAS[i % len(UAS)] if i % 3 else IPHONE,
                referer=REFERERS[i % len(REFERERS)],
                query=QUERIES[i % len(QUERIES)],
                qr=i % 5 == 0,
                method="HEAD" if i % 11 == 0 else "GET",
            )
        )
    return out


async def test_rollups_and_counters_equal_the_raw_rows_after_fresh_redelivered_and_repeated_events(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    ws = await make_workspace(pool)
    links = [await make_link(pool, ws, utm_medium="social"), await make_link(pool, ws)]
    host = f"go-{ws.lower()[-8:]}.example"
    await pool.execute(
        "INSERT INTO domains (id, workspace_id, hostname, verification_token) VALUES ($1, $2, $3, 't')",
        f"dom_{ws}", ws, host,
    )  # fmt: skip
    events = _events(links, 100) + [click(None, domain=host, slug="gone", ip="8.8.8.8") for _ in range(3)]
    directory = LinkDirectory()
    enricher = Enricher(settings, directory)
    store = ClickStore(settings.database_url)
    try:
        conn = await store.connection()
        await directory.load(conn, [lk["id"] for lk in links], [host])
        rows = [enricher.row(e, uuid.UUID(e.id)) for e in events]
        assert await store.write(rows[:60]) == 60  # all new: the fast path
        # 20 already stored (a redelivery), one event twice in the batch, 43 new: the slow path
        assert await store.write(rows[40:] + rows[70:71]) == 43
        assert await store.write(rows[:10]) == 0
        assert await store.write(rows[100:] + _fresh(enricher, events[:2])) == 2  # back to the fast path
    finally:
        await store.close()
        enricher.close()

    truth = [tuple(r) for r in await pool.fetch(TRUTH_SQL, ws)]
    assert await _rollup(pool, "click_rollup_totals", ws) == truth  # what analytics reads, before any fold
    store = ClickStore(settings.database_url)
    try:
        assert await store.fold()  # the increments of the batches above (and of anything else unfolded)
    finally:
        await store.close()
    assert await pool.fetchval("SELECT count(*) FROM click_rollup_deltas WHERE workspace_id = $1", ws) == 0
    assert await _rollup(pool, "click_rollups", ws) == truth  # one row per key once folded
    assert await pool.fetchval("SELECT count(*) FROM clicks WHERE workspace_id = $1", ws) == 105
    for link in links:
        expected = await pool.fetchrow(
            "SELECT count(*) AS n, max(ts) AS last FROM clicks WHERE link_id = $1 AND NOT bot", link["id"]
        )
        got = await pool.fetchrow("SELECT clicks, last_clicked_at FROM link_counters WHERE link_id = $1", link["id"])
        assert (got["clicks"], got["last_clicked_at"]) == (expected["n"], expected["last"])
        assert expected["n"] > 0


async def _rollup(pool: asyncpg.Pool, table: str, ws: str) -> list[tuple[Any, ...]]:
    return [
        tuple(r)
        for r in await pool.fetch(
            f"SELECT dim, hour, value, bot, qr, sum(clicks) FROM {table} WHERE workspace_id = $1"
            " GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5",
            ws,
        )
    ]


async def test_two_processes_writing_one_workspace_do_not_wait_for_each_other(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """Batches of one workspace and hour share rollup keys; a second writer must not queue behind the first.

    Each writer has its own links, as Kafka's keying by link gives each ingest process its own.
    """
    ws = await make_workspace(pool)
    links = [await make_link(pool, ws), await make_link(pool, ws)]
    directory = LinkDirectory()
    enricher = Enricher(settings, directory)
    first, second = ClickStore(settings.database_url), ClickStore(settings.database_url)
    try:
        await directory.load(await first.connection(), [lk["id"] for lk in links], [])
        now = time.time()
        rows = [
            [enricher.row(e, uuid.UUID(e.id)) for e in (click(link, ts=now, ip="8.8.8.8") for _ in range(50))]
            for link in links
        ]
        conn = await first.connection()
        held = conn.transaction()  # the first writer's batch stays uncommitted (its locks held) meanwhile
        await held.start()
        try:
            assert await first.write(rows[0]) == 50
            assert await asyncio.wait_for(second.write(rows[1]), timeout=10) == 50
        finally:
            await held.commit()
        assert await second.fold() is not None
    finally:
        await first.close()
        await second.close()
        enricher.close()
    counts = await pool.fetchval(
        "SELECT sum(clicks) FROM click_rollup_totals WHERE workspace_id = $1 AND dim = 'count'", ws
    )
    assert counts == 100
    assert await pool.fetchval("SELECT sum(clicks) FROM link_counters WHERE workspace_id = $1", ws) == 100


def _fresh(enricher: Enricher, events: list[ClickEvent]) -> list[tuple[Any, ...]]:
    """Rows for copies of ``events`` under new ids (new clicks, same shape)."""
    from redirect.events import new_event_id

    out = []
    for e in events:
        copy = ClickEvent(**{f: getattr(e, f) for f in e.__struct_fields__} | {"id": new_event_id(e.ts)})
        out.append(enricher.row(copy, uuid.UUID(copy.id)))
    return out


# Each link's and each cube row's sketch as made straight from the raw rows (HLL_ARGS of ingest/sketch.py).
RAW_SKETCHES_SQL = """
SELECT 'link' AS kind, link_id AS key, hll_add_agg(hll_hash_bigint(visitor), 13, 5, -1, 0)::text AS sketch
FROM clicks WHERE workspace_id = $1 GROUP BY date_trunc('hour', ts, 'UTC'), bot, qr, link_id
UNION ALL
SELECT 'cube', concat_ws('|', country, continent, device, browser, os),
       hll_add_agg(hll_hash_bigint(visitor), 13, 5, -1, 0)::text
FROM clicks WHERE workspace_id = $1
GROUP BY date_trunc('hour', ts, 'UTC'), bot, qr, country, continent, device, browser, os
ORDER BY 1, 2, 3
"""
STORED_SKETCHES_SQL = """
SELECT 'link' AS kind, value AS key, visitors::text AS sketch FROM {rollup} WHERE workspace_id = $1 AND dim = 'link'
UNION ALL
SELECT 'cube', concat_ws('|', country, continent, device, browser, os), visitors::text
FROM {cube} WHERE workspace_id = $1
ORDER BY 1, 2, 3
"""


async def test_a_visitor_clicking_many_times_counts_once_in_the_unique_visitors(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    # one person (one address and agent) clicking 40 times among 4 others: 5 unique visitors of the
    # link, in the sketches analytics reads before the fold and after it, equal to the raw rows'
    ws = await make_workspace(pool)
    link = await make_link(pool, ws)
    now = time.time()
    events = [click(link, ts=now, ip="81.2.69.142", ua=IPHONE) for _ in range(40)]
    events += [click(link, ts=now, ip=f"8.8.4.{i}", ua=IPHONE) for i in range(1, 5)]
    directory = LinkDirectory()
    enricher = Enricher(settings, directory)
    store = ClickStore(settings.database_url)
    try:
        await directory.load(await store.connection(), [link["id"]], [])
        assert await store.write([enricher.row(e, uuid.UUID(e.id)) for e in events]) == 44
        raw = [tuple(r) for r in await pool.fetch(RAW_SKETCHES_SQL, ws)]
        unfolded = STORED_SKETCHES_SQL.format(rollup="click_rollup_totals", cube="click_cube_totals")
        assert [tuple(r) for r in await pool.fetch(unfolded, ws)] == raw
        assert await store.fold() is not None
    finally:
        await store.close()
        enricher.close()
    folded = STORED_SKETCHES_SQL.format(rollup="click_rollups", cube="click_cube")
    assert [tuple(r) for r in await pool.fetch(folded, ws)] == raw
    uniques = "SELECT hll_cardinality(visitors) FROM click_rollups WHERE workspace_id = $1 AND dim = 'link'"
    assert await pool.fetchval(uniques, ws) == 5
