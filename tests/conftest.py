"""Fixtures that start real services: a fresh Postgres database, a Redis db index, the broker."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from api import db
from h0p_settings import Settings, load_settings
from tests.redis_server import RedisServer
from tests.services import Broker

PG_BASE = os.environ.get("H0P_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    b = Broker().start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """The session's own redis-server on a free port: the machine's Redis (and whatever stack
    uses it) is never read, written or flushed by the tests."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def settings(broker: Broker, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings for one test session: its own database, Redis server, broker and spool dir."""
    suffix = f"{os.getpid()}_{random.randrange(10**6)}"
    database_url = f"{PG_BASE}/h0p_test_{suffix}"
    tmp = tmp_path_factory.mktemp("h0p")
    s = load_settings(
        {
            "H0P_DATABASE_URL": database_url,
            "H0P_REDIS_URL": redis_server.url,
            "H0P_KAFKA_BOOTSTRAP": broker.bootstrap,
            "H0P_KAFKA_TOPIC": f"clicks-{suffix}",
            "H0P_KAFKA_DEAD_LETTER_TOPIC": f"clicks-dlq-{suffix}",
            "H0P_KAFKA_GROUP": f"ingest-{suffix}",
            "H0P_SPOOL_DIR": str(Path(tmp) / "spool"),
            "H0P_FILES_DIR": str(Path(tmp) / "files"),
            "H0P_SECRET_KEY": "test-secret-of-the-test-session-0123456789",
            "H0P_EVENT_LINGER_MS": "5",
            "H0P_INGEST_LINGER_MS": "50",
            "H0P_EDGE_METRICS_PORT": "0",  # edges of a session run side by side; a test gives its own port
            # One Tansu broker: one copy of each topic; 4 partitions, as its auto-creation makes them.
            "H0P_KAFKA_PARTITIONS": "4",
            "H0P_KAFKA_REPLICATION": "1",
            "H0P_KAFKA_MIN_INSYNC": "1",
        }
    )
    asyncio.run(db.migrate(s.database_url))
    yield s
    asyncio.run(db.drop_database(s.database_url))


@pytest.fixture(scope="session")
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(settings.database_url, max_size=8)
    yield p
    await p.close()


@pytest.fixture(scope="session")
async def redis(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    r = aioredis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    yield r
    await r.aclose()
