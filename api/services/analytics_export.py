"""Exports of raw clicks (CSV or NDJSON): their own small pool, one at a time per workspace, time-boxed.

A client reads an export at its own pace, and all that time the export holds a connection and
an open transaction. So exports never use the API's pool, where ten slow readers would starve
every tenant: they take a connection from a pool of their own (``H0P_EXPORT_POOL_SIZE``;
when it is busy, RATE_LIMITED), hold their workspace's advisory lock for the transaction (a
second export of the same workspace is RATE_LIMITED, whichever API process it reaches), and
Postgres cuts each fetch at the analytics statement timeout. The whole stream is capped at
``H0P_EXPORT_MAX_S`` by the route, and by Postgres' idle-in-transaction timeout as a backstop.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson

from api.errors import QueryTimedOut, RateLimited, field_error
from api.services.analytics import EVENT_COLUMNS, EVENT_KEYS, _raw_where, _Sql, event_dict
from api.services.analytics_query import MIN_INSTANT, AnalyticsQuery
from h0p_settings import Settings

log = logging.getLogger("h0p.api")

FORMATS = ("csv", "ndjson")
RETRY_AFTER_S = 10
_LOCK_CLASS = 0x6830_7002  # first key of the export advisory locks (db.py's migrator uses 0x6830_7001)
_ACQUIRE_TIMEOUT_S = 1.0  # a busy export pool answers soon rather than queueing the request
# A cell a spreadsheet would read as a formula (OWASP CSV injection): =, +, -, @, tab, CR.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """``value`` as a CSV cell: text that could start a formula gets a leading ``'``; true/false; empty for none."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


class ClickExport:
    """One running export: a connection of the export pool, in a read-only transaction holding the workspace's lock."""

    def __init__(self, pool: asyncpg.Pool, conn: asyncpg.Connection, tx: Any, text: str, args: list[Any]) -> None:
        self._pool, self._conn, self._tx = pool, conn, tx
        self._text, self._args = text, args
        self._closed = False

    @classmethod
    async def open(cls, pool: asyncpg.Pool, settings: Settings, workspace_id: str, q: AnalyticsQuery) -> ClickExport:
        """Take an export slot and the workspace's lock, or raise RATE_LIMITED (before any byte is sent)."""
        if q.needs_first_click:
            q = q.with_start(MIN_INSTANT)
        sql = _Sql()
        where = _raw_where(sql, workspace_id, q, q.start, q.end)
        text = f"SELECT {', '.join(EVENT_COLUMNS)} FROM clicks WHERE {where} ORDER BY ts, event_id"
        try:
            conn = await pool.acquire(timeout=_ACQUIRE_TIMEOUT_S)
        except TimeoutError:
            raise RateLimited(RETRY_AFTER_S, "every export slot is busy: try again shortly") from None
        tx = conn.transaction(readonly=True)
        try:
            await tx.start()
            idle_ms = int(settings.export_max_s * 1000) + 60_000  # the route's cap comes first
            await conn.execute(
                f"SET LOCAL statement_timeout = {int(settings.analytics_statement_timeout_ms)};"
                f" SET LOCAL idle_in_transaction_session_timeout = {idle_ms}"
            )
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1, hashtext($2))", _LOCK_CLASS, workspace_id):
                raise RateLimited(RETRY_AFTER_S, "an export of this workspace is running: one at a time")
        except BaseException:
            await cls(pool, conn, tx, text, sql.args).close()
            raise
        return cls(pool, conn, tx, text, sql.args)

    async def chunks(self, fmt: str, chunk_rows: int = 1000) -> AsyncIterator[bytes]:
        """Every matching click, oldest first, as CSV (with a header) or NDJSON, ``chunk_rows`` rows a chunk."""
        if fmt not in FORMATS:
            raise field_error("format", "format must be csv or ndjson")
        buf = io.StringIO()
        writer = csv.writer(buf)
        if fmt == "csv":
            writer.writerow(EVENT_KEYS)
            yield buf.getvalue().encode()
        chunk: list[bytes] = []
        try:
            async for record in self._conn.cursor(self._text, *self._args, prefetch=chunk_rows):
                event = event_dict(record)
                if fmt == "ndjson":
                    chunk.append(orjson.dumps(event) + b"\n")
                else:
                    buf.seek(0)
                    buf.truncate()
                    writer.writerow([csv_cell(v) for v in event.values()])
                    chunk.append(buf.getvalue().encode())
                if len(chunk) >= chunk_rows:
                    yield b"".join(chunk)
                    chunk.clear()
        except asyncpg.QueryCanceledError:  # a fetch ran past the statement timeout, mid-stream
            raise QueryTimedOut("an export's fetch ran past the statement timeout") from None
        if chunk:
            yield b"".join(chunk)

    async def close(self) -> None:
        """End the transaction (and with it the lock) and give the connection back; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._conn.is_in_transaction():
                await self._tx.rollback()
            await self._pool.release(self._conn, timeout=5.0)
        except Exception:  # cut mid-fetch or gone: a connection in doubt is not reused
            log.warning("export connection dropped after an interrupted export", exc_info=True)
            self._conn.terminate()
            with contextlib.suppress(Exception):  # the pool may be closing too (shutdown)
                await self._pool.release(self._conn)
