"""Fixtures of the edge tests: links written as the API writes them, the edge in-process or served."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import secrets
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
import redis.asyncio as aioredis
import uvicorn
from aiokafka import AIOKafkaConsumer

from h0p_settings import Settings
from redirect.app import EdgeApp, create_app, uvicorn_config
from redirect.events import ClickEvent, decode
from redirect.record import DOMAIN_QUERY, LINK_QUERY, LinkRecord, domain_key, encode, link_key, link_record_from_row
from redirect.record import domain_record_from_row as domain_from_row
from tests.services import free_port

_counter = itertools.count()
CLIENT_IP = "203.0.113.7"


def unique(prefix: str) -> str:
    return f"{prefix}{next(_counter)}{secrets.token_hex(3)}"


def edge_settings(settings: Settings, tmp_path: Path, **changes: Any) -> Settings:
    """The session settings with this test's own topic and spool (events of tests never mix)."""
    base: dict[str, Any] = {
        "kafka_topic": unique("clicks-edge-"),
        "spool_dir": str(tmp_path / "spool"),
        "edge_metrics_port": 0,  # tests that want metrics give a free port: edges of a session run side by side
    }
    return dataclasses.replace(settings, **(base | changes))


@pytest.fixture
async def workspace_id(pool: asyncpg.Pool) -> str:
    wid = unique("ws_")
    await pool.execute("INSERT INTO workspaces (id, name) VALUES ($1, $2)", wid, wid)
    return wid


LinkMaker = Callable[..., Coroutine[Any, Any, LinkRecord]]


async def write_link(
    pool: asyncpg.Pool, redis: aioredis.Redis, workspace_id: str, *, domain: str, slug: str, url: str, **columns: Any
) -> LinkRecord:
    """Insert a link row and write its record to Redis, as the API's write-through does."""
    for name in ("rules", "split"):
        if name in columns and not isinstance(columns[name], str):
            columns[name] = msgspec.json.encode(columns[name]).decode()
    names = ["id", "workspace_id", "domain", "slug", "url", *columns]
    values = [unique("link_"), workspace_id, domain, slug, url, *columns.values()]
    casts = {"rules": "::jsonb", "split": "::jsonb"}
    placeholders = ", ".join(f"${i}{casts.get(n, '')}" for i, n in enumerate(names, 1))
    await pool.execute(f"INSERT INTO links ({', '.join(names)}) VALUES ({placeholders})", *values)
    row = await pool.fetchrow(LINK_QUERY, domain, slug)
    record = link_record_from_row(row)
    await redis.set(link_key(domain, slug), encode(record))
    return record


@pytest.fixture
def make_link(pool: asyncpg.Pool, redis: aioredis.Redis, workspace_id: str, settings: Settings) -> LinkMaker:
    async def make(url: str = "https://example.com/landing", *, slug: str | None = None, **columns: Any) -> LinkRecord:
        domain = columns.pop("domain", settings.default_domain)
        return await write_link(pool, redis, workspace_id, domain=domain, slug=slug or unique("s"), url=url, **columns)

    return make


async def write_domain(
    pool: asyncpg.Pool, redis: aioredis.Redis, workspace_id: str, hostname: str, **columns: Any
) -> None:
    names = ["id", "workspace_id", "hostname", "verification_token", "verified_at", *columns]
    values = [unique("dom_"), workspace_id, hostname, "token", datetime.now().astimezone(), *columns.values()]
    placeholders = ", ".join(f"${i}" for i in range(1, len(names) + 1))
    await pool.execute(f"INSERT INTO domains ({', '.join(names)}) VALUES ({placeholders})", *values)
    row = await pool.fetchrow(DOMAIN_QUERY, hostname)
    await redis.set(domain_key(hostname), encode(domain_from_row(row)))


@asynccontextmanager
async def started(app: EdgeApp) -> AsyncIterator[EdgeApp]:
    """Run the app's lifespan work around a block (ASGITransport does not run lifespans)."""
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


@asynccontextmanager
async def edge_client(
    settings: Settings, client_ip: str = CLIENT_IP
) -> AsyncIterator[tuple[EdgeApp, httpx.AsyncClient]]:
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app, client=(client_ip, 40000))
    async with started(app), httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        yield app, client


@pytest.fixture
async def edge(settings: Settings, tmp_path: Path) -> AsyncIterator[tuple[EdgeApp, httpx.AsyncClient]]:
    async with edge_client(edge_settings(settings, tmp_path)) as pair:
        yield pair


@asynccontextmanager
async def served(settings: Settings, keep_alive_s: int = 5) -> AsyncIterator[tuple[EdgeApp, str]]:
    """The edge on a real uvicorn server on a free port, in this test's event loop."""
    async with serving(settings, keep_alive_s) as (app, url, _):
        yield app, url


@asynccontextmanager
async def serving(settings: Settings, keep_alive_s: int = 5) -> AsyncIterator[tuple[EdgeApp, str, uvicorn.Server]]:
    """``served``, also yielding the uvicorn server (its connections, its shutdown)."""
    port = free_port()
    app = create_app(settings)
    config = uvicorn_config(dataclasses.replace(settings, bind_host="127.0.0.1"), app=app, port=port)
    config.log_level = "warning"
    config.timeout_keep_alive = keep_alive_s
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        if task.done() or time.monotonic() > deadline:
            raise RuntimeError("edge server did not start")
        await asyncio.sleep(0.02)
    try:
        yield app, f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


async def read_events(
    bootstrap: str, topic: str, expect: int, timeout: float = 20.0, settle: float = 1.5
) -> list[ClickEvent]:
    """Every event in ``topic``: waits for ``expect`` of them, then ``settle`` more seconds for extras."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    found: list[ClickEvent] = []
    try:
        deadline = time.monotonic() + timeout
        settled_at: float | None = None
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                found.extend(decode(r.value) for r in records)
            if len(found) >= expect:
                settled_at = settled_at or time.monotonic()
                if time.monotonic() - settled_at >= settle:
                    break
    finally:
        await consumer.stop()
    return found
