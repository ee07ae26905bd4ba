"""Click analytics for one workspace: grouped counts, time series, raw events, streamed export.

Reads ``clicks`` (written by ingest), the hourly ``click_rollup_totals`` and ``click_cube_totals``
(the folded rows plus the increments ingest appended in the same transaction as the clicks and
has not folded yet), their per-day ``click_rollup_days`` and ``click_cube_days``, per-week
``click_rollup_weeks``, and ``click_pairs`` (docs/analytics.md). ``plan`` picks the source that gives exactly
the raw rows' answer; the range is cut into built UTC weeks (rollup, pairs) and days, pre-aggregated hours and
raw runs (the partial hours), added up per key.
Everything else reads ``clicks`` through its (workspace_id, ts) or (link_id, ts) index.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import string
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import asyncpg

from api.errors import QueryTimedOut, field_error
from api.services.analytics_query import MIN_INSTANT, AnalyticsQuery, bucket_starts, parse_query
from api.services.context import ServiceContext
from ingest.pairs import (
    BUSY_LINK_DIMS,
    COMPLETE,
    CUBE_DIMS,
    FEW_VALUED_PAIRS,
    HIGH_DIMS,
    LINK,
    SCOPE_DIMS,
    SKETCHED_DIMS,
    SKETCHED_PAIRS,
    floor_day,
    floor_week,
    scope_fingerprint,
    scope_links,
)

__all__ = ["AnalyticsQuery", "analytics", "list_events", "parse_query", "reading"]
# Deep OFFSET pages make Postgres read and drop every row before them: past this, use the cursor.
MAX_OFFSET = 10_000

# groupBy → (column in clicks, rollup dim, output key)
DIMENSIONS: dict[str, tuple[str, str, str]] = {
    "countries": ("country", "country", "country"),
    "regions": ("country || '/' || region", "region", "region"),
    "cities": ("country || '/' || city", "city", "city"),
    "continents": ("continent", "continent", "continent"),
    "devices": ("device", "device", "device"),
    "browsers": ("browser", "browser", "browser"),
    "os": ("os", "os", "os"),
    "referers": ("referer", "referer", "referer"),
    "referer_urls": ("referer_url", "referer_url", "refererUrl"),
    "top_links": ("coalesce(link_id, '')", "link", "linkId"),
    # snake_case like the links' own utm_* fields and the utm_* filters: one name per field in the API
    "utm_sources": ("utm_source", "utm_source", "utm_source"),
    "utm_mediums": ("utm_medium", "utm_medium", "utm_medium"),
    "utm_campaigns": ("utm_campaign", "utm_campaign", "utm_campaign"),
    "utm_terms": ("utm_term", "utm_term", "utm_term"),
    "utm_contents": ("utm_content", "utm_content", "utm_content"),
}

EVENT_COLUMNS = (
    "event_id", "ts", "link_id", "domain", "slug", "url", "country", "region", "city", "continent",
    "latitude", "longitude", "device", "device_brand", "device_model", "browser", "browser_version",
    "os", "os_version", "referer", "referer_url", "utm_source", "utm_medium", "utm_campaign", "utm_term",
    "utm_content", "bot", "qr", "visitor", "ip", "method", "ua",
)  # fmt: skip


def _event_key(column: str) -> str:
    if column in ("event_id", "ts"):
        return "id" if column == "event_id" else "timestamp"
    if column.startswith("utm_"):  # as links and the filters spell them
        return column
    head, *rest = column.split("_")
    return head + "".join(p.title() for p in rest)


EVENT_KEYS = tuple(_event_key(c) for c in EVENT_COLUMNS)


@dataclass
class _Sql:
    """Positional parameters collected while the SQL text is built."""

    args: list[Any] = field(default_factory=list)

    def p(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"


def _raw_where(sql: _Sql, ws: str, q: AnalyticsQuery, start: datetime, end: datetime) -> str:
    return f"ts >= {sql.p(start)} AND ts < {sql.p(end)} AND {_raw_filters(sql, ws, q)}"


def _raw_filters(sql: _Sql, ws: str, q: AnalyticsQuery) -> str:
    """The raw rows of the query's workspace and filters (the caller bounds the time)."""
    parts = [f"workspace_id = {sql.p(ws)}"]
    if not q.include_bots:
        parts.append("NOT bot")
    if q.qr is not None:
        parts.append(f"qr = {sql.p(q.qr)}")
    for column, value in q.filters.items():
        if column in SCOPE_OF:
            parts.append(f"link_id IN ({scope_links(SCOPE_OF[column], sql.p(value))})")
        else:
            parts.append(f"{column} = {sql.p(value)}")
    return " AND ".join(parts)


# Unique visitors of a range with at most this many clicks, unfiltered or of one link, are counted exactly
# from the raw rows (a count(DISTINCT) over them costs about what the sketches do); above it, or with other
# filters, sketches (exact up to 640 visitors: explicit; else ~1.15 %).
EXACT_VISITORS_MAX_CLICKS = 20_000
# Sketch parameters shared with ingest (ingest/sketch.py HLL_ARGS): unions need them equal.
_RAW_SKETCH = "hll_add_agg(hll_hash_bigint(visitor), 13, 5, -1, 0)"
# groupBy → column of click_cube (count and timeseries use any table)
CUBE_GROUPS = {"countries": "country", "continents": "continent", "devices": "device", "browsers": "browser",
               "os": "os"}  # fmt: skip
