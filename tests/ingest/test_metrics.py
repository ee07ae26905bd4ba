"""An operator scrapes an ingest process: what it stored, skipped and dead-lettered."""

from __future__ import annotations

import asyncpg
import httpx
from aiokafka import AIOKafkaProducer

from h0p_settings import Settings
from ingest.consumer import running_consumer
from ingest.metrics import MetricsServer
from tests.ingest.conftest import click, count_clicks, make_link, make_workspace, publish, publish_raw, wait_until


def _value(page: str, name: str) -> float:
    for line in page.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in the scrape")


async def test_metrics_count_stored_and_dead_lettered_events(
    ingest_settings: Settings, pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    link = await make_link(pool, await make_workspace(pool))
    await publish(producer, ingest_settings.kafka_topic, [click(link), click(link), click(link)])
    await publish_raw(producer, ingest_settings.kafka_topic, [b"not json"])

    async with running_consumer(ingest_settings) as consumer:
        metrics = MetricsServer(consumer.stats, "127.0.0.1", 0)
        try:
            await wait_until(lambda: _stored(pool, link["id"], 3), what="3 rows")
            await wait_until(lambda: _dead_lettered(consumer.stats.dead_lettered), what="a dead letter")
            async with httpx.AsyncClient() as client:
                page = (await client.get(f"http://127.0.0.1:{metrics.port}/metrics")).text
        finally:
            metrics.close()

    assert _value(page, "h0p_ingest_events_stored_total") == 3
    assert _value(page, "h0p_ingest_events_dead_lettered_total") == 1
    assert _value(page, "h0p_ingest_events_received_total") == 4
    assert _value(page, "h0p_ingest_events_duplicate_total") == 0


async def _stored(pool: asyncpg.Pool, link_id: str, n: int) -> bool:
    return await count_clicks(pool, link_id) == n


async def _dead_lettered(n: int) -> bool:
    return n >= 1
