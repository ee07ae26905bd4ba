"""Pairs of dimensions per closed UTC day (and hour, for the last two days), aggregated off the hot path.

``click_pairs`` (api/migrations/0021_click_pairs.sql) answers what neither the per-dimension rollup
nor the cube can: a ranked groupBy of a high-cardinality dimension filtered by a cube dimension
(cities of mobile clicks), the reverse (countries of one referrer), the same with the link in place
of the high-cardinality dimension (top links of mobile clicks, countries of one link, tag or folder),
count and time series with one filter of each kind, and unique visitors filtered by any one dimension
(the single-dimension rows keep a sketch, and so do a link's countries and devices: migration 0024).
The same build counts the period's clicks per quarter hour into ``click_quarters`` (migration 0024).
Ingest's per-click work does not change: the rows are made from the raw ``clicks`` of a period once it
is closed, two GROUPING SETS passes per period, by the ingest process that folds
(``ClickStore.aggregate_pairs``, every ``PAIRS_EVERY_S``) and by ``rebuild_rollup`` after bulk loads.
``click_pairs_built`` lists the periods built: readers take the pairs for those and the raw rows for the
rest, so an answer never depends on whether the job has run. A day's build also sums its hours of the
rollup and the cube into ``click_rollup_days`` and ``click_cube_days`` (migration 0022), which the same
mark governs. Once a week's seven days are built, its rows are their day rows summed (``build_week``): the
click_pairs of hours 168 and ``click_rollup_weeks`` (migration 0027). And for the links busy in a period,
their clicks by each high-cardinality dimension (``BUSY_LINKS_SQL``, migration 0025): a busy link's cities,
referrers and UTM values. And for every tag and folder, its links' clicks by each dimension (``build_scopes``,
migration 0028), marked with the links it had: a tag's cities or a folder's referrers.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import asyncpg

from ingest.sketch import HLL_ARGS

CUBE_DIMS = ("country", "continent", "device", "browser", "os")
# the dimensions paired with every cube dimension: name → expression over clicks (as the rollup's)
HIGH_DIMS = {
    "region": "country || '/' || region",
    "city": "country || '/' || city",
    "referer": "referer",
    "referer_url": "referer_url",
    "utm_source": "utm_source",
    "utm_medium": "utm_medium",
    "utm_campaign": "utm_campaign",
    "utm_term": "utm_term",
    "utm_content": "utm_content",
    "domain": "domain",
}
# a click's link as the pairs store it: as the rollup's 'link' rows ('' for a click of no link)
LINK = "link"
_EXPRESSIONS = {**{d: d for d in CUBE_DIMS}, **HIGH_DIMS, LINK: "coalesce(link_id, '')"}
_COLUMNS = tuple(_EXPRESSIONS)
# Pairs whose rows keep a visitors sketch: a link's countries and devices (the dimensions whose rollup
# rows keep one too), for unique visitors of one link by country or device and top links of one of them.
SKETCHED_PAIRS = (("country", LINK), ("device", LINK))
# Each unordered pair once (a cube dimension first), read in either direction through two indexes: every
# cube dimension with every high-cardinality one and with the link (the rankings of one link, tag or
# folder by a cube dimension; top links of one cube value). And each high-cardinality dimension that holds
# few values in a workspace (a few domains; UTM sources and mediums name channels: google, newsletter, cpc)
# with every other high-cardinality dimension and the link (a domain's cities, a newsletter's referrers and
# top links, the sources of one city): these compress as the cube dimensions' pairs do (on the 10M bench, a
# day's utm_source × city rows are 4 % of its clicks, × link 17 %; city × link would be 68 %).
FEW_VALUED = ("domain", "utm_source", "utm_medium")
FEW_VALUED_PAIRS = tuple(
    (a, b) for i, a in enumerate(FEW_VALUED) for b in (*HIGH_DIMS, LINK) if b != a and b not in FEW_VALUED[:i]
)
PAIRS = (*((a, b) for a in CUBE_DIMS for b in (*HIGH_DIMS, LINK) if (a, b) not in SKETCHED_PAIRS), *FEW_VALUED_PAIRS)
# Single dimensions with a visitors sketch: those whose click_rollups rows keep none.
SKETCHED_DIMS = ("continent", "browser", "os", *HIGH_DIMS)

WEEK, DAY, HOUR = 168, 24, 1  # click_pairs.hours
# A busy link's rankings by a high-cardinality dimension (its cities, referrers, UTM values): rows with
# adim 'link' (avalue its id) for the links with at least this many clicks in the period, and a marker row
# (bdim '') of its clicks that says it has them. In the long tail, a link's rows would be about one per click
# and dimension, and its raw rows are few (the (link_id, ts) index): readers take those for the periods
# where it has no marker. A link's domain is its own. Not summed into weeks (a week's days are not all busy).
BUSY_LINK_DIMS = tuple(d for d in HIGH_DIMS if d != "domain")
BUSY_LINK_CLICKS = {DAY: 500, HOUR: 100}
# A tag's or a folder's clicks by each dimension (adim 'tag' or 'folder', avalue its id, bdim the dimension):
# summed over its links' own rows, a folder's cities would be about a row per click (its long tail), and
# its raw rows are a scan of the range. Built for every tag and folder with each period, with a marker row
# per scope (bdim '', bvalue the fingerprint of its links, clicks 0): readers take a period's rows only if
# its marker has the scope's fingerprint now, and its raw rows otherwise (a link tagged or moved since).
# The job rebuilds the periods whose markers are stale (``stale_scope_periods``). Not summed into weeks.
SCOPES = ("tag", "folder")
SCOPE_DIMS = (*CUBE_DIMS, *HIGH_DIMS)
# each scope's links: (column, table, key), as the raw rows' filters read them (api/services/analytics.py)
_SCOPE_LINKS = {"tag": ("link_id", "link_tags", "tag_id"), "folder": ("id", "links", "folder_id")}
# Weeks start on Mondays 00:00 UTC (2000-01-03 was one): the origin of date_bin('7 days', …)
WEEK_ORIGIN = datetime(2000, 1, 3, tzinfo=UTC)
# The periods built with their link pairs and quarters (migration 0024): the others (built before it, or
# rebuilt since by an ingest process of the previous release during a rolling upgrade, which sets built_at
# only) lack them.
COMPLETE = "complete_at = built_at"  # a condition on click_pairs_built
HOURLY_KEPT = timedelta(hours=48)  # hourly rows: the last two days (the 24h interval, a range's recent end)
GRACE = timedelta(minutes=5)  # an hour is closed this long after its end (late batches still arriving)
LOOKBACK = timedelta(days=400)  # the job builds missing days this far back (older: rebuild_rollup)
LATE_CHECK = timedelta(days=3)  # built periods whose clicks changed since (late events) are rebuilt
PERIODS_PER_RUN = 6  # a run's work is bounded: the fold loop it shares goes on
_LOCK = 0x68307067  # pg advisory lock: one builder at a time across ingest processes


def _grouped(sets: Sequence[Sequence[str]]) -> list[str]:
    return [c for c in _COLUMNS if any(c in s for s in sets)]


def _mask(sets: Sequence[Sequence[str]], group: Sequence[str]) -> int:
    """GROUPING(...) over the grouped columns for one grouping set: a bit set for every column not in it."""
    columns = _grouped(sets)
    return sum(1 << (len(columns) - 1 - i) for i, c in enumerate(columns) if c not in group)


def _case(sets: Sequence[Sequence[str]], pick: int, name: bool) -> str:
    whens = []
    for group in sets:
        dim = group[pick] if pick < len(group) else ""
        value = (f"'{dim}'" if name else dim) if dim else "''"
        whens.append(f"WHEN {_mask(sets, group)} THEN {value}")
    return f"CASE g {' '.join(whens)} END"


def _build_sql(sets: Sequence[Sequence[str]], sketch: bool, where: str = "") -> str:
    """One pass over a period's raw rows (those ``where`` also keeps): a row per grouping set's group, as
    (a, b) pairs."""
    inner = ", ".join(f"{expr} AS {name}" for name, expr in _EXPRESSIONS.items())
    grouping = ", ".join("(" + ", ".join(s) + ")" for s in sets)
    visitors = f"hll_add_agg(hll_hash_bigint(visitor), {HLL_ARGS})" if sketch else "NULL::hll"
    return f"""