# filters the cube answers: its columns (CUBE_DIMENSIONS in ingest/store.py)
CUBE_FILTERS = frozenset(CUBE_GROUPS.values())
# rollup dims whose rows keep a sketch of their visitors (VISITOR_DIMENSIONS in ingest/store.py)
VISITOR_DIMS = frozenset({"count", "country", "device", "link"})
# filter column → (rollup dim, condition on its value): the one-filter count and time series
_ROLLUP_FILTERS = {
    "link_id": ("link", "value = {}"),
    # ARRAY(…): the ids are read first, then each one's rows through click_rollups_value
    "tag_id": ("link", "value = ANY(ARRAY(SELECT link_id FROM link_tags WHERE tag_id = {}))"),
    "folder_id": ("link", "value = ANY(ARRAY(SELECT id FROM links WHERE folder_id = {}))"),
    "domain": ("domain", "value = {}"),
    # region and city values carry their country ("US/Portland"), a two-letter code or '': the name
    # under every possible code, each looked up through click_rollups_value (no scan of every city)
    "region": ("region", "value = ANY(ARRAY(SELECT c || '/' || {} FROM unnest(${codes}::text[]) AS c))"),
    "city": ("city", "value = ANY(ARRAY(SELECT c || '/' || {} FROM unnest(${codes}::text[]) AS c))"),
    **{c: (c, "value = {}") for c in ("country", "continent", "device", "browser", "os", "referer",
                                      "referer_url", "utm_source", "utm_medium", "utm_campaign", "utm_term",
                                      "utm_content")},
}  # fmt: skip


# filter column → the scope (ingest/pairs.py SCOPES) whose links it keeps
SCOPE_OF = {"tag_id": "tag", "folder_id": "folder"}
# every value a click's country can take (ISO 3166-1 alpha-2 or '' for unknown): 677 index probes
_COUNTRY_CODES = ("", *(a + b for a in string.ascii_uppercase for b in string.ascii_uppercase))


@dataclass(frozen=True)
class Plan:
    """Where an answer comes from: ``raw`` rows, the per-dimension ``rollup``, the ``cube``, or ``pairs``.

    ``dim``/``condition``/``value``: the rollup rows read (one dimension, optionally one value).
    Pairs: the rows of (``dim``, ``bdim``), filtered on the sides in ``sides`` (filter column → "a"
    or "b"), grouped by the value of side ``key`` ("" for count and timeseries).
    """

    source: str
    dim: str = ""
    condition: str = ""
    value: str | None = None
    bdim: str = ""
    sides: tuple[tuple[str, str], ...] = ()
    key: str = ""


RAW = Plan("raw")
# Raw runs covering more than this share of the range: the raw rows for the whole range instead.
MAX_RAW_SHARE = 0.5


def _busy_link(how: Plan) -> bool:
    """Whether the answer reads the busy links' rows (a link's ranking by a high-cardinality dimension): and
    the link's raw rows where it was not busy (``_unmarked``)."""
    return how.source == "pairs" and how.dim == LINK


def _scoped(how: Plan) -> bool:
    """Whether the answer reads a tag's or folder's rows: and its raw rows where they are stale (``_unmarked``)."""
    return how.source == "pairs" and how.dim in SCOPE_OF.values()


def _scope_plan(q: AnalyticsQuery) -> Plan | None:
    """A tag's or folder's own rows (ingest/pairs.py SCOPE_SQL) answer its rankings by every dimension but
    the link (top links of a tag: the rollup), and its count and series with one more filter; clicks only
    (with ``unique=true``, a tag's countries and devices come from its links' sketches)."""
    scoped = [column for column in q.filters if column in SCOPE_OF]
    if q.unique or len(scoped) != 1:
        return None
    (column,) = scoped
    others = {c: c if c in SCOPE_DIMS else "" for c in q.filters if c != column}
    if q.group_by in ("count", "timeseries"):
        if len(others) == 1 and all(others.values()):
            ((other, b),) = others.items()
            return Plan("pairs", SCOPE_OF[column], bdim=b, sides=((column, "a"), (other, "b")))
        return None
    group = DIMENSIONS[q.group_by][1]
    if others or group not in SCOPE_DIMS:
        return None
    return Plan("pairs", SCOPE_OF[column], bdim=group, sides=((column, "a"),), key="b")


def _pair_dim(column: str) -> str:
    """The click_pairs dimension of a filter column or a groupBy's dimension ('' if none): the link's
    for a link, a tag or a folder (the link rows of the tag's or folder's links)."""
    if column in CUBE_DIMS or column in HIGH_DIMS:
        return column
    return LINK if column in ("link_id", "tag_id", "folder_id", LINK) else ""


def _few_valued(a: str, b: str) -> tuple[str, str] | None:
    """The stored order of a pair of ``FEW_VALUED_PAIRS`` (a domain's, a UTM source's or medium's), asked in
    either order, or None."""
    return (a, b) if (a, b) in FEW_VALUED_PAIRS else (b, a) if (b, a) in FEW_VALUED_PAIRS else None


def _pairs_plan(q: AnalyticsQuery) -> Plan | None:
    """click_pairs (ingest/pairs.py) answers: a ranked groupBy with one filter, one of them a cube
    dimension and the other a high-cardinality one or the link; count and timeseries with one filter of
    each kind; unique visitors where the rows read keep a sketch (the single dimensions whose rollup
    keeps none, a link's countries and devices). A domain's, UTM source's or medium's rankings by another
    high-cardinality dimension or the link, the reverse (the sources of one city or link), and count and series
    with one filter of each (``FEW_VALUED_PAIRS``). From the busy links' rows
    (``BUSY_LINK_DIMS``), one link's rankings by a high-cardinality dimension and its count and series with
    one such filter (with its raw rows where it was not busy). From a tag's or folder's own rows, its
    rankings and its count and series with one more filter (``_scope_plan``). Clicks only for these three."""
    scoped = _scope_plan(q)
    if scoped:
        return scoped
    dims = {column: _pair_dim(column) for column in q.filters}
    if not all(dims.values()):
        return None
    if q.group_by in ("count", "timeseries"):
        if q.unique and len(dims) == 1 and next(iter(dims.values())) in SKETCHED_DIMS:
            ((column, dim),) = dims.items()
            return Plan("pairs", dim, sides=((column, "a"),))
        if len(dims) == 2:
            (first, a), (second, b) = sorted(dims.items(), key=lambda cd: cd[1] not in CUBE_DIMS)
            if a in CUBE_DIMS and b not in CUBE_DIMS and (not q.unique or (a, b) in SKETCHED_PAIRS):
                return Plan("pairs", a, bdim=b, sides=((first, "a"), (second, "b")))
            few = _few_valued(a, b)
            if few and not q.unique:  # a domain's, UTM source's or medium's pairs
                sides = ((first, "a"), (second, "b")) if few == (a, b) else ((second, "a"), (first, "b"))
                return Plan("pairs", few[0], bdim=few[1], sides=sides)
            if "link_id" in dims and not q.unique:
                ((other, b),) = ((c, d) for c, d in dims.items() if c != "link_id")
                if b in BUSY_LINK_DIMS:
                    return Plan("pairs", LINK, bdim=b, sides=(("link_id", "a"), (other, "b")))
        return None
    group = _pair_dim(DIMENSIONS[q.group_by][1])
    if len(dims) != 1 or not group:
        return None
    ((column, dim),) = dims.items()
    if dim in CUBE_DIMS and group not in CUBE_DIMS:
        how = Plan("pairs", dim, bdim=group, sides=((column, "a"),), key="b")
    elif dim not in CUBE_DIMS and group in CUBE_DIMS:
        how = Plan("pairs", group, bdim=dim, sides=((column, "b"),), key="a")
    elif (few := _few_valued(dim, group)) and not q.unique:
        side, key = ("a", "b") if few[0] == dim else ("b", "a")
        how = Plan("pairs", few[0], bdim=few[1], sides=((column, side),), key=key)
    elif column == "link_id" and group in BUSY_LINK_DIMS and not q.unique:
        how = Plan("pairs", LINK, bdim=group, sides=((column, "a"),), key="b")
    else:
        return None
    return how if not q.unique or (how.dim, how.bdim) in SKETCHED_PAIRS else None


