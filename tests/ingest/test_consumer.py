"""The ingest consumer against the real broker and Postgres: stored once, enriched, counted."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from h0p_settings import Settings
from ingest.consumer import running_consumer
from tests.ingest.conftest import (
    click,
    count_clicks,
    make_link,
    make_workspace,
    publish,
    publish_raw,
    wait_until,
)
from tests.ingest.proxy import TcpProxy

GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.2 Mobile/15E148 Safari/604.1"
)


async def test_clicks_are_stored_enriched_and_humans_counted_on_the_link(
    ingest_settings: Settings, pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    ws = await make_workspace(pool)
    link = await make_link(pool, ws, utm_source="newsletter", utm_medium="email")
    human = click(link, referer="https://www.google.com/search?q=h0p", query="utm_source=twitter&x=1")
    mobile_qr = click(link, ua=IPHONE, ip="81.2.69.142", qr=True)
    crawler = click(link, ua=GOOGLEBOT)
    head = click(link, method="HEAD")
    await publish(producer, ingest_settings.kafka_topic, [human, mobile_qr, crawler, head])

    async with running_consumer(ingest_settings):
        await wait_until(lambda: _has(pool, link["id"], 4), what="4 rows")

    rows = {str(r["event_id"]): r for r in await pool.fetch("SELECT * FROM clicks WHERE link_id = $1", link["id"])}
    r = rows[human.id]
    assert (r["country"], r["city"], r["continent"]) == ("US", "Mountain View", "NA")
    assert (r["device"], r["browser"], r["os"]) == ("desktop", "Chrome", "Windows")
    assert (r["referer"], r["referer_url"]) == ("google.com", "https://www.google.com/search?q=h0p")
    assert (r["utm_source"], r["utm_medium"]) == ("twitter", "email")  # landing query wins, link fills in
    assert r["workspace_id"] == ws and not r["bot"] and not r["qr"]
    assert r["ip"] is None and r["visitor"] != 0  # no raw IP by default, a keyed visitor hash instead
    m = rows[mobile_qr.id]
    assert (m["country"], m["device"], m["os"], m["qr"]) == ("GB", "mobile", "iOS", True)
    assert (m["utm_source"], m["referer"]) == ("newsletter", "")
    assert rows[crawler.id]["bot"] and rows[crawler.id]["device"] == "bot"
    assert rows[head.id]["bot"]

    counters = await pool.fetchrow("SELECT clicks, last_clicked_at FROM link_counters WHERE link_id = $1", link["id"])
    assert counters["clicks"] == 2  # bots are stored, not counted
    assert abs(counters["last_clicked_at"].timestamp() - max(human.ts, mobile_qr.ts)) < 0.001


async def test_same_visitor_same_day_has_one_hash_and_another_day_another(
    ingest_settings: Settings, pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    ws = await make_workspace(pool)
    link = await make_link(pool, ws)
    now = time.time()
    events = [click(link, ts=now - 1), click(link, ts=now), click(link, ts=now - 86400 * 2), click(link, ip="1.1.1.1")]
    await publish(producer, ingest_settings.kafka_topic, events)
    async with running_consumer(ingest_settings):
        await wait_until(lambda: _has(pool, link["id"], 4))
    hashes = {
        str(r["event_id"]): r["visitor"]
        for r in await pool.fetch("SELECT event_id, visitor FROM clicks WHERE link_id = $1", link["id"])
    }
    assert hashes[events[0].id] == hashes[events[1].id]
    assert len({hashes[events[1].id], hashes[events[2].id], hashes[events[3].id]}) == 3


async def test_orphan_hits_are_stored_under_the_workspace_owning_the_domain(
    ingest_settings: Settings, pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    ws = await make_workspace(pool)
    host = f"go-{ws.lower()[-8:]}.example"
    await pool.execute(
        "INSERT INTO domains (id, workspace_id, hostname, verification_token) VALUES ($1, $2, $3, 't')",
        f"dom_{ws}", ws, host,
    )  # fmt: skip
    on_custom = click(None, domain=host, slug="missing")
    on_default = click(None, domain="localhost", slug="missing-too")
    await publish(producer, ingest_settings.kafka_topic, [on_custom, on_default])
    async with running_consumer(ingest_settings):
        await wait_until(lambda: _event_stored(pool, on_default.id))
        await wait_until(lambda: _event_stored(pool, on_custom.id))
    row = await pool.fetchrow("SELECT workspace_id, link_id, slug FROM clicks WHERE event_id = $1", on_custom.id)
    assert (row["workspace_id"], row["link_id"], row["slug"]) == (ws, None, "missing")
    assert await pool.fetchval("SELECT workspace_id FROM clicks WHERE event_id = $1", on_default.id) is None


async def test_redelivered_events_are_stored_once_and_counted_once(
    ingest_settings: Settings, pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    ws = await make_workspace(pool)
    link = await make_link(pool, ws)
    events = [click(link) for _ in range(50)]
    await publish(producer, ingest_settings.kafka_topic, events + events[:30])  # at-least-once upstream
    async with running_consumer(ingest_settings) as consumer:
        await wait_until(lambda: _stats_at(consumer.stats.received, 80))
    assert await count_clicks(pool, link["id"]) == 50
    assert consumer.stats.duplicates == 30
    assert await pool.fetchval("SELECT clicks FROM link_counters WHERE link_id = $1", link["id"]) == 50
    rollup = await pool.fetchval(
        "SELECT sum(clicks) FROM click_rollup_totals WHERE workspace_id = $1 AND dim = 'count'", ws
    )
    assert rollup == 50


async def test_rollup_increments_are_folded_while_the_consumer_runs(
    ingest_settings: Settings, pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    ws = await make_workspace(pool)
    link = await make_link(pool, ws)
    await publish(producer, ingest_settings.kafka_topic, [click(link) for _ in range(20)])

    async def folded() -> bool:
        sql = "SELECT coalesce(sum(clicks), 0) FROM {} WHERE workspace_id = $1 AND dim = 'count'"
        unfolded = await pool.fetchval(sql.format("click_rollup_deltas"), ws)
        return bool(await pool.fetchval(sql.format("click_rollups"), ws) == 20 and unfolded == 0)

    async with running_consumer(ingest_settings):
        await wait_until(folded, timeout=15, what="the 20 clicks folded into click_rollups")


async def test_the_consumer_aggregates_closed_hours_into_click_pairs_beside_its_folds(
    ingest_settings: Settings, pool: asyncpg.Pool, producer: AIOKafkaProducer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clicks of an hour closed 3 hours ago end up in click_pairs, built from the stored rows by the
    ingest process's own background job (whether the hour was built before they came or not)."""
    monkeypatch.setattr("ingest.consumer._PAIRS_EVERY_S", 0.5)  # instead of every 30 s
    ws = await make_workspace(pool)
    link = await make_link(pool, ws)
    ts = time.time() - 3 * 3600
    await publish(producer, ingest_settings.kafka_topic, [click(link, ts=ts, ip="81.2.69.142") for _ in range(20)])
    hour = int(ts // 3600 * 3600)

    async def built() -> bool:
        total = await pool.fetchval(
            "SELECT coalesce(sum(clicks), 0) FROM click_pairs WHERE workspace_id = $1 AND adim = 'domain'"
            " AND bdim = '' AND hours = 1 AND period = to_timestamp($2)",
            ws, hour,
        )  # fmt: skip
        return bool(total == 20)

    async with running_consumer(ingest_settings):
        await wait_until(built, timeout=30, what="the hour's 20 clicks in click_pairs")
    by_country = await pool.fetch(
        "SELECT adim, avalue, bdim, bvalue, sum(clicks) AS n FROM click_pairs WHERE workspace_id = $1"
        " AND period = to_timestamp($2) AND bdim = 'domain' AND NOT bot GROUP BY 1, 2, 3, 4",
        ws, hour,
    )  # fmt: skip
    assert ("country", "GB", "domain", link["domain"], 20) in [tuple(r) for r in by_country]


class _Crash(Exception):
    pass


async def test_a_crash_between_database_commit_and_offset_commit_stores_each_event_once(
    ingest_settings: Settings, pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    ws = await make_workspace(pool)
    link = await make_link(pool, ws)
    events = [click(link) for _ in range(120)]
    await publish(producer, ingest_settings.kafka_topic, events)

    async def crash(_: int) -> None:
        raise _Crash  # the rows are committed in Postgres; the Kafka offsets are not

    with pytest.raises(_Crash):
        async with running_consumer(ingest_settings, after_write=crash):
            await wait_until(lambda: _has(pool, link["id"], 1), what="first batch written")
            await asyncio.sleep(0.5)
    written_before_restart = await count_clicks(pool, link["id"])
    assert written_before_restart > 0

    async with running_consumer(ingest_settings) as consumer:
        await wait_until(lambda: _has(pool, link["id"], 120))
        await wait_until(lambda: _stats_at(consumer.stats.received, 120), what="redelivery of the whole topic")
    assert await count_clicks(pool, link["id"]) == 120
    assert consumer.stats.duplicates == written_before_restart
    assert await pool.fetchval("SELECT clicks FROM link_counters WHERE link_id = $1", link["id"]) == 120


async def test_malformed_events_are_dead_lettered_and_the_partition_keeps_moving(
    ingest_settings: Settings, pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    ws = await make_workspace(pool)
    link = await make_link(pool, ws)
    bad = [
        b"not json",
        b'{"v": 99, "id": "x"}',  # a version this consumer does not know
        b'{"v": 1, "id": "0190a1b2-0000-7000-8000-000000000000", "ts": 12.0, "domain": "d", "slug": "s"}',
        b'{"v": 1, "id": "not-a-uuid", "ts": 1700000000.0, "domain": "d", "slug": "s"}',
    ]
    await publish_raw(producer, ingest_settings.kafka_topic, bad)
    good = click(link)
    await publish(producer, ingest_settings.kafka_topic, [good])

    async with running_consumer(ingest_settings) as consumer:
        await wait_until(lambda: _has(pool, link["id"], 1), what="the good event after the bad ones")
        await wait_until(lambda: _stats_at(consumer.stats.dead_lettered, 4))

    letters = AIOKafkaConsumer(
        ingest_settings.kafka_dead_letter_topic,
        bootstrap_servers=ingest_settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await letters.start()
    try:
        got = []
        deadline = time.monotonic() + 10
        while len(got) < 4 and time.monotonic() < deadline:
            for batch in (await letters.getmany(timeout_ms=500)).values():
                got.extend(batch)
    finally:
        await letters.stop()
    assert sorted(m.value for m in got) == sorted(bad)
    reasons = [dict(m.headers)["h0p-error"].decode() for m in got]
    assert any("UnknownVersion" in r for r in reasons) and any("timestamp" in r for r in reasons)
    assert all(dict(m.headers)["h0p-source"].decode().startswith(ingest_settings.kafka_topic) for m in got)


async def test_shutdown_finishes_and_commits_the_batch_in_hand(
    ingest_settings: Settings, pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    ws = await make_workspace(pool)
    link = await make_link(pool, ws)
    await publish(producer, ingest_settings.kafka_topic, [click(link) for _ in range(40)])
    async with running_consumer(ingest_settings) as consumer:
        await wait_until(lambda: _stats_at(consumer.stats.received, 1))
    # leaving the block returned only after the batch was stored and its offsets committed
    assert await count_clicks(pool, link["id"]) == consumer.stats.stored
    committed = await _committed_total(ingest_settings)
    assert committed == consumer.stats.received


@pytest.mark.chaos
async def test_postgres_outage_pauses_ingest_and_loses_nothing(
    ingest_settings: Settings, pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    ws = await make_workspace(pool)
    link = await make_link(pool, ws)
    parts = urlsplit(ingest_settings.database_url)
    proxy = await TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432).start()
    via_proxy = dataclasses.replace(
        ingest_settings,
        database_url=urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}")),
    )
    try:
        async with running_consumer(via_proxy) as consumer:
            await publish(producer, ingest_settings.kafka_topic, [click(link) for _ in range(30)])
            await wait_until(lambda: _has(pool, link["id"], 30), what="rows before the outage")
            await proxy.cut()
            await publish(producer, ingest_settings.kafka_topic, [click(link) for _ in range(70)])
            await wait_until(lambda: _stats_at(consumer.stats.db_retries, 2), what="retries during the outage")
            assert await count_clicks(pool, link["id"]) == 30
            await proxy.restore()
            await wait_until(lambda: _has(pool, link["id"], 100), timeout=20, what="catch-up after the outage")
    finally:
        await proxy.close()
    assert await count_clicks(pool, link["id"]) == 100
    assert await pool.fetchval("SELECT clicks FROM link_counters WHERE link_id = $1", link["id"]) == 100
    assert await _committed_total(ingest_settings) == 100


async def _has(pool: asyncpg.Pool, link_id: str, n: int) -> bool:
    return await count_clicks(pool, link_id) >= n


async def _event_stored(pool: asyncpg.Pool, event_id: str) -> bool:
    return bool(await pool.fetchval("SELECT count(*) FROM clicks WHERE event_id = $1", event_id))


async def _stats_at(value: int, n: int) -> bool:
    return value >= n


async def _committed_total(settings: Settings) -> int:
    c = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=settings.kafka_group)
    await c.start()
    try:
        partitions = c.partitions_for_topic(settings.kafka_topic) or set()
        if not partitions:
            await c._client.force_metadata_update()
            partitions = c.partitions_for_topic(settings.kafka_topic) or set()
        total = 0
        for p in partitions:
            total += await c.committed(TopicPartition(settings.kafka_topic, p)) or 0
        return total
    finally:
        await c.stop()