INSERT INTO click_pairs (workspace_id, period, hours, adim, avalue, bdim, bvalue, bot, qr, clicks, visitors)
SELECT workspace_id, $1, $3, {_case(sets, 0, True)}, {_case(sets, 0, False)}, {_case(sets, 1, True)},
       {_case(sets, 1, False)}, bot, qr, clicks, visitors
FROM (
    SELECT workspace_id, bot, qr, {", ".join(_grouped(sets))}, count(*) AS clicks, {visitors} AS visitors,
           GROUPING({", ".join(_grouped(sets))}) AS g
    FROM (SELECT workspace_id, bot, qr, visitor, {inner} FROM clicks
          WHERE workspace_id = ANY(ARRAY(SELECT id FROM workspaces)) AND ts >= $1 AND ts < $2{where}) AS c
    GROUP BY workspace_id, bot, qr, GROUPING SETS ({grouping})
) AS grouped
ORDER BY 1, 4, 6, 5
"""


# A period's clicks per UTC quarter hour (click_quarters): a time series in a zone whose buckets start
# inside UTC hours (Asia/Kolkata) reads those hours from here. Quarters of the period's start: it is an hour.
QUARTERS_SQL = f"""
INSERT INTO click_quarters (workspace_id, quarter, bot, qr, clicks, visitors)
SELECT workspace_id, date_bin('15 minutes', ts, $1), bot, qr, count(*),
       hll_add_agg(hll_hash_bigint(visitor), {HLL_ARGS})