def plan(q: AnalyticsQuery) -> Plan:
    """The cheapest source that gives exactly the raw rows' answer (visitors within the sketch's error).

    In order: the per-dimension rollup (unfiltered, or count/timeseries with one filter), the cube
    (groupBy and filters among its columns), the pairs, else the raw rows (through the (workspace_id, ts)
    or (link_id, ts) index). Which periods of the range they answer is ``_pieces``' choice (the others
    are read raw): a time series whose buckets split every hour (minute buckets, hour buckets in
    Asia/Kolkata) is read raw whatever the plan.
    """
    series = q.group_by in ("count", "timeseries")
    dim = "count" if series else DIMENSIONS[q.group_by][1]
    if not q.filters and (not q.unique or dim in VISITOR_DIMS):
        return Plan("rollup", dim)
    if len(q.filters) == 1:
        ((column, value),) = q.filters.items()
        fdim, condition = _ROLLUP_FILTERS[column]
        # count and series with one filter; a ranking filtered by a value of its own dimension
        if (series or fdim == dim) and (not q.unique or fdim in VISITOR_DIMS):
            return Plan("rollup", fdim, condition, value)
    if (series or q.group_by in CUBE_GROUPS) and set(q.filters) <= CUBE_FILTERS:
        return Plan("cube")
    return _pairs_plan(q) or RAW


def _spans(starts: list[datetime], step: timedelta) -> list[tuple[datetime, datetime]]:
    """Consecutive periods (sorted starts, each ``step`` long) as few [start, end) ranges."""
    out: list[tuple[datetime, datetime]] = []
    for s in sorted(starts):
        if out and out[-1][1] == s:
            out[-1] = (out[-1][0], s + step)
        else:
            out.append((s, s + step))
    return out


def _value_condition(sql: _Sql, condition: str, value: str, side: str = "") -> str:
    """A ``_ROLLUP_FILTERS`` condition on the ``value`` column (``side``: on ``avalue`` or ``bvalue``)."""
    if "${codes}" in condition:
        condition = condition.replace("${codes}", sql.p(list(_COUNTRY_CODES)))
    return side + condition.format(sql.p(value))


def _pre_where(
    sql: _Sql, ws: str, q: AnalyticsQuery, p: Plan, period: str, spans: list[tuple[datetime, datetime]]
) -> str:
    within = " OR ".join(f"({period} >= {sql.p(s)} AND {period} < {sql.p(e)})" for s, e in spans)
    parts = [f"workspace_id = {sql.p(ws)}", f"({within})"]
    if p.source == "rollup":
        parts.append(f"dim = {sql.p(p.dim)}")
        if p.value is not None:
            parts.append(_value_condition(sql, p.condition, p.value))
    else:
        parts += [f"{column} = {sql.p(value)}" for column, value in q.filters.items()]
    if not q.include_bots:
        parts.append("NOT bot")
    if q.qr is not None:
        parts.append(f"qr = {sql.p(q.qr)}")
    return " AND ".join(parts)


def _grouped_sql(
    ws: str,
    q: AnalyticsQuery,
    key_raw: str,
    key_pre: str,
    first_args: tuple[Any, ...] = (),
    fast: bool = True,
    only: list[str] | None = None,
    built: frozenset[tuple[datetime, int]] = frozenset(),
) -> tuple[str, list[Any]]:
    """SELECT key, clicks[, visitors] over the range, from pre-aggregated periods where ``plan`` allows.

    ``first_args`` become $1… (used by the key expressions, e.g. the time zone); ``key_pre`` is
    the key over the pre-aggregated rows, written for the rollup (``value``) or a column name, over
    the column ``hour``. ``built``: the periods ``built_pairs`` found whole. ``only``: the keys to
    count (the ranked rows shown), so that only their sketches are unioned.
    """
    sql = _Sql(list(first_args))
    how = plan(q) if fast else RAW
    pieces = _plan_pieces(q, how, built) if how.source != "raw" else None
    if pieces is None:
        visitors = ", count(DISTINCT visitor) AS visitors" if q.unique else ""
        text = (
            f"SELECT {key_raw} AS key, count(*) AS clicks{visitors} FROM clicks"
            f" WHERE {_raw_where(sql, ws, q, q.start, q.end)} GROUP BY 1"
        )
        return text, sql.args
    only_p = f"{sql.p(only)}::text[]" if only is not None else ""
    if how.source == "pairs":
        pre = [_pairs_pre(sql, ws, q, how, key_pre, pieces, only_p)]
        if _busy_link(how) or _scoped(how):
            pre.append(_unmarked(sql, ws, q, how, key_raw, pieces))
    else:
        pre = _rollup_pre(sql, ws, q, how, key_pre, pieces, only_p)
    return _summed(sql, ws, q, key_raw, pre, pieces.runs, only_p), sql.args


