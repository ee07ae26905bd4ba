"""Ingest test helpers: per-test topics and group, a producer, workspaces and links in Postgres."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from api import db
from api.ids import new_id, random_slug
from h0p_settings import Settings, load_settings
from tests.conftest import PG_BASE, REDIS_BASE
from tests.services import Broker
from redirect.events import EVENT_VERSION, ClickEvent, encode, new_event_id, partition_key

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)


@pytest.fixture(scope="session")
def settings(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Same as tests/conftest.py's fixture, flushing Redis in a single event loop.

    Workaround: the root fixture closes its Redis client in a second ``asyncio.run`` and fails
    with "Event loop is closed"; drop this override once tests/conftest.py is fixed.
    """
    suffix = f"{os.getpid()}_{random.randrange(10**6)}"
    tmp = tmp_path_factory.mktemp("h0p")
    s = load_settings(
        {
            "H0P_DATABASE_URL": f"{PG_BASE}/h0p_test_{suffix}",
            "H0P_REDIS_URL": f"{REDIS_BASE}/{random.randrange(1, 16)}",
            "H0P_KAFKA_BOOTSTRAP": broker.bootstrap,
            "H0P_KAFKA_TOPIC": f"clicks-{suffix}",
            "H0P_KAFKA_DEAD_LETTER_TOPIC": f"clicks-dlq-{suffix}",
            "H0P_KAFKA_GROUP": f"ingest-{suffix}",
            "H0P_SPOOL_DIR": str(Path(tmp) / "spool"),
            "H0P_FILES_DIR": str(Path(tmp) / "files"),
            "H0P_SECRET_KEY": "test-secret",
            "H0P_EVENT_LINGER_MS": "5",
            "H0P_INGEST_LINGER_MS": "50",
        }
    )
    asyncio.run(db.migrate(s.database_url))
    yield s
    asyncio.run(db.drop_database(s.database_url))


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