FROM clicks WHERE workspace_id = ANY(ARRAY(SELECT id FROM workspaces)) AND ts >= $1 AND ts < $2
GROUP BY 1, 2, 3, 4
"""

BUILD_SQL = (
    _build_sql(PAIRS, sketch=False),
    _build_sql([*SKETCHED_PAIRS, *((d,) for d in SKETCHED_DIMS)], sketch=True),
)
# The busy links' rows ($4: BUSY_LINK_CLICKS of the period's length)
BUSY_LINKS_SQL = _build_sql(
    [(LINK,), *((LINK, d) for d in BUSY_LINK_DIMS)],
    sketch=False,
    where="""
          AND link_id = ANY(ARRAY(
              SELECT link_id FROM clicks
              WHERE workspace_id = ANY(ARRAY(SELECT id FROM workspaces)) AND ts >= $1 AND ts < $2
              GROUP BY 1 HAVING link_id IS NOT NULL AND count(*) >= $4))""",
)


def scope_links(kind: str, scope_id: str) -> str:
    """SQL: the ids of the links of the scope ``kind`` (tag or folder) whose id is the SQL ``scope_id``."""
    column, table, key = _SCOPE_LINKS[kind]
    return f"SELECT {column} FROM {table} WHERE {key} = {scope_id}"


def scope_fingerprint(kind: str, scope_id: str) -> str:
    """SQL: a fingerprint of those links ('' for none): a scope's rows count its links as they were when built."""
    column, table, key = _SCOPE_LINKS[kind]
    ordered = f'm.{column} COLLATE "C"'
    members = f"SELECT md5(string_agg(m.{column}, ',' ORDER BY {ordered})) FROM {table} AS m WHERE m.{key} = {scope_id}"
    return f"coalesce(({members}), '')"