def _plan_pieces(q: AnalyticsQuery, how: Plan, built: frozenset[tuple[datetime, int]]) -> Pieces | None:
    """The pieces an answer planned ``how`` reads."""
    return _pieces(
        q, built, every_hour=how.source != "pairs", quarters=_quarters_serve(q, how), weeks=_weeks_serve(q, how)
    )


def _marker(sql: _Sql, ws: str, q: AnalyticsQuery, how: Plan) -> str:
    """The condition on ``click_pairs AS m`` that finds a period's marker: a busy link's (ingest/pairs.py
    BUSY_LINKS_SQL), or a tag's or folder's built with the links it has now (SCOPE_SQL)."""
    column = "link_id" if _busy_link(how) else next(c for c in q.filters if c in SCOPE_OF)
    scope = sql.p(q.filters[column])
    out = f"m.workspace_id = {sql.p(ws)} AND m.adim = {sql.p(how.dim)} AND m.bdim = '' AND m.avalue = {scope}"
    return out if _busy_link(how) else f"{out} AND m.bvalue = {scope_fingerprint(how.dim, scope)}"


def _unmarked(sql: _Sql, ws: str, q: AnalyticsQuery, how: Plan, key_raw: str, pieces: Pieces) -> str:
    """The SELECT of the raw rows in the built days and hours without a marker (``_marker``), one index range
    each: a link's periods in which it was not busy (fewer than ``BUSY_LINK_CLICKS`` clicks: its (link_id, ts)
    range), a tag's or folder's in which its links changed since they were built. Where the marker is, the
    rows are the pairs' (``_pairs_pre``)."""
    periods = [(p, 24) for p in pieces.days] + [(p, 1) for p in pieces.hours]
    starts, hours = sql.p([p for p, _ in periods]), sql.p([h for _, h in periods])
    # OFFSET 0: not pulled up into a join, which scanned all the link's rows and then kept the quiet periods'
    # (a busy link: 900 ms for 24h on 10M clicks); per quiet period, its index range
    return f"""SELECT {key_raw} AS key, count(*) AS clicks FROM (
    SELECT p AS quiet_start, p + make_interval(hours => h) AS quiet_end
    FROM unnest({starts}::timestamptz[], {hours}::int[]) AS ph(p, h)
    WHERE NOT EXISTS (SELECT 1 FROM click_pairs AS m WHERE {_marker(sql, ws, q, how)} AND m.hours = h AND m.period = p)
) AS quiet CROSS JOIN LATERAL (
    SELECT * FROM clicks WHERE ts >= quiet_start AND ts < quiet_end AND {_raw_filters(sql, ws, q)} OFFSET 0
) AS c GROUP BY 1"""


# click_quarters: all the workspace's clicks (``_quarters_serve``), so no condition but bots and qr
_QUARTERS = Plan("quarters")
# per source: (week table, day table, hour table); the cube has no weeks (``_weeks_serve``)
_TABLES = {
    "rollup": ("click_rollup_weeks", "click_rollup_days", "click_rollup_totals"),
    "cube": ("", "click_cube_days", "click_cube_totals"),
}


def _at(key_pre: str, column: str) -> str:
    """A key over the ``hour`` column (a time series bucket) over another period column."""
    return key_pre.replace(", hour, ", f", {column}, ")


def _rollup_pre(
    sql: _Sql,
    ws: str,
    q: AnalyticsQuery,
    how: Plan,
    key_pre: str,
    pieces: Pieces,
    only_p: str,
) -> list[str]:
    """SELECTs of the rollup's or the cube's rows: the week, day and hour rows of the pieces' weeks, days and
    hours, the click_quarters rows of the hours ``quartered``."""
    if how.source == "cube" and key_pre == "value":
        key_pre = CUBE_GROUPS[q.group_by]
    sketch = ", hll_union_agg(visitors) AS sketch" if q.unique else ""
    week_table, day_table, hour_table = _TABLES[how.source]
    out = []
    for table, column, starts, step, rows in (
        (week_table, "week", pieces.weeks, _WEEK, how),
        (day_table, "day", pieces.days, _DAY, how),
        (hour_table, "hour", pieces.hours, _HOUR, how),
        ("click_quarters", "quarter", pieces.quartered, _HOUR, _QUARTERS),
    ):
        if starts:
            key = _at(key_pre, column)
            where = _pre_where(sql, ws, q, rows, column, _spans(starts, step))
            pre_only = f" AND {key} = ANY({only_p})" if only_p else ""
            out.append(
                f"SELECT {key} AS key, sum(clicks) AS clicks{sketch} FROM {table} WHERE {where}{pre_only} GROUP BY 1"
            )
    return out


def _runs(sql: _Sql, ws: str, q: AnalyticsQuery, spans: list[tuple[datetime, datetime]]) -> str:
    """The raw rows of the query's filters in the [start, end) ``spans``, as a FROM item: one (workspace_id, ts)
    index range per span, joined laterally. Not one scan with the spans OR'ed: the planner costs a bitmap scan
    of an OR as if its rows lay all over the partition (they are in ts order), and a month's partition then
    looked as cheap to scan whole (10M clicks: the 18 raw hours of a 30-day answer 1.1 s, against 0.16 s
    through the index). OFFSET 0: each span's rows stay its own index range."""
    starts, ends = sql.p([s for s, _ in spans]), sql.p([e for _, e in spans])
    return f"""unnest({starts}::timestamptz[], {ends}::timestamptz[]) AS run(run_start, run_end) CROSS JOIN LATERAL (
    SELECT * FROM clicks WHERE ts >= run_start AND ts < run_end AND {_raw_filters(sql, ws, q)} OFFSET 0
) AS c"""


