"""Ingest test helpers: per-test topics and group, a producer, workspaces and links in Postgres."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from api.ids import new_id, random_slug
from h0p_settings import Settings
from ingest.enrich.row import Enricher
from ingest.links import LinkDirectory
from ingest.live import LivePublisher
from ingest.store import ClickStore
from redirect.events import EVENT_VERSION, ClickEvent, encode, new_event_id, partition_key

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)


@pytest.fixture
def ingest_settings(settings: Settings) -> Settings:
    """The session settings with a topic, dead-letter topic and group of this test alone."""
    tag = uuid.uuid4().hex[:8]
    return dataclasses.replace(
        settings,
        kafka_topic=f"{settings.kafka_topic}-{tag}",
        kafka_dead_letter_topic=f"{settings.kafka_dead_letter_topic}-{tag}",
        kafka_group=f"{settings.kafka_group}-{tag}",
        ingest_batch_size=500,
        ingest_session_timeout_ms=1500,  # Tansu answers JoinGroup after half of it: fast starts
    )


@pytest.fixture
async def producer(ingest_settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(bootstrap_servers=ingest_settings.kafka_bootstrap, request_timeout_ms=10_000)
    await p.start()
    yield p
    await p.stop()


async def publish(producer: AIOKafkaProducer, topic: str, events: list[ClickEvent]) -> None:
    """Send events and wait until the broker has all of them."""
    futures = [await producer.send(topic, encode(e), key=partition_key(e)) for e in events]
    await asyncio.gather(*futures)


async def publish_raw(producer: AIOKafkaProducer, topic: str, values: list[bytes]) -> None:
    futures = [await producer.send(topic, v, key=b"raw") for v in values]
    await asyncio.gather(*futures)


def click(link: dict[str, Any] | None = None, **kw: Any) -> ClickEvent:
    """A click on ``link`` (an orphan when None) with realistic defaults; ``kw`` overrides fields."""
    ts = kw.pop("ts", time.time())
    base: dict[str, Any] = {
        "v": EVENT_VERSION,
        "id": new_event_id(ts),
        "ts": ts,
        "domain": link["domain"] if link else "localhost",
        "slug": link["slug"] if link else "nope",
        "link_id": link["id"] if link else None,
        "workspace_id": link["workspace_id"] if link else None,
        "url": link["url"] if link else None,
        "ip": "8.8.8.8",
        "ua": CHROME,
    }
    base.update(kw)
    return ClickEvent(**base)


async def make_workspace(pool: asyncpg.Pool) -> str:
    ws = new_id("ws")
    await pool.execute("INSERT INTO workspaces (id, name) VALUES ($1, $2)", ws, ws)
    return ws


async def make_link(pool: asyncpg.Pool, workspace_id: str, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": new_id("link"),
        "workspace_id": workspace_id,
        "domain": "localhost",
        "slug": random_slug(10),
        "url": "https://example.com/landing",
    }
    row.update(fields)
    cols = ", ".join(row)
    marks = ", ".join(f"${i}" for i in range(1, len(row) + 1))
    await pool.execute(f"INSERT INTO links ({cols}) VALUES ({marks})", *row.values())
    return row


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def count_clicks(pool: asyncpg.Pool, link_id: str) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM clicks WHERE link_id = $1", link_id))


async def store_clicks(
    settings: Settings,
    events: list[ClickEvent],
    *,
    fold: bool = False,
    batch: int | None = None,
    live: LivePublisher | None = None,
) -> int:
    """Enrich and write like the consumer does (rollup, cube and counters included), without Kafka:
    in batches of ``batch`` events (one batch by default), folded into the rollup if ``fold``,
    published to ``live``'s streams. Returns how many rows were written."""
    links = LinkDirectory()
    enricher = Enricher(settings, links)
    store = ClickStore(settings.database_url, live=live)
    written = 0
    try:
        conn = await store.connection()
        await links.load(conn, [e.link_id for e in events if e.link_id], [e.domain for e in events])
        size = batch or max(len(events), 1)
        for start in range(0, len(events), size):
            written += await store.write([enricher.row(e, uuid.UUID(e.id)) for e in events[start : start + size]])
        if fold:
            assert await store.fold()
    finally:
        await store.close()
        enricher.close()
    return written