def _scope_rows_sql() -> str:
    """A period's clicks of every tag's and folder's links by each of ``SCOPE_DIMS`` (one pass)."""
    sets = [(d,) for d in SCOPE_DIMS]
    dims = ", ".join(_grouped(sets))
    inner = ", ".join(f"{_EXPRESSIONS[d]} AS {d}" for d in SCOPE_DIMS)
    links = " UNION ALL ".join(
        f"SELECT '{kind}' AS kind, {key} AS scope, {column} AS link_id FROM {table} WHERE {key} IS NOT NULL"
        for kind, (column, table, key) in _SCOPE_LINKS.items()
    )
    return f"""
INSERT INTO click_pairs (workspace_id, period, hours, adim, avalue, bdim, bvalue, bot, qr, clicks, visitors)
SELECT workspace_id, $1, $3, kind, scope, {_case(sets, 0, True)}, {_case(sets, 0, False)}, bot, qr, clicks, NULL
FROM (
    SELECT workspace_id, bot, qr, kind, scope, {dims}, count(*) AS clicks, GROUPING({dims}) AS g
    FROM (SELECT workspace_id, bot, qr, link_id, {inner} FROM clicks
          WHERE workspace_id = ANY(ARRAY(SELECT id FROM workspaces)) AND ts >= $1 AND ts < $2) AS c
    JOIN ({links}) AS s USING (link_id)
    GROUP BY workspace_id, bot, qr, kind, scope, GROUPING SETS ({", ".join(f"({d})" for d in SCOPE_DIMS)})
) AS grouped
ORDER BY 1, 4, 6, 5
"""


# Every tag and folder (a scope) with the fingerprint of its links now
_SCOPES_NOW = " UNION ALL ".join(
    f"SELECT s.workspace_id, '{kind}' AS kind, s.id, {scope_fingerprint(kind, 's.id')} AS fingerprint FROM {kind}s AS s"
    for kind in SCOPES
)
# The workspaces with clicks in a built period (its single-dimension domain rows: every click has a domain)
_ACTIVE = (
    "SELECT DISTINCT workspace_id, period, hours FROM click_pairs"
    " WHERE workspace_id = ANY(ARRAY(SELECT id FROM workspaces)) AND adim = 'domain' AND bdim = ''"
)
SCOPE_SQL = (
    "DELETE FROM click_pairs WHERE period = $1 AND hours = $2 AND adim = ANY($3::text[])",
    _scope_rows_sql(),
    # a marker per scope of a workspace with clicks in the period (built before: BUILD_SQL's domain rows)
    f"""
INSERT INTO click_pairs (workspace_id, period, hours, adim, avalue, bdim, bvalue, bot, qr, clicks, visitors)
SELECT s.workspace_id, $1, $2, s.kind, s.id, '', s.fingerprint, false, false, 0, NULL
FROM ({_SCOPES_NOW}) AS s JOIN ({_ACTIVE} AND period = $1 AND hours = $2) AS a USING (workspace_id)
""",
)
# Built days and hours (from $1) in which a scope of a workspace with clicks has no marker with its
# fingerprint now: a link tagged, untagged or moved to another folder since, a scope created since, or a
# period built before migration 0028; newest first
_STALE_SCOPES_SQL = f"""
WITH s AS MATERIALIZED ({_SCOPES_NOW})
SELECT DISTINCT a.period, a.hours
FROM ({_ACTIVE} AND hours IN (1, 24) AND period >= $1) AS a
JOIN s USING (workspace_id)
JOIN click_pairs_built AS b ON b.period = a.period AND b.hours = a.hours AND {COMPLETE}
WHERE NOT EXISTS (
    SELECT 1 FROM click_pairs AS m
    WHERE m.workspace_id = s.workspace_id AND m.adim = s.kind AND m.bdim = '' AND m.avalue = s.id
      AND m.hours = a.hours AND m.period = a.period AND m.bvalue = s.fingerprint
)
ORDER BY 1 DESC
"""


async def build_scopes(conn: asyncpg.Connection, period: datetime, hours: int) -> None:
    """(Re)build one closed period's rows of every tag and folder, with their markers; the caller holds a
    transaction."""
    delete, rows, markers = SCOPE_SQL
    await conn.execute(delete, period, hours, list(SCOPES))
    await conn.execute(rows, period, period + timedelta(hours=hours), hours)
    await conn.execute(markers, period, hours)


async def stale_scope_periods(conn: asyncpg.Connection, since: datetime) -> list[tuple[datetime, int]]:
    return [(r["period"], r["hours"]) for r in await conn.fetch(_STALE_SCOPES_SQL, since)]


async def build_days(conn: asyncpg.Connection, days: Sequence[datetime]) -> None:
    """(Re)build these UTC days' rows of click_rollup_days and click_cube_days from the hourly tables, in one
    pass over them (migration 0022's ``build_click_days``, which its backfill runs too)."""
    await conn.execute("SELECT build_click_days($1::timestamptz[])", list(days))