def _summed(
    sql: _Sql,
    ws: str,
    q: AnalyticsQuery,
    key_raw: str,
    pre: list[str],
    runs: list[tuple[datetime, datetime]],
    only_p: str,
) -> str:
    """The pre-aggregated SELECTs plus the raw rows of ``runs`` (a backwards run subtracted), added up per key."""
    raw_sketch = f", {_RAW_SKETCH} AS sketch" if q.unique else ""
    raw_only = f" WHERE {key_raw} = ANY({only_p})" if only_p else ""
    edges = []
    added = [(s, e) for s, e in runs if s < e]
    if added:
        head = f"SELECT {key_raw} AS key, count(*) AS clicks{raw_sketch} FROM "
        edges.append(f"{head}{_runs(sql, ws, q, added)}{raw_only} GROUP BY 1")
    subtracted = [(e, s) for s, e in runs if e < s]  # the rest of a day read from its row
    if subtracted:
        minus = f"SELECT {key_raw} AS key, -count(*) AS clicks FROM "
        edges.append(f"{minus}{_runs(sql, ws, q, subtracted)}{raw_only} GROUP BY 1")
    union = " UNION ALL ".join([*pre, *edges])
    visitors = ", round(coalesce(hll_cardinality(hll_union_agg(sketch)), 0))::bigint AS visitors" if q.unique else ""
    # a key whose clicks all fell in a subtracted part nets 0: not a key of the answer
    having = "" if q.unique else " HAVING sum(clicks) > 0"
    return f"SELECT key, sum(clicks)::bigint AS clicks{visitors} FROM ({union}) AS parts GROUP BY 1{having}"


_WEEK, _DAY, _HOUR = timedelta(days=7), timedelta(days=1), timedelta(hours=1)


class Pieces(NamedTuple):
    """A range cut into built UTC weeks and days, pre-aggregated hours, hours read as their quarters, and
    raw runs (a backwards run is subtracted: ``_complements``)."""

    weeks: list[datetime]
    days: list[datetime]
    hours: list[datetime]
    quartered: list[datetime]
    runs: list[tuple[datetime, datetime]]


def _bucket_cuts(q: AnalyticsQuery) -> list[datetime]:
    """The starts (UTC) of a time series' buckets; none for other groupBys."""
    if q.group_by != "timeseries":
        return []
    return [b.astimezone(UTC) for b in bucket_starts(q.start, q.end, q.bucket, q.zone)]


def _days_serve(q: AnalyticsQuery, cuts: list[datetime]) -> bool:
    """Day rows can answer: a count per value, or a series whose every bucket starts on a UTC midnight."""
    return q.group_by != "timeseries" or (
        q.bucket in ("day", "month") and all(b.timestamp() % 86400 == 0 for b in cuts)
    )


def _quarters_serve(q: AnalyticsQuery, how: Plan) -> bool:
    """click_quarters can answer the hours a bucket starts inside: a series of all the workspace's clicks
    (the unfiltered rollup) whose buckets start on UTC quarter hours, some inside an hour (Asia/Kolkata)."""
    if how.source != "rollup" or how.dim != "count" or how.value is not None:
        return False
    cuts = [b.timestamp() for b in _bucket_cuts(q)]
    return all(c % 900 == 0 for c in cuts) and any(c % 3600 for c in cuts)


def _weeks_serve(q: AnalyticsQuery, how: Plan) -> bool:
    """Week rows can answer: counts and rankings (not a series: its buckets are days or shorter, or months a
    week straddles) from the rollup or the pairs, but not the busy links' (not summed into weeks). The cube
    keeps no weeks."""
    return how.source in ("rollup", "pairs") and q.group_by != "timeseries" and not _busy_link(how) and not _scoped(how)


def _reads_complete(q: AnalyticsQuery, how: Plan) -> bool:
    """Whether the answer reads rows only the periods marked complete have (link pairs, busy links' rows,
    quarters, the few-valued dimensions' pairs: migrations 0024, 0025, 0028, 0029)."""
    return how.bdim == LINK or _busy_link(how) or (how.dim, how.bdim) in FEW_VALUED_PAIRS or _quarters_serve(q, how)


def _reads_built(q: AnalyticsQuery, how: Plan) -> bool:
    """Whether the answer may read a built period: pairs always; rollup and cube only whole days (their
    hours are all there), so not a range without a whole UTC day (24h) nor buckets days cannot serve,
    or the quarters of built periods."""
    if how.source in ("raw", "pairs"):
        return how.source == "pairs"
    if _quarters_serve(q, how):
        return True
    first_day = floor_day(q.start - timedelta(microseconds=1)) + _DAY
    return first_day + _DAY <= q.end and _days_serve(q, _bucket_cuts(q))


def _pieces(
    q: AnalyticsQuery,
    built: frozenset[tuple[datetime, int]],
    every_hour: bool,
    quarters: bool = False,
    weeks: bool = False,
) -> Pieces | None:
    """[start, end) as built UTC weeks (with ``weeks``) and days, pre-aggregated hours, hours read as their
    quarters, and raw runs; None when too fragmented to pay.

    Hours: every whole hour with ``every_hour`` (the rollup and the cube are hourly), else the built
    ones (click_pairs). A day row serves a time series only if the day lies in one bucket (day or
    month buckets on UTC midnights); an hour row only if the hour does. An hour a bucket starts inside
    (every Asia/Kolkata day starts at 18:30 UTC) is read from its built quarters with ``quarters``
    (``_quarters_serve``), else it is a raw run.
    """
    cuts = _bucket_cuts(q)
    days_ok = _days_serve(q, cuts)
    split = {b.replace(minute=0, second=0, microsecond=0) for b in cuts if b.timestamp() % 3600}
    whole_weeks: list[datetime] = []
    days: list[datetime] = []
    hours: list[datetime] = []
    quartered: list[datetime] = []
    runs: list[tuple[datetime, datetime]] = []
    pos, end = q.start, q.end
    while pos < end:
        on_hour = pos.minute == 0 and pos.second == 0 and pos.microsecond == 0
        if weeks and on_hour and pos.hour == 0 and pos.weekday() == 0 and pos + _WEEK <= end and (pos, 168) in built:
            whole_weeks.append(pos)
            pos += _WEEK
        elif days_ok and on_hour and pos.hour == 0 and pos + _DAY <= end and (pos, 24) in built:
            days.append(pos)
            pos += _DAY
        elif on_hour and pos + _HOUR <= end and pos not in split and (every_hour or (pos, 1) in built):
            hours.append(pos)
            pos += _HOUR
        elif quarters and on_hour and pos + _HOUR <= end and ((pos, 1) in built or (floor_day(pos), 24) in built):
            quartered.append(pos)
            pos += _HOUR
        else:
            step = min(pos.replace(minute=0, second=0, microsecond=0) + _HOUR, end)
            if runs and runs[-1][1] == pos:
                runs[-1] = (runs[-1][0], step)
            else:
                runs.append((pos, step))
            pos = step
    if days_ok and not q.unique:
        runs = _complements(q, built, days, runs)
    raw = sum((abs(e - s) for s, e in runs), timedelta())
    if (not whole_weeks and not days and not hours and not quartered) or raw > MAX_RAW_SHARE * (end - q.start):
        return None
    return Pieces(whole_weeks, days, hours, quartered, runs)


