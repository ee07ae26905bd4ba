"""An operator scrapes an ingest process: what it stored, skipped and dead-lettered."""

from __future__ import annotations

import asyncio
import os
import socket
import sys

import asyncpg
import httpx
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

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


async def test_a_second_process_on_a_taken_metrics_port_stops_with_one_line_before_joining(
    ingest_settings: Settings,
) -> None:
    """Two ingest processes on one host need a port each: the second says so, and takes no partition."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("H0P_")} | {
            "H0P_DATABASE_URL": ingest_settings.database_url,
            "H0P_KAFKA_BOOTSTRAP": ingest_settings.kafka_bootstrap,
            "H0P_KAFKA_TOPIC": ingest_settings.kafka_topic,
            "H0P_KAFKA_GROUP": ingest_settings.kafka_group,
            "H0P_BIND_HOST": "127.0.0.1",
            "H0P_INGEST_METRICS_PORT": str(port),
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ingest.consumer", env=env, stderr=asyncio.subprocess.PIPE
        )
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert f"127.0.0.1:{port}" in lines[0] and "H0P_INGEST_METRICS_PORT" in lines[0]
    admin = AIOKafkaAdminClient(bootstrap_servers=ingest_settings.kafka_bootstrap)
    await admin.start()
    try:
        groups = {group[0] for group in await admin.list_consumer_groups()}
    finally:
        await admin.close()
    assert ingest_settings.kafka_group not in groups