async def build_period(conn: asyncpg.Connection, period: datetime, hours: int, days: bool = True) -> None:
    """(Re)build one closed period's rows from the raw rows (a day's rollup and cube rows from the hourly
    ones, under the same mark; ``days=False``: the caller builds them, several days in one pass); the
    caller holds a transaction."""
    end = period + timedelta(hours=hours)
    await conn.execute("DELETE FROM click_pairs WHERE period = $1 AND hours = $2", period, hours)
    for sql in BUILD_SQL:
        await conn.execute(sql, period, end, hours)
    if hours in BUSY_LINK_CLICKS:
        await conn.execute(BUSY_LINKS_SQL, period, end, hours, BUSY_LINK_CLICKS[hours])
    await build_scopes(conn, period, hours)
    await conn.execute("DELETE FROM click_quarters WHERE quarter >= $1 AND quarter < $2", period, end)
    await conn.execute(QUARTERS_SQL, period, end)
    if hours == DAY and days:
        await build_days(conn, [period])
    await _mark_built(conn, period, hours)


async def _mark_built(conn: asyncpg.Connection, period: datetime, hours: int) -> None:
    await conn.execute(
        "INSERT INTO click_pairs_built (period, hours, complete_at) VALUES ($1, $2, now())"
        " ON CONFLICT (period, hours) DO UPDATE SET built_at = now(), complete_at = now()",
        period, hours,
    )  # fmt: skip


# A week's rows are its seven days' rows summed, sketches unioned: the click_pairs of the days (hours 24) and
# click_rollup_days, so a week costs a pass over day rows, not over its raw clicks.
WEEK_SQL = (
    "DELETE FROM click_pairs WHERE period = $1 AND hours = 168",
    """
INSERT INTO click_pairs (workspace_id, period, hours, adim, avalue, bdim, bvalue, bot, qr, clicks, visitors)
SELECT workspace_id, $1::timestamptz, 168, adim, avalue, bdim, bvalue, bot, qr, sum(clicks)::bigint,
       hll_union_agg(visitors)
FROM click_pairs WHERE hours = 24 AND period >= $1 AND period < $1::timestamptz + interval '7 days'
  -- not busy links' rows (a week's days are not all busy: BUSY_LINK_CLICKS) nor scopes' (their days' markers)
  AND adim <> ALL('{link,tag,folder}')
GROUP BY workspace_id, adim, avalue, bdim, bvalue, bot, qr
ORDER BY 1, 2, 4, 3
""",
    "DELETE FROM click_rollup_weeks WHERE week = $1",
    """
INSERT INTO click_rollup_weeks (workspace_id, dim, week, value, bot, qr, clicks, visitors)
SELECT workspace_id, dim, $1::timestamptz, value, bot, qr, sum(clicks)::bigint, hll_union_agg(visitors)
FROM click_rollup_days WHERE day >= $1 AND day < $1::timestamptz + interval '7 days'
GROUP BY workspace_id, dim, value, bot, qr
""",
)

# The weeks to (re)build, newest first: those whose seven days are built complete, not built since the
# last of them was (a day rebuilt for late clicks makes its week stale).
_WEEKS_DUE_SQL = f"""
SELECT d.week FROM (
    SELECT date_bin('7 days', period, $1) AS week, count(*) AS days, max(built_at) AS last_built
    FROM click_pairs_built WHERE hours = 24 AND {COMPLETE} GROUP BY 1
) AS d
LEFT JOIN click_pairs_built AS w ON w.period = d.week AND w.hours = 168 AND w.complete_at = w.built_at
WHERE d.days = 7 AND (w.built_at IS NULL OR w.built_at < d.last_built)
ORDER BY 1 DESC
"""


async def build_week(conn: asyncpg.Connection, week: datetime) -> None:
    """(Re)build one week's rows from its seven built days' (``_WEEKS_DUE_SQL``); the caller holds a
    transaction."""
    for sql in WEEK_SQL:
        await conn.execute(sql, week)
    await _mark_built(conn, week, WEEK)