def _complements(
    q: AnalyticsQuery,
    built: frozenset[tuple[datetime, int]],
    days: list[datetime],
    runs: list[tuple[datetime, datetime]],
) -> list[tuple[datetime, datetime]]:
    """Raw runs of more than half a built day (a range's partial first or last day) read as the day's row
    minus the raw rows of the rest of the day, which are fewer. Clicks only: sketches do not subtract.

    A subtracted run is given backwards (end, start).
    """
    out = []
    for s, e in runs:
        day = floor_day(s)
        whole = (s == max(day, q.start) and e == min(day + _DAY, q.end)) and (day, 24) in built
        if whole and e - s > _DAY / 2:
            days.append(day)
            out += [(s, day)] if s > day else []
            out += [(day + _DAY, e)] if e < day + _DAY else []
        else:
            out.append((s, e))
    return out


def _pairs_pre(
    sql: _Sql,
    ws: str,
    q: AnalyticsQuery,
    how: Plan,
    key_pre: str,
    pieces: Pieces,
    only_p: str,
) -> str:
    """The SELECT of the click_pairs rows of the built periods (``only_p``: of these keys only)."""
    if how.key:
        key_pre = f"{how.key}value"
    else:  # count, or a time series bucket over the period's start
        key_pre = _at(key_pre, "period")
    periods = [
        f"(hours = {hours} AND period = ANY({sql.p(starts)}::timestamptz[]))"
        for hours, starts in ((168, pieces.weeks), (24, pieces.days), (1, pieces.hours))
        if starts
    ]
    parts = [f"workspace_id = {sql.p(ws)}", f"adim = {sql.p(how.dim)}", f"bdim = {sql.p(how.bdim)}"]
    parts += [
        f"{side}value = {sql.p(q.filters[column])}"
        if column in SCOPE_OF and _scoped(how)
        else _value_condition(sql, _ROLLUP_FILTERS[column][1], q.filters[column], side)
        for column, side in how.sides
    ]
    parts.append(f"({' OR '.join(periods)})")
    if _scoped(how):  # the periods whose rows hold the scope's links now: the others are raw (``_unmarked``)
        marked = f"SELECT m.period, m.hours FROM click_pairs AS m WHERE {_marker(sql, ws, q, how)}"
        parts.append(f"(period, hours) IN ({marked})")
    if not q.include_bots:
        parts.append("NOT bot")
    if q.qr is not None:
        parts.append(f"qr = {sql.p(q.qr)}")
    if only_p:
        parts.append(f"{key_pre} = ANY({only_p})")
    sketch = ", hll_union_agg(visitors) AS sketch" if q.unique else ""
    where = " AND ".join(parts)
    return f"SELECT {key_pre} AS key, sum(clicks) AS clicks{sketch} FROM click_pairs WHERE {where} GROUP BY 1"


# Per query, for its workspace: the built periods, the clicks their pairs hold (the 'domain' rows
# count every click once), the clicks the days' and the weeks' rollup rows hold, and the clicks the rollup
# holds per hour now (folded or not).
_BUILT_SQL = f"""
SELECT 'built' AS kind, period, hours, 0::bigint AS clicks FROM click_pairs_built
WHERE period >= $2 AND period < $3 AND (NOT $4 OR {COMPLETE})
UNION ALL
SELECT 'pairs', period, hours, sum(clicks) FROM click_pairs
WHERE workspace_id = $1 AND adim = 'domain' AND bdim = '' AND period >= $2 AND period < $3
GROUP BY 2, 3
UNION ALL
SELECT 'days', day, 24::smallint, sum(clicks) FROM click_rollup_days
WHERE workspace_id = $1 AND dim = 'count' AND day >= $2 AND day < $3
GROUP BY 2
UNION ALL
SELECT 'weeks', week, 168::smallint, sum(clicks) FROM click_rollup_weeks
WHERE workspace_id = $1 AND dim = 'count' AND week >= $2 AND week < $3
GROUP BY 2
UNION ALL
SELECT 'rollup', hour, 1::smallint, sum(clicks) FROM (
    SELECT hour, clicks FROM click_rollups WHERE workspace_id = $1 AND dim = 'count' AND hour >= $2 AND hour < $3
    UNION ALL
    SELECT hour, clicks FROM click_rollup_deltas WHERE workspace_id = $1 AND dim = 'count' AND hour >= $2 AND hour < $3
) AS r
GROUP BY 2
"""


