"""Durable, idempotent storage of enriched clicks: COPY, INSERT … ON CONFLICT, rollups, counters."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from ingest.enrich.row import COLUMNS

log = logging.getLogger("h0p.ingest")

# Errors worth retrying as they are: the server or the network, not the rows.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,  # connection closed under us
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now, query cancelled
    asyncpg.exceptions.TransactionRollbackError,  # deadlock, serialization failure
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.LockNotAvailableError,
)

# Dimensions kept in the hourly rollup: (rollup dim name, expression over the inserted rows).
ROLLUP_DIMENSIONS = (
    ("count", "''"),
    ("country", "country"),
    # region and city carry their country ("US/Portland"): the same name exists in many countries
    ("region", "country || '/' || region"),
    ("city", "country || '/' || city"),
    ("continent", "continent"),
    ("device", "device"),
    ("browser", "browser"),
    ("os", "os"),
    ("referer", "referer"),
    ("referer_url", "referer_url"),
    ("utm_source", "utm_source"),
    ("utm_medium", "utm_medium"),
    ("utm_campaign", "utm_campaign"),
    ("utm_term", "utm_term"),
    ("utm_content", "utm_content"),
    ("link", "coalesce(link_id, '')"),
)

_DIMS_VALUES = ", ".join(f"('{name}', {expr})" for name, expr in ROLLUP_DIMENSIONS)
_RETURNED = "workspace_id, link_id, ts, bot, qr, " + ", ".join(
    sorted({name for name, _ in ROLLUP_DIMENSIONS if name not in ("count", "link")})
)

# One statement, one snapshot: the rows actually inserted (duplicates excluded by ON CONFLICT)
# feed both the rollup and the link counters, so a redelivered batch changes nothing.
# Rollup keys are sorted so that two ingest processes take row locks in the same order.
WRITE_SQL = f"""
WITH ins AS (
    INSERT INTO clicks ({", ".join(COLUMNS)})
    SELECT {", ".join(COLUMNS)} FROM clicks_in
    ON CONFLICT DO NOTHING
    RETURNING {_RETURNED}
), rollup AS (
    INSERT INTO click_rollups AS r (workspace_id, dim, hour, value, bot, qr, clicks)
    SELECT workspace_id, d.dim, date_trunc('hour', ts), d.value, bot, qr, count(*)
    FROM ins CROSS JOIN LATERAL (VALUES {_DIMS_VALUES}) AS d(dim, value)
    WHERE workspace_id IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5, 6
    ORDER BY 1, 2, 3, 4, 5, 6
    ON CONFLICT (workspace_id, dim, hour, value, bot, qr) DO UPDATE SET clicks = r.clicks + EXCLUDED.clicks
), counters AS (
    -- bots (crawlers, preview fetchers, HEAD probes) are not counted, as on Dub
    UPDATE links AS l
    SET clicks = l.clicks + c.n, last_clicked_at = GREATEST(l.last_clicked_at, c.last)
    FROM (
        SELECT link_id, count(*) FILTER (WHERE NOT bot) AS n, max(ts) FILTER (WHERE NOT bot) AS last
        FROM ins WHERE link_id IS NOT NULL GROUP BY link_id HAVING bool_or(NOT bot) ORDER BY link_id
    ) AS c
    WHERE l.id = c.link_id
)
SELECT count(*) FROM ins
"""

# Rebuild the rollup of a time range from the raw table (bulk loads, repairs).
REBUILD_ROLLUP_SQL = f"""
INSERT INTO click_rollups AS r (workspace_id, dim, hour, value, bot, qr, clicks)
SELECT workspace_id, d.dim, date_trunc('hour', ts), d.value, bot, qr, count(*)
FROM clicks CROSS JOIN LATERAL (VALUES {_DIMS_VALUES}) AS d(dim, value)
WHERE workspace_id IS NOT NULL AND ts >= $1 AND ts < $2
GROUP BY 1, 2, 3, 4, 5, 6
ON CONFLICT (workspace_id, dim, hour, value, bot, qr) DO UPDATE SET clicks = EXCLUDED.clicks
"""


def month_start(ts: datetime) -> date:
    return date(ts.year, ts.month, 1)


class ClickStore:
    """One Postgres connection owned by one ingest process (its temp table lives on it)."""

    def __init__(self, database_url: str, connect_timeout: float = 5.0, command_timeout: float = 60.0) -> None:
        self._url = database_url
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._conn: asyncpg.Connection | None = None
        self._months: set[date] = set()

    async def connection(self) -> asyncpg.Connection:
        """The open connection, (re)connecting if needed; raises a TRANSIENT_ERRORS member on failure."""
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        self._conn = None
        conn = await asyncpg.connect(
            self._url,
            timeout=self._connect_timeout,
            command_timeout=self._command_timeout,
            # date_trunc('hour', …) in the rollup must mean UTC hours
            server_settings={"timezone": "UTC", "application_name": "h0p-ingest"},
        )
        try:
            await conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS clicks_in (LIKE clicks INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn
        return conn

    def drop_connection(self) -> None:
        """Forget a connection that failed (it may be half-open); the next call reconnects."""
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    async def ensure_partitions(self, first: datetime, last: datetime) -> None:
        """Create the monthly partitions covering [first, last] that this process has not seen yet."""
        conn = await self.connection()
        month = month_start(first)
        end = month_start(last)
        while month <= end:
            if month not in self._months:
                if await conn.fetchval("SELECT clicks_ensure_partition($1)", month):
                    log.info("created clicks partition for %s", month.strftime("%Y-%m"))
                self._months.add(month)
            month = (month + timedelta(days=32)).replace(day=1)

    async def write(self, rows: Sequence[tuple[Any, ...]]) -> int:
        """Store the rows in one transaction; returns how many were new (the rest were duplicates)."""
        if not rows:
            return 0
        ts_index = COLUMNS.index("ts")
        times = [r[ts_index] for r in rows]
        # a month ahead too: partitions exist before the first click of a new month arrives
        await self.ensure_partitions(min(times), max(max(times), datetime.now(UTC) + timedelta(days=7)))
        conn = await self.connection()
        async with conn.transaction():
            await conn.copy_records_to_table("clicks_in", records=rows, columns=COLUMNS)
            inserted = await conn.fetchval(WRITE_SQL)
        return int(inserted)

    async def close(self) -> None:
        if self._conn is not None:
            try:
                await asyncio.wait_for(self._conn.close(), timeout=5.0)
            except (TimeoutError, OSError, asyncpg.InterfaceError):
                self._conn.terminate()
            self._conn = None


async def rebuild_rollup(conn: asyncpg.Connection, start: datetime, end: datetime) -> str:
    """Recompute the hourly rollup for whole hours in [start, end) from ``clicks``; returns the status."""
    async with conn.transaction():
        await conn.execute("SET LOCAL timezone = 'UTC'")
        await conn.execute("DELETE FROM click_rollups WHERE hour >= $1 AND hour < $2", start, end)
        return str(await conn.execute(REBUILD_ROLLUP_SQL, start, end))