async def weeks_due(conn: asyncpg.Connection) -> list[datetime]:
    return [r["week"] for r in await conn.fetch(_WEEKS_DUE_SQL, WEEK_ORIGIN)]


def closed_before(now: datetime) -> datetime:
    """The end of the last closed hour: periods ending at or before it are built."""
    return (now - GRACE).replace(minute=0, second=0, microsecond=0)


def floor_day(t: datetime) -> datetime:
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def floor_week(t: datetime) -> datetime:
    """The start of t's UTC week (a Monday: ``WEEK_ORIGIN``, as the job's date_bin)."""
    return WEEK_ORIGIN + (t - WEEK_ORIGIN) // timedelta(days=7) * timedelta(days=7)


async def _prepare(conn: asyncpg.Connection) -> None:
    await conn.execute("SET LOCAL timezone = 'UTC'")
    await conn.execute("SET LOCAL work_mem = '64MB'")  # the grouping sets' hash tables stay in memory


async def _changed_since_built(conn: asyncpg.Connection, since: datetime) -> dict[tuple[datetime, int], int]:
    """Built periods (from ``since``) whose clicks in the rollup (folded or not) now differ from their
    pairs' or (days) their day rows': events stored late. Readers already take the raw rows or hours for
    them (api ``built_pairs``).
    Each with the clicks now stored in its changed workspaces (to tell whether it is still changing)."""
    rows = await conn.fetch(
        """
        WITH stored AS (
            SELECT workspace_id, hour, sum(clicks) AS clicks FROM (
                SELECT workspace_id, hour, clicks FROM click_rollups
                WHERE workspace_id = ANY(ARRAY(SELECT id FROM workspaces)) AND dim = 'count' AND hour >= $1
                UNION ALL
                SELECT workspace_id, hour, clicks FROM click_rollup_deltas WHERE dim = 'count' AND hour >= $1
            ) AS s GROUP BY 1, 2
        ), r AS (
            SELECT b.period, b.hours, s.workspace_id, sum(s.clicks) AS clicks
            FROM click_pairs_built AS b
            JOIN stored AS s ON s.hour >= b.period AND s.hour < b.period + make_interval(hours => b.hours)
            WHERE b.period >= $1 AND b.hours <> 168  -- weeks: rebuilt after their days (weeks_due)
            GROUP BY 1, 2, 3
        ), p AS (
            SELECT period, hours, workspace_id, sum(clicks) AS clicks FROM click_pairs
            WHERE adim = 'domain' AND bdim = '' AND period >= $1 AND hours <> 168
            GROUP BY 1, 2, 3
        ), d AS (
            SELECT day AS period, 24::smallint AS hours, workspace_id, sum(clicks) AS clicks FROM click_rollup_days
            WHERE dim = 'count' AND day >= $1
            GROUP BY 1, 2, 3
        )
        SELECT period, hours, coalesce(sum(r.clicks), 0) AS stored
        FROM r FULL JOIN p USING (period, hours, workspace_id) FULL JOIN d USING (period, hours, workspace_id)
        WHERE (r.clicks IS DISTINCT FROM p.clicks OR (hours = 24 AND r.clicks IS DISTINCT FROM d.clicks))
          AND (period, hours) IN (SELECT period, hours FROM click_pairs_built)
        GROUP BY 1, 2
        """,
        since,
    )
    return {(r["period"], r["hours"]): r["stored"] for r in rows}


