"""Exports cannot starve the API: slow readers over real HTTP against the API as a real uvicorn process.

A reader that takes a few bytes of an export and then stops reading keeps the export's
generator suspended at a full socket; whatever it holds (a connection, a transaction) stays
held. These tests open such readers on loopback and check what other clients still get.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest

from api.services.context import ServiceContext
from api.services.keys import create_key
from api.services.workspaces import get_or_create_workspace
from h0p_settings import Settings
from tests.ingest.conftest import wait_until
from tests.services import free_port, wait_for_port

# ~8 MB of CSV each, twice what the kernel's socket buffers (tcp_wmem max 4 MB) take for a stalled reader
ROWS_PER_TENANT = 4000
# ~40 MB: more than the socket buffers and the server's pending chunk (2 MB) together take, on any machine
# (with 4,000 rows, a CI run once received all but the last chunk before the cap cut the export)
STALLED_ROWS = 20_000
READERS = 12  # more than the API's main pool (10 connections)


@dataclass(frozen=True)
class Tenant:
    workspace_id: str
    key: str


async def _tenant(ctx: ServiceContext, pool: asyncpg.Pool, name: str, rows: int) -> Tenant:
    ws = await get_or_create_workspace(ctx, f"export-load-{os.getpid()}-{name}")
    _, key = await create_key(ctx, ws.id, "export-load", ["analytics:read", "links:read"])
    # Bulk rows straight into the table: these tests are about reading them back, not about ingest.
    await pool.execute(
        "INSERT INTO clicks (event_id, ts, workspace_id, domain, slug, visitor, ua)"
        " SELECT gen_random_uuid(), now() - n * interval '1 millisecond', $1, 'localhost', 'load', n, repeat('x', 2000)"
        " FROM generate_series(1, $2) AS n",
        ws.id, rows,
    )  # fmt: skip
    return Tenant(ws.id, key)


@pytest.fixture(scope="module")
async def tenants(ctx: ServiceContext, pool: asyncpg.Pool) -> list[Tenant]:
    """READERS workspaces with ROWS_PER_TENANT clicks each, and one more (the bystander) with none."""
    return [await _tenant(ctx, pool, str(i), ROWS_PER_TENANT if i < READERS else 0) for i in range(READERS + 1)]


@contextlib.contextmanager
def api_process(settings: Settings, **env: str) -> Iterator[int]:
    """``h0p api`` (api.app.serve under uvicorn) on a free loopback port, with extra H0P_* variables."""
    port = free_port()
    environ = {
        **os.environ,
        "H0P_DATABASE_URL": settings.database_url,
        "H0P_REDIS_URL": settings.redis_url,
        "H0P_API_PORT": str(port),
        "H0P_BIND_HOST": "127.0.0.1",
        "H0P_RATE_LIMITS_ENABLED": "false",
        "H0P_LOG_LEVEL": "warning",
        **env,
    }
    code = "from api.app import serve; from h0p_settings import load_settings_or_exit; serve(load_settings_or_exit())"
    proc = subprocess.Popen([sys.executable, "-c", code], env=environ)
    try:
        wait_for_port(port, timeout=30)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


class SlowReader:
    """An HTTP/1.1 client of GET /analytics/export that reads the head and a few bytes, then stalls."""

    def __init__(
        self, status: int, head: bytes, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.status, self.head, self.first, self.reader, self.writer = status, head, first, reader, writer

    @classmethod
    async def open(cls, port: int, key: str, query: str = "format=csv") -> SlowReader:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window, as a slow link has
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
        request = f"GET /analytics/export?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: {key}\r\n\r\n"
        writer.write(request.encode())
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        # a few bytes of the body, then no more reading
        first = await reader.readexactly(16) if status == 200 else b""
        return cls(status, head, first, reader, writer)

    def header(self, name: str) -> str | None:
        for line in self.head.decode("latin-1").split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None

    async def body(self) -> bytes:
        """Resume reading: the body from its start up to the server closing the connection (or the last chunk)."""
        data = self.first
        while chunk := await self.reader.read(65536):
            data += chunk
            if data.endswith(b"\r\n0\r\n\r\n"):
                break
        return data

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


@contextlib.asynccontextmanager
async def slow_readers(port: int, keys: list[str]) -> AsyncIterator[list[SlowReader]]:
    readers = await asyncio.gather(*(SlowReader.open(port, key) for key in keys))
    try:
        yield list(readers)
    finally:
        await asyncio.gather(*(r.close() for r in readers))


@pytest.mark.slow
async def test_slow_export_readers_leave_other_tenants_requests_answered(
    settings: Settings, tenants: list[Tenant]
) -> None:
    bystander = tenants[READERS]
    with api_process(settings, H0P_EXPORT_POOL_SIZE="2") as port:
        async with (
            slow_readers(port, [t.key for t in tenants[:READERS]]) as readers,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client,
        ):
            statuses = sorted(r.status for r in readers)
            links = await client.get("/links", headers={"x-api-key": bystander.key})
            counts = await client.get("/analytics", headers={"x-api-key": bystander.key})
            events = await client.get("/analytics/events", headers={"x-api-key": bystander.key})
    assert links.status_code == 200, links.text
    assert counts.status_code == 200 and counts.json() == {"clicks": 0}, counts.text
    assert events.status_code == 200, events.text
    # the exports were real and stalled: the export pool's two are streaming, the rest were told to retry
    assert statuses.count(200) == 2 and statuses.count(429) == READERS - 2, statuses
    refused = [r for r in readers if r.status == 429]
    assert all(r.header("retry-after") for r in refused)


@pytest.mark.slow
async def test_a_second_export_of_the_same_workspace_is_rate_limited_with_retry_after(
    settings: Settings, tenants: list[Tenant]
) -> None:
    tenant = tenants[0]
    with api_process(settings) as port:
        async with slow_readers(port, [tenant.key]) as (first,):
            assert first.status == 200
            second = await SlowReader.open(port, tenant.key, "format=ndjson")
            body = await second.reader.readexactly(int(second.header("content-length") or 0))
            await second.close()
            other = await SlowReader.open(port, tenants[1].key)  # another workspace is not held up
            await other.close()
        # once the first export is over (the server notices its reader left), the workspace can export again
        for _ in range(150):
            third = await SlowReader.open(port, tenant.key)
            await third.close()
            if third.status != 429:
                break
            await asyncio.sleep(0.2)
    assert second.status == 429 and second.header("retry-after") == "10"
    assert b'"code":"RATE_LIMITED"' in body and b"one at a time" in body
    assert other.status == 200 and third.status == 200


async def _export_transactions(pool: asyncpg.Pool) -> int:
    return int(
        await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND state LIKE 'idle in transaction%' AND query LIKE 'SELECT event_id, ts, %'"
        )
    )


@pytest.mark.slow
async def test_an_export_whose_reader_stalls_is_cut_at_the_duration_cap(
    settings: Settings, ctx: ServiceContext, pool: asyncpg.Pool
) -> None:
    tenant = await _tenant(ctx, pool, "stalled", STALLED_ROWS)
    with api_process(settings, H0P_EXPORT_MAX_S="1") as port:
        async with slow_readers(port, [tenant.key]) as (reader,):
            assert reader.status == 200
            await wait_until(lambda: _has_export(pool), timeout=30, what="the export's transaction to open")
            await wait_until(lambda: _no_export(pool), timeout=60, what="the stalled export to be cut")
            body = await reader.body()
    # cut, not finished: the server closed the connection before HTTP's last chunk and the last rows
    # (the CSV's lines counted without the chunks' own framing lines)
    assert not body.endswith(b"\r\n0\r\n\r\n")
    assert 0 < _dechunked(body).count(b"\n") < STALLED_ROWS + 1


def _dechunked(body: bytes) -> bytes:
    """The data of an HTTP/1.1 chunked body, up to where it was cut."""
    data, pos = b"", 0
    while (eol := body.find(b"\r\n", pos)) >= 0:
        size = int(body[pos:eol].split(b";")[0], 16)
        data += body[eol + 2 : eol + 2 + size]
        pos = eol + 2 + size + 2
    return data


async def _has_export(pool: asyncpg.Pool) -> bool:
    return await _export_transactions(pool) > 0


async def _no_export(pool: asyncpg.Pool) -> bool:
    return await _export_transactions(pool) == 0
