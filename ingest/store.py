"""Durable, idempotent storage of enriched clicks: COPY, INSERT … ON CONFLICT, rollup increments, counters."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from operator import itemgetter
from typing import Any

import asyncpg

from ingest.enrich.row import COLUMNS
from ingest.live import LivePublisher
from ingest.pairs import aggregate_closed_periods, rebuild_pairs
from ingest.sketch import HLL_ARGS
from ingest.webhook_clicks import ClickSubscriptions, write_click_events

log = logging.getLogger("h0p.ingest")

_SLOW_PATH_BATCHES = 8

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
    ("domain", "domain"),  # the domain the click came on (orphans too): the domain filter
)

_DIMS_VALUES = ", ".join(f"('{name}', {expr})" for name, expr in ROLLUP_DIMENSIONS)

_COLS = ", ".join(COLUMNS)
_TS, _WS, _LINK, _COUNTRY, _REGION, _CITY = (
    COLUMNS.index(c) for c in ("ts", "workspace_id", "link_id", "country", "region", "city")
)
_BOT, _QR, _VISITOR = COLUMNS.index("bot"), COLUMNS.index("qr"), COLUMNS.index("visitor")
# The hourly cube (api/migrations/0020_analytics_cube.sql): every click in one row per combination.
CUBE_DIMENSIONS = ("country", "continent", "device", "browser", "os")
_CUBE_KEY = itemgetter(*(COLUMNS.index(c) for c in CUBE_DIMENSIONS))
# Rollup dimensions that keep a sketch of their visitors: the unique counts asked unfiltered
# (a country's month from the cube would union hundreds of thousands of sketches).
VISITOR_DIMENSIONS = ("count", "country", "device", "link")
# Dimensions read straight from one column (count, region, city and link are built in rollup_rows).
_PLAIN_DIMS = tuple((name, COLUMNS.index(name)) for name, expr in ROLLUP_DIMENSIONS if expr == name)

# Slow path, only when the fast path met a duplicate (a redelivered batch): the rows actually
# inserted come back so that rollups and counters are computed from them alone.
INSERT_NEW_SQL = f"""
INSERT INTO clicks ({_COLS}) SELECT {_COLS} FROM clicks_in
ON CONFLICT DO NOTHING
RETURNING event_id, ts
"""

# Link counters aggregated in Python from the inserted rows, one statement. A link's clicks are
# on one partition, so only one ingest process updates its row; keys are sorted all the same.
# Bots (crawlers, preview fetchers, HEAD probes) are not counted on links, as on Dub.
# link_counters (api/migrations/0023_link_counters.sql), not the wide, many-indexed links row.
COUNTERS_SQL = """
UPDATE link_counters AS l
SET clicks = l.clicks + c.n, last_clicked_at = GREATEST(l.last_clicked_at, c.last)
FROM unnest($1::text[], $2::bigint[], $3::timestamptz[]) AS c(link_id, n, last)
WHERE l.link_id = c.link_id
"""

# The rollup increments of the inserted rows, aggregated in Python, are COPYed to
# click_rollup_deltas: an append takes no row lock, so concurrent ingest processes do not wait
# on each other (an upsert into click_rollups did: every batch of a busy workspace touches the
# same hour and dimension rows). ``fold_rollup_deltas`` moves them into click_rollups.
ROLLUP_COLUMNS = ("workspace_id", "dim", "hour", "value", "bot", "qr", "clicks", "visitors")
CUBE_COLUMNS = ("workspace_id", "hour", "bot", "qr", *CUBE_DIMENSIONS, "clicks", "visitors")

# Folds every increment this transaction sees into click_rollups, in one statement: a reader
# (one snapshot) sees each increment either in the deltas or in the rollup, never both. Rows
# appended meanwhile are not visible to the DELETE and wait for the next fold. Keys are sorted
# so that the upsert takes row locks in the same order as any other writer.
# Visitor hashes become a sketch (made with ingest/sketch.py's parameters) when folded.
_SKETCH = f"(SELECT hll_add_agg(hll_hash_bigint(v), {HLL_ARGS}) FROM unnest(m.visitors) AS v)"
_CUBE_KEYS = ", ".join(CUBE_DIMENSIONS)
# The visitors of the count, country and device rows are not shipped by ingest: they are unions
# of the cube's sketches (country and device are cube columns), made here per cube row instead
# of per click. Only link rows carry their own visitor hashes.
_DERIVED_DIMS = "('count', ''), ('country', country), ('device', device)"
FOLD_SQL = f"""
WITH moved AS (
    DELETE FROM click_rollup_deltas RETURNING workspace_id, dim, hour, value, bot, qr, clicks, visitors
), cube_moved AS (
    DELETE FROM click_cube_deltas RETURNING workspace_id, hour, bot, qr, {_CUBE_KEYS}, clicks, visitors
), cube_sketched AS (
    SELECT m.workspace_id, m.hour, m.bot, m.qr, {", ".join(f"m.{c}" for c in CUBE_DIMENSIONS)}, m.clicks,
           {_SKETCH} AS sketch
    FROM cube_moved AS m
), derived AS (
    SELECT workspace_id, d.dim, hour, d.value, bot, qr, hll_union_agg(sketch) AS sketch
    FROM cube_sketched CROSS JOIN LATERAL (VALUES {_DERIVED_DIMS}) AS d(dim, value)
    GROUP BY 1, 2, 3, 4, 5, 6
), summed AS (
    SELECT workspace_id, dim, hour, value, bot, qr, sum(clicks) AS clicks, hll_union_agg(sketch) AS sketch
    FROM (SELECT m.*, {_SKETCH} AS sketch FROM moved AS m) AS s
    GROUP BY 1, 2, 3, 4, 5, 6
), folded AS (
    INSERT INTO click_rollups AS r (workspace_id, dim, hour, value, bot, qr, clicks, visitors)
    SELECT s.workspace_id, s.dim, s.hour, s.value, s.bot, s.qr, s.clicks, coalesce(s.sketch, d.sketch)
    FROM summed AS s LEFT JOIN derived AS d USING (workspace_id, dim, hour, value, bot, qr)
    ORDER BY 1, 2, 3, 4, 5, 6
    ON CONFLICT (workspace_id, dim, hour, value, bot, qr) DO UPDATE
    SET clicks = r.clicks + EXCLUDED.clicks,
        visitors = coalesce(hll_union(r.visitors, EXCLUDED.visitors), r.visitors, EXCLUDED.visitors)
), cube_folded AS (
    INSERT INTO click_cube AS c (workspace_id, hour, bot, qr, {_CUBE_KEYS}, clicks, visitors)
    SELECT workspace_id, hour, bot, qr, {_CUBE_KEYS}, sum(clicks), hll_union_agg(sketch)
    FROM cube_sketched
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9 ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9
    ON CONFLICT (workspace_id, hour, bot, qr, {_CUBE_KEYS}) DO UPDATE
    SET clicks = c.clicks + EXCLUDED.clicks, visitors = hll_union(c.visitors, EXCLUDED.visitors)
)
SELECT (SELECT count(*) FROM moved) + (SELECT count(*) FROM cube_moved)
"""
_FOLD_WORK_MEM = "64MB"
_FOLD_LOCK = 0x68307066  # pg advisory lock id: one fold at a time across ingest processes

RollupKey = tuple[str, str, datetime, str, bool, bool]


_VisitorsBy = dict[Any, list[int]]


def _visitors_by(group: Sequence[tuple[Any, ...]], keys: Sequence[tuple[str, ...]]) -> tuple[_VisitorsBy, ...]:
    """The visitor hashes of each link and each cube key, in one pass over the rows (repeats
    included: lists append faster than sets add; ``_distinct`` drops the repeats per key after).
    (Count, country and device sketches are unions of the cube's, made by the fold.)
    """
    by_link: _VisitorsBy = {}
    by_key: _VisitorsBy = {}
    for r, key in zip(group, keys, strict=True):  # most of what the sketches cost ingest
        visitor = r[_VISITOR]
        seen = by_link.get(r[_LINK])
        if seen is None:
            by_link[r[_LINK]] = [visitor]
        else:
            seen.append(visitor)
        seen = by_key.get(key)
        if seen is None:
            by_key[key] = [visitor]
        else:
            seen.append(visitor)
    return by_link, by_key


def _distinct(visitors: list[int]) -> list[int]:
    """Each hash once: a sketch ignores repeats, and a key with one busy visitor (a monitor, a load
    test: one address and agent) would otherwise ship thousands of copies of one hash, each added
    to the sketch one by one by the fold (~3 µs apiece in hll) and by every analytics read before it."""
    return visitors if len(visitors) < 2 else list(set(visitors))


def rollup_rows(rows: Sequence[tuple[Any, ...]]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The increments of ``rows``: (click_rollup_deltas records, click_cube_deltas records).

    Rollup: hourly counts per (workspace, dim, hour, value, bot, qr), with the visitor hashes of
    the link rows (None for the others: the fold makes the count, country and device sketches
    from the cube's). Region and city carry their country
    ("US/Portland"): the same name exists in many countries. Cube: one record per (workspace,
    hour, bot, qr, CUBE_DIMENSIONS…) with its clicks and distinct visitors. Rows without a
    workspace (orphans on the default domain) are not rolled up.
    """
    # group by (workspace, UTC hour fields, bot, qr): datetime.replace() per row costs more than the rest
    groups: dict[tuple[str, int, int, int, int, bool, bool], list[tuple[Any, ...]]] = {}
    for r in rows:
        ws = r[_WS]
        if ws is None:
            continue
        ts = r[_TS]
        key = (ws, ts.year, ts.month, ts.day, ts.hour, r[_BOT], r[_QR])
        group = groups.get(key)
        if group is None:
            groups[key] = [r]
        else:
            group.append(r)
    rollup: list[tuple[Any, ...]] = []
    cube: list[tuple[Any, ...]] = []
    for (ws, year, month, day, hour_of_day, bot, qr), group in groups.items():
        hour = datetime(year, month, day, hour_of_day, tzinfo=group[0][_TS].tzinfo)
        rollup.append((ws, "count", hour, "", bot, qr, len(group), None))
        # counted in C (itemgetter, Counter); only the distinct values are handled in Python
        keys = list(map(_CUBE_KEY, group))
        by_link, by_key = _visitors_by(group, keys)
        for name, i in _PLAIN_DIMS:
            rollup.extend((ws, name, hour, v, bot, qr, n, None) for v, n in Counter(map(itemgetter(i), group)).items())
        for name, i in (("region", _REGION), ("city", _CITY)):
            named = Counter(map(itemgetter(_COUNTRY, i), group))
            rollup.extend((ws, name, hour, f"{c}/{v}", bot, qr, n, None) for (c, v), n in named.items())
        links = Counter(map(itemgetter(_LINK), group))
        rollup.extend((ws, "link", hour, v or "", bot, qr, n, _distinct(by_link[v])) for v, n in links.items())
        cube.extend((ws, hour, bot, qr, *k, n, _distinct(by_key[k])) for k, n in Counter(keys).items())
    return rollup, cube


def link_counters(rows: Sequence[tuple[Any, ...]]) -> dict[str, tuple[int, datetime]]:
    """Per link: (human clicks, last human click time) over ``rows``; bots and orphans left out."""
    out: dict[str, tuple[int, datetime]] = {}
    for r in rows:
        link = r[_LINK]
        if link is None or r[_BOT]:
            continue
        hit = out.get(link)
        ts = r[_TS]
        out[link] = (1, ts) if hit is None else (hit[0] + 1, ts if ts > hit[1] else hit[1])
    return out


# Rebuild the rollup of a time range from the raw table (bulk loads, repairs).
_COUNT_DIMS = ", ".join(f"('{name}', {expr})" for name, expr in ROLLUP_DIMENSIONS if name not in VISITOR_DIMENSIONS)
_SKETCH_DIMS = ", ".join(f"('{name}', {expr})" for name, expr in ROLLUP_DIMENSIONS if name in VISITOR_DIMENSIONS)
# Two statements: a sketch per group of every dimension would hold millions of hll states at once.
REBUILD_ROLLUP_SQL = [
    f"""
INSERT INTO click_rollups AS r (workspace_id, dim, hour, value, bot, qr, clicks, visitors)
SELECT workspace_id, d.dim, date_trunc('hour', ts), d.value, bot, qr, count(*), NULL::hll
FROM clicks CROSS JOIN LATERAL (VALUES {dims}) AS d(dim, value)
WHERE workspace_id IS NOT NULL AND ts >= $1 AND ts < $2
GROUP BY 1, 2, 3, 4, 5, 6
ON CONFLICT (workspace_id, dim, hour, value, bot, qr) DO UPDATE
SET clicks = EXCLUDED.clicks, visitors = EXCLUDED.visitors
""".replace("NULL::hll", sketch)
    for dims, sketch in (
        (_COUNT_DIMS, "NULL::hll"),
        (_SKETCH_DIMS, f"hll_add_agg(hll_hash_bigint(visitor), {HLL_ARGS})"),
    )
]
REBUILD_CUBE_SQL = f"""
INSERT INTO click_cube AS c (workspace_id, hour, bot, qr, {_CUBE_KEYS}, clicks, visitors)
SELECT workspace_id, date_trunc('hour', ts), bot, qr, {_CUBE_KEYS}, count(*),
       hll_add_agg(hll_hash_bigint(visitor), {HLL_ARGS})
FROM clicks WHERE workspace_id IS NOT NULL AND ts >= $1 AND ts < $2
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
ON CONFLICT (workspace_id, hour, bot, qr, {_CUBE_KEYS}) DO UPDATE
SET clicks = EXCLUDED.clicks, visitors = EXCLUDED.visitors
"""


def month_start(ts: datetime) -> date:
    return date(ts.year, ts.month, 1)


class ClickStore:
    """One Postgres connection owned by one ingest process (its temp table lives on it)."""

    def __init__(
        self,
        database_url: str,
        connect_timeout: float = 5.0,
        command_timeout: float = 60.0,
        live: LivePublisher | None = None,
    ) -> None:
        self._url = database_url
        self._live = live  # stored clicks go out to the live streams after each commit
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._conn: asyncpg.Connection | None = None
        self._sides: dict[str, asyncpg.Connection] = {}  # lookups, folds: beside the write connection
        self._pairs_seen: dict[tuple[datetime, int], int] = {}  # the pairs job's memory between runs
        self._months: set[date] = set()
        self._slow_batches = 0  # > 0: batches left to write through the slow (deduplicating) path

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

    async def lookup_connection(self) -> asyncpg.Connection:
        """A second connection for reads (links, domains) while the write connection is busy."""
        return await self._side("lookup")

    def drop_lookup_connection(self) -> None:
        """Forget a lookup connection that failed; the next call reconnects."""
        self._drop_side("lookup")

    async def _side(self, name: str) -> asyncpg.Connection:
        conn = self._sides.get(name)
        if conn is not None and not conn.is_closed():
            return conn
        conn = self._sides[name] = await asyncpg.connect(
            self._url,
            timeout=self._connect_timeout,
            command_timeout=self._command_timeout,
            server_settings={"timezone": "UTC", "application_name": f"h0p-ingest-{name}"},
        )
        return conn

    def _drop_side(self, name: str) -> None:
        conn = self._sides.pop(name, None)
        if conn is not None:
            conn.terminate()

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

    async def write(self, rows: Sequence[tuple[Any, ...]], subscriptions: ClickSubscriptions | None = None) -> int:
        """Store the rows in one transaction; returns how many were new (the rest were duplicates).

        Fast path: COPY straight into ``clicks``; the unique key (event_id, ts) refuses the whole
        COPY if any event is already stored (a redelivery), and then the batch goes through the
        temp table and ``INSERT … ON CONFLICT DO NOTHING RETURNING``. Either way the rollup and
        the link counters are computed from exactly the rows inserted, in the same transaction, and
        so are the ``link.clicked`` webhook events of ``subscriptions``.
        """
        if not rows:
            return 0
        times = [r[_TS] for r in rows]
        # a month ahead too: partitions exist before the first click of a new month arrives
        await self.ensure_partitions(min(times), max(max(times), datetime.now(UTC) + timedelta(days=7)))
        conn = await self.connection()
        if self._slow_batches == 0:
            try:
                async with conn.transaction():
                    await conn.copy_records_to_table("clicks", records=rows, columns=COLUMNS)
                    await self._write_aggregates(conn, rows)
                    await write_click_events(conn, subscriptions, rows)
                if self._live is not None:
                    await self._live.publish(rows)
                return len(rows)
            except asyncpg.UniqueViolationError:
                # redeliveries come in runs (a restart replays up to a batch per partition)
                self._slow_batches = _SLOW_PATH_BATCHES
        else:
            self._slow_batches -= 1
        async with conn.transaction():
            await conn.copy_records_to_table("clicks_in", records=rows, columns=COLUMNS)
            new = {(r[0], r[1]) for r in await conn.fetch(INSERT_NEW_SQL)}
            inserted = []
            for r in rows:
                key = (r[0], r[_TS])
                if key in new:
                    new.discard(key)  # an event twice in the batch is inserted (and counted) once
                    inserted.append(r)
            await self._write_aggregates(conn, inserted)
            await write_click_events(conn, subscriptions, inserted)
        if self._live is not None:
            await self._live.publish(inserted)  # redelivered clicks were published the first time
        return len(inserted)

    async def _write_aggregates(self, conn: asyncpg.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        rollup, cube = rollup_rows(rows)
        if rollup:
            await conn.copy_records_to_table("click_rollup_deltas", records=rollup, columns=ROLLUP_COLUMNS)
            await conn.copy_records_to_table("click_cube_deltas", records=cube, columns=CUBE_COLUMNS)
        counters = sorted(link_counters(rows).items())  # row locks taken in a fixed order
        if counters:
            await conn.execute(
                COUNTERS_SQL, [k for k, _ in counters], [n for _, (n, _) in counters],
                [last for _, (_, last) in counters],
            )  # fmt: skip

    async def fold(self) -> int | None:
        """Fold the rollup increments (``fold_rollup_deltas``) on a connection of its own: batch
        writes never wait for a fold. A connection that failed is dropped (the next fold reconnects)."""
        try:
            return await fold_rollup_deltas(await self._side("fold"))
        except TRANSIENT_ERRORS:
            self._drop_side("fold")
            raise

    async def aggregate_pairs(self) -> int | None:
        """Build the click_pairs of closed periods (``ingest.pairs.aggregate_closed_periods``) on a
        connection of its own: off the batch writes and the folds."""
        try:
            return await aggregate_closed_periods(await self._side("pairs"), datetime.now(UTC), seen=self._pairs_seen)
        except TRANSIENT_ERRORS:
            self._drop_side("pairs")
            raise

    async def close(self) -> None:
        conns = [*self._sides.values(), *([self._conn] if self._conn is not None else [])]
        self._sides.clear()
        self._conn = None
        if self._live is not None:
            await self._live.close()
        for conn in conns:
            try:
                await asyncio.wait_for(conn.close(), timeout=5.0)
            except (TimeoutError, OSError, asyncpg.InterfaceError):
                conn.terminate()


async def fold_rollup_deltas(conn: asyncpg.Connection) -> int | None:
    """Fold the appended rollup increments into ``click_rollups``; returns how many were folded.

    ``None``: another process is folding right now (it takes what this one would have).
    """
    async with conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _FOLD_LOCK):
            return None
        # the moved increments (visitor arrays included) are sorted to be grouped: in memory, not
        # spilled to disk as with the default 4 MB (tens of thousands of increments every fold)
        await conn.execute(f"SET LOCAL work_mem = '{_FOLD_WORK_MEM}'")
        return int(await conn.fetchval(FOLD_SQL))


async def rebuild_rollup(conn: asyncpg.Connection, start: datetime, end: datetime, now: datetime | None = None) -> str:
    """Recompute the hourly rollup and cube for whole hours in [start, end) from ``clicks``, and the
    click_pairs of the closed periods in it (as ingest's background job makes them, the days' rollup and
    cube rows from the rebuilt hours: so after them); returns the status."""
    async with conn.transaction():
        await conn.execute("SET LOCAL timezone = 'UTC'")
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _FOLD_LOCK)  # no fold adds to it meanwhile
        await conn.execute("DELETE FROM click_rollup_deltas WHERE hour >= $1 AND hour < $2", start, end)
        await conn.execute("DELETE FROM click_rollups WHERE hour >= $1 AND hour < $2", start, end)
        await conn.execute("DELETE FROM click_cube_deltas WHERE hour >= $1 AND hour < $2", start, end)
        await conn.execute("DELETE FROM click_cube WHERE hour >= $1 AND hour < $2", start, end)
        await conn.execute(REBUILD_CUBE_SQL, start, end)
        statuses = [await conn.execute(sql, start, end) for sql in REBUILD_ROLLUP_SQL]
    async with conn.transaction():
        await rebuild_pairs(conn, start, end, now or datetime.now(UTC))
    return ", ".join(statuses)