async def aggregate_closed_periods(
    conn: asyncpg.Connection,
    now: datetime,
    lookback: timedelta = LOOKBACK,
    limit: int = PERIODS_PER_RUN,
    late_check: timedelta = LATE_CHECK,
    seen: dict[tuple[datetime, int], int] | None = None,
) -> int | None:
    """The background job: build up to ``limit`` closed periods not built yet (newest first),
    rebuild those of the last ``late_check`` whose clicks changed since, then the weeks due (``weeks_due``)
    and the tags' and folders' rows of the periods whose links changed (``stale_scope_periods``) within the
    same ``limit``, drop hourly rows older than ``HOURLY_KEPT``.

    With ``seen`` (the job's memory from its previous run), a changed period is rebuilt only once its
    clicks stopped changing since that run: a backlog replayed into a closed hour (ingest catching up
    after an outage) would otherwise be rebuilt on every run while it lands, a full pass each time.
    Readers take its raw rows meanwhile, so waiting changes no answer.

    Returns how many periods were built; ``None`` if another process holds the job.
    """
    closed = closed_before(now)
    async with conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _LOCK):
            return None
        await _prepare(conn)
        marked = await conn.fetch(f"SELECT period, hours FROM click_pairs_built WHERE {COMPLETE}")
        built = {(r["period"], r["hours"]) for r in marked}
        todo = [(closed - timedelta(hours=i), HOUR) for i in range(1, int(HOURLY_KEPT / timedelta(hours=1)) + 1)]
        day = floor_day(closed) - timedelta(days=1)
        while day >= closed - lookback:
            todo.append((day, DAY))
            day -= timedelta(days=1)
        todo = [p for p in todo if p not in built]
        changed = await _changed_since_built(conn, closed - late_check)
        if seen is not None:
            settled = [p for p, stored in changed.items() if seen.get(p) == stored]
            seen.clear()
            seen.update(changed)
            changed = dict.fromkeys(settled, 0)
        todo += changed
        todo.sort(key=lambda p: p[0], reverse=True)
        for period, hours in todo[:limit]:
            await build_period(conn, period, hours)
        # then the weeks whose days are all built (this run's builds included), within the same bound
        weeks = (await weeks_due(conn))[: max(0, limit - len(todo))]
        for week in weeks:
            await build_week(conn, week)
        # then the tags' and folders' rows of periods whose markers count links they no longer have
        left = max(0, limit - len(todo) - len(weeks))
        stale = (await stale_scope_periods(conn, closed - lookback))[:left] if left else []
        for period, hours in stale:
            await build_scopes(conn, period, hours)
        # hourly rows past the kept window are dropped once their day is built (the day answers them)
        await conn.execute(
            "DELETE FROM click_pairs AS p USING click_pairs_built AS b WHERE p.hours = 1 AND p.period < $1"
            " AND b.hours = 24 AND b.period = date_trunc('day', p.period)",
            closed - HOURLY_KEPT,
        )  # fmt: skip
        await conn.execute(
            "DELETE FROM click_pairs_built AS h WHERE h.hours = 1 AND h.period < $1 AND EXISTS"
            " (SELECT 1 FROM click_pairs_built AS b WHERE b.hours = 24 AND b.period = date_trunc('day', h.period))",
            closed - HOURLY_KEPT,
        )  # fmt: skip
        return min(len(todo), limit) + len(weeks) + len(stale)


async def rebuild_pairs(conn: asyncpg.Connection, start: datetime, end: datetime, now: datetime) -> int:
    """Rebuild every closed period in [start, end) (the days, and the hours kept); the caller holds a
    transaction. The same rows as the job's: ``build_period`` for each, the days' rollup and cube rows
    with one ``build_days``, then the weeks whose days are all built."""
    await _prepare(conn)
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
    closed = min(closed_before(now), end.replace(minute=0, second=0, microsecond=0))
    periods = []
    day = floor_day(start)
    if day < start:
        day += timedelta(days=1)
    while day + timedelta(days=1) <= closed:
        periods.append((day, DAY))
        day += timedelta(days=1)
    hour = max(closed - HOURLY_KEPT, start.replace(minute=0, second=0, microsecond=0))
    if hour < start:
        hour += timedelta(hours=1)
    while hour + timedelta(hours=1) <= closed:
        periods.append((hour, HOUR))
        hour += timedelta(hours=1)
    for period, hours in periods:
        await build_period(conn, period, hours, days=False)
    # the days' rollup and cube rows in one pass over the hours (a pass per day read the whole range each time
    # after a bulk load, whose rows are in no hour order)
    await build_days(conn, [period for period, hours in periods if hours == DAY])
    weeks = await weeks_due(conn)
    for week in weeks:
        await build_week(conn, week)
    for table in ("click_pairs", "click_rollup_days", "click_cube_days", "click_rollup_weeks"):
        await conn.execute(f"ANALYZE {table}")  # a bulk load's new rows: plans need their statistics at once
    return len(periods) + len(weeks)