async def built_pairs(
    conn: asyncpg.Connection, ws: str, q: AnalyticsQuery, complete: bool = False
) -> frozenset[tuple[datetime, int]]:
    """The built periods (ingest/pairs.py) in the query's range whose click_pairs, and for a day its
    click_rollup_days and click_cube_days (a week: its click_rollup_weeks), hold every click of the workspace
    stored now: a period whose clicks changed since it was built (late events, a bulk load) is read from
    shorter periods, the raw rows (pairs) or the hourly rows (rollup, cube) until the job rebuilds it.
    ``complete``: only those built with their link pairs and quarters (migration 0024)."""
    # whole weeks: a period's clicks are all its hours', also those after the range's end (else a click
    # stored late before the end and one built after it would cancel out)
    first, last = floor_week(q.start), floor_week(q.end - timedelta(microseconds=1)) + _WEEK
    rows = await conn.fetch(_BUILT_SQL, ws, first, last, complete)
    built = [(r["period"], r["hours"]) for r in rows if r["kind"] == "built"]
    held = {
        kind: {(r["period"], r["hours"]): r["clicks"] for r in rows if r["kind"] == kind}
        for kind in ("pairs", "days", "weeks")
    }
    by_hour = {r["period"]: r["clicks"] for r in rows if r["kind"] == "rollup"}
    whole = []
    for period, hours in built:
        stored = sum(by_hour.get(period + timedelta(hours=h), 0) for h in range(hours))
        kinds = {168: ("pairs", "weeks"), 24: ("pairs", "days")}.get(hours, ("pairs",))
        if all(held[kind].get((period, hours), 0) == stored for kind in kinds):
            whole.append((period, hours))
    return frozenset(whole)


async def periods_read(
    conn: asyncpg.Connection, ws: str, q: AnalyticsQuery, how: Plan
) -> frozenset[tuple[datetime, int]]:
    """The built periods whose pre-aggregated rows an answer planned ``how`` may read (``built_pairs``)."""
    if not _reads_built(q, how):
        return frozenset()
    return await built_pairs(conn, ws, q, _reads_complete(q, how))


@asynccontextmanager
async def reading(pool: asyncpg.Pool, timeout_ms: int) -> AsyncIterator[asyncpg.Connection]:
    """A connection in a read-only transaction whose every statement Postgres cuts at ``timeout_ms``,
    without JIT compilation, planned for its values at every execution.

    A cut statement is ``QueryTimedOut``: a slow query frees its connection instead of holding it.
    JIT: the planner's estimates of these unions of index ranges pass its cost thresholds, and the
    compiling then took longer than the query (10M clicks: a 30-day Asia/Kolkata series 3.2 s with
    JIT, 0.33 s without; cities of one country over 7 days 172 → 50 ms). Custom plans: asyncpg prepares
    each statement once per connection, and from its sixth execution Postgres may pick a generic plan, made
    without the range, link or built periods (10M clicks: a link's unique countries 35 ms → 1.6–2.1 s from
    the sixth refresh on); planning them costs ~1 ms.
    """
    try:
        async with pool.acquire() as conn, conn.transaction(readonly=True):
            await conn.execute(
                f"SET LOCAL statement_timeout = {int(timeout_ms)}; SET LOCAL jit = off;"
                " SET LOCAL plan_cache_mode = force_custom_plan"
            )
            yield conn
    except asyncpg.QueryCanceledError:
        raise QueryTimedOut(f"the query ran longer than {timeout_ms} ms: give a shorter range or filters") from None


async def analytics(ctx: ServiceContext, workspace_id: str, q: AnalyticsQuery, *, fast: bool = True) -> Any:
    """The answer to ``GET /analytics``: a count object, a zero-filled series, or a ranked list.

    ``fast=False`` reads the raw rows only: the reference the fast paths are tested against.
    """
    async with reading(ctx.reader, ctx.settings.analytics_statement_timeout_ms) as conn:
        if q.needs_first_click:
            first = await conn.fetchval("SELECT min(ts) FROM clicks WHERE workspace_id = $1", workspace_id)
            q = q.with_start(first or q.end)
        how = plan(q)
        built = await periods_read(conn, workspace_id, q, how) if fast else frozenset()
        answer = await _answer(conn, workspace_id, q, fast, built)
        few = fast and q.unique and how.source != "raw" and set(q.filters) <= {"link_id"}
        if few and _clicks_if_all_shown(q, answer) <= EXACT_VISITORS_MAX_CLICKS:
            # few clicks: their visitors counted exactly from the raw rows, as cheap as the sketches when an
            # index finds them: (workspace_id, ts) or (link_id, ts). Not with another filter: a city's few
            # clicks are a scan of every click of the range (10M clicks: 2 s for 7 days); its sketches answer.
            answer = await _answer(conn, workspace_id, q, False)
        return answer


def _clicks_if_all_shown(q: AnalyticsQuery, answer: Any) -> float:
    """The clicks in the answer, or infinity when a ranked answer was cut at ``limit`` (more rows exist)."""
    if isinstance(answer, dict):
        return float(answer["clicks"])
    if q.group_by != "timeseries" and len(answer) >= q.limit:
        return float("inf")
    return float(sum(item["clicks"] for item in answer))


async def _answer(
    conn: asyncpg.Connection, workspace_id: str, q: AnalyticsQuery, fast: bool, built: frozenset[Any] = frozenset()
) -> Any:
    if q.group_by == "count":
        text, args = _grouped_sql(workspace_id, q, "0", "0", fast=fast, built=built)
        row = await conn.fetchrow(text, *args)
        out: dict[str, Any] = {"clicks": int(row["clicks"]) if row else 0}
        if q.unique:
            out["visitors"] = int(row["visitors"]) if row else 0
        return out
    if q.group_by == "timeseries":
        return await _timeseries(conn, workspace_id, q, fast, built)
    return await _ranked(conn, workspace_id, q, fast, built)


async def _timeseries(
    conn: asyncpg.Connection, ws: str, q: AnalyticsQuery, fast: bool, built: frozenset[Any]
) -> list[dict[str, Any]]:
    unit = q.bucket  # one of four fixed words; the zone is a parameter ($1)
    text, args = _grouped_sql(
        ws, q, f"date_trunc('{unit}', ts, $1)", f"date_trunc('{unit}', hour, $1)", (q.timezone,), fast, built=built
    )
    counts = {r["key"].timestamp(): r for r in await conn.fetch(text, *args)}
    series = []
    for start in bucket_starts(q.start, q.end, unit, q.zone):
        r = counts.get(start.timestamp())
        point: dict[str, Any] = {"start": start.isoformat(), "clicks": int(r["clicks"]) if r else 0}
        if q.unique:
            point["visitors"] = int(r["visitors"]) if r else 0
        series.append(point)
    return series


async def _ranked(
    conn: asyncpg.Connection, ws: str, q: AnalyticsQuery, fast: bool, built: frozenset[Any]
) -> list[dict[str, Any]]:
    column, _, key = DIMENSIONS[q.group_by]
    exclude_orphans = "WHERE key <> ''" if q.group_by == "top_links" else ""
    order = f"ORDER BY clicks DESC, key LIMIT {int(q.limit)}"
    if fast and q.unique and plan(q).source != "raw":
        # rank by clicks first (no sketches), then union the sketches of the rows shown only: a
        # month of top links is hundreds of thousands of link-hour sketches, the top 100 a fraction
        clicks_only = dataclasses.replace(q, unique=False)
        text, args = _grouped_sql(ws, clicks_only, column, "value", fast=fast, built=built)
        ranked = await conn.fetch(f"SELECT key FROM ({text}) AS g {exclude_orphans} {order}", *args)
        text, args = _grouped_sql(ws, q, column, "value", fast=fast, only=[r["key"] for r in ranked], built=built)
    else:
        text, args = _grouped_sql(ws, q, column, "value", fast=fast, built=built)
    rows = await conn.fetch(f"SELECT * FROM ({text}) AS g {exclude_orphans} {order}", *args)
    out = []
    for r in rows:
        value: str = r["key"]
        item: dict[str, Any]
        if q.group_by in ("regions", "cities"):
            country, _, name = value.partition("/")
            item = {key: name or None, "country": country or None}
        else:
            item = {key: value or None}
        item["clicks"] = int(r["clicks"])
        if q.unique:
            item["visitors"] = int(r["visitors"])
        out.append(item)
    if q.group_by == "top_links" and out:
        links = await conn.fetch(
            "SELECT id, domain, slug, url FROM links WHERE workspace_id = $1 AND id = ANY($2::text[])",
            ws, [i["linkId"] for i in out],
        )  # fmt: skip
        by_id = {r["id"]: r for r in links}
        for item in out:
            link = by_id.get(item["linkId"])  # None: the link was deleted since
            item.update(
                domain=link["domain"] if link else None,
                slug=link["slug"] if link else None,
                url=link["url"] if link else None,
            )
    return out


def event_dict(record: Mapping[str, Any]) -> dict[str, Any]:
    """One stored click as the API shows it; unknown values are None (JSON null), as in /analytics."""
    out: dict[str, Any] = {
        k: None if v == "" else v for k, v in zip(EVENT_KEYS, (record[c] for c in EVENT_COLUMNS), strict=True)
    }
    out["id"] = str(out["id"])
    out["timestamp"] = out["timestamp"].astimezone(UTC).isoformat()
    out["ip"] = str(out["ip"]) if out["ip"] is not None else None
    out["visitor"] = format(out["visitor"] & 0xFFFF_FFFF_FFFF_FFFF, "016x")
    return out


def encode_cursor(ts: datetime, event_id: uuid.UUID) -> str:
    """The opaque position after the click (ts, event_id) in the newest-first order."""
    micros = (ts - MIN_INSTANT) // timedelta(microseconds=1)
    return base64.urlsafe_b64encode(f"{micros}.{event_id.hex}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """``encode_cursor``'s position back; VALIDATION_ERROR (path cursor) for anything it did not make."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        micros, _, hex_id = raw.partition(".")
        ts = MIN_INSTANT + timedelta(microseconds=int(micros))
        return ts, uuid.UUID(hex=hex_id)
    except (ValueError, binascii.Error, OverflowError, UnicodeDecodeError):
        raise field_error("cursor", "not a cursor this API returned (use nextCursor as given)") from None


async def list_events(
    ctx: ServiceContext, workspace_id: str, q: AnalyticsQuery, limit: int, page: int = 0, cursor: str | None = None
) -> dict[str, Any]:
    """Raw enriched clicks, newest first: ``{"data", "page", "limit", "total", "nextCursor"}``.

    ``cursor`` (the previous answer's ``nextCursor``) continues after the last click shown, by
    keyset: clicks stored meanwhile neither repeat nor shift a row. ``page`` (OFFSET) is kept for
    the first ``MAX_OFFSET`` rows.
    """
    if cursor is not None and page:
        raise field_error("cursor", "give either cursor or page, not both")
    if page * limit > MAX_OFFSET:
        raise field_error("page", f"page × limit may not pass {MAX_OFFSET} rows: follow nextCursor instead")
    if q.needs_first_click:
        q = q.with_start(MIN_INSTANT)
    sql = _Sql()
    where = _raw_where(sql, workspace_id, q, q.start, q.end)
    total_args = list(sql.args)
    if cursor is not None:
        ts, event_id = decode_cursor(cursor)
        # ts <= first, so that the (workspace_id, ts) index bounds the scan; the tie on ts by id after
        after = f"ts <= {sql.p(ts)} AND (ts < {sql.p(ts)} OR event_id < {sql.p(event_id)})"
        rows_where = f"{where} AND {after}"
    else:
        rows_where = where
    async with reading(ctx.reader, ctx.settings.analytics_statement_timeout_ms) as conn:
        total = await conn.fetchval(f"SELECT count(*) FROM clicks WHERE {where}", *total_args)
        rows = await conn.fetch(
            f"SELECT {', '.join(EVENT_COLUMNS)} FROM clicks WHERE {rows_where}"
            f" ORDER BY ts DESC, event_id DESC LIMIT {sql.p(limit)} OFFSET {sql.p(page * limit)}",
            *sql.args,
        )
    next_cursor = encode_cursor(rows[-1]["ts"], rows[-1]["event_id"]) if len(rows) == limit else None
    data = [event_dict(r) for r in rows]
    return {"data": data, "page": page, "limit": limit, "total": int(total), "nextCursor": next_cursor}
