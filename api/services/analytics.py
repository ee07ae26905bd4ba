"""Click analytics for one workspace: grouped counts, time series, raw events, streamed export.

Reads ``clicks`` (written by ingest) and ``click_rollup_totals`` (hourly counts per dimension
value: the folded ``click_rollups`` plus the increments ingest appended in the same transaction
as the rows and has not folded yet). A query is answered from the rollup when nothing in
it needs the raw rows (no filter but ``qr``, no unique visitors, hour-aligned buckets): whole
UTC hours come from the rollup and the partial hours at both ends from ``clicks``, so the
answer is the same either way, only faster. Everything else reads ``clicks`` through its
(workspace_id, ts) or (link_id, ts) index.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from api.services.analytics_query import AnalyticsQuery, bucket_starts, parse_query
from api.services.context import ServiceContext

__all__ = ["AnalyticsQuery", "analytics", "export_events", "list_events", "parse_query"]

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
    "utm_sources": ("utm_source", "utm_source", "utmSource"),
    "utm_mediums": ("utm_medium", "utm_medium", "utmMedium"),
    "utm_campaigns": ("utm_campaign", "utm_campaign", "utmCampaign"),
    "utm_terms": ("utm_term", "utm_term", "utmTerm"),
    "utm_contents": ("utm_content", "utm_content", "utmContent"),
}

EVENT_COLUMNS = (
    "event_id", "ts", "link_id", "domain", "slug", "url", "country", "region", "city", "continent",
    "latitude", "longitude", "device", "device_brand", "device_model", "browser", "browser_version",
    "os", "os_version", "referer", "referer_url", "utm_source", "utm_medium", "utm_campaign", "utm_term",
    "utm_content", "bot", "qr", "visitor", "ip", "method", "ua",
)  # fmt: skip


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


_EVENT_KEYS = tuple("id" if c == "event_id" else "timestamp" if c == "ts" else _camel(c) for c in EVENT_COLUMNS)


@dataclass
class _Sql:
    """Positional parameters collected while the SQL text is built."""

    args: list[Any] = field(default_factory=list)

    def p(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"


def _raw_where(sql: _Sql, ws: str, q: AnalyticsQuery, start: datetime, end: datetime) -> str:
    parts = [f"workspace_id = {sql.p(ws)}", f"ts >= {sql.p(start)}", f"ts < {sql.p(end)}"]
    if not q.include_bots:
        parts.append("NOT bot")
    if q.qr is not None:
        parts.append(f"qr = {sql.p(q.qr)}")
    for column, value in q.filters.items():
        if column == "tag_id":
            parts.append(f"link_id IN (SELECT link_id FROM link_tags WHERE tag_id = {sql.p(value)})")
        elif column == "folder_id":
            parts.append(f"link_id IN (SELECT id FROM links WHERE folder_id = {sql.p(value)})")
        else:
            parts.append(f"{column} = {sql.p(value)}")
    return " AND ".join(parts)


def _rollup_where(sql: _Sql, ws: str, q: AnalyticsQuery, dim: str, start: datetime, end: datetime) -> str:
    parts = [f"workspace_id = {sql.p(ws)}", f"dim = {sql.p(dim)}", f"hour >= {sql.p(start)}", f"hour < {sql.p(end)}"]
    if not q.include_bots:
        parts.append("NOT bot")
    if q.qr is not None:
        parts.append(f"qr = {sql.p(q.qr)}")
    return " AND ".join(parts)


def _grouped_sql(
    ws: str, q: AnalyticsQuery, key_raw: str, key_rollup: str, dim: str, first_args: tuple[Any, ...] = ()
) -> tuple[str, list[Any]]:
    """SELECT key, clicks[, visitors] over the range, from the rollup where allowed.

    ``first_args`` become $1… (used by the key expressions, e.g. the time zone).
    """
    sql = _Sql(list(first_args))
    start, end = q.start, q.end
    use_rollup = q.rollup_allowed
    if use_rollup:
        # whole UTC hours inside the range from the rollup, the partial hours around them raw
        first_hour = start.replace(minute=0, second=0, microsecond=0)
        if first_hour < start:
            first_hour += timedelta(hours=1)
        last_hour = end.replace(minute=0, second=0, microsecond=0)
        use_rollup = first_hour < last_hour
    if not use_rollup:
        visitors = ", count(DISTINCT visitor) AS visitors" if q.unique else ""
        text = (
            f"SELECT {key_raw} AS key, count(*) AS clicks{visitors} FROM clicks"
            f" WHERE {_raw_where(sql, ws, q, start, end)} GROUP BY 1"
        )
        return text, sql.args
    rollup = (
        f"SELECT {key_rollup} AS key, sum(clicks) AS clicks FROM click_rollup_totals"
        f" WHERE {_rollup_where(sql, ws, q, dim, first_hour, last_hour)} GROUP BY 1"
    )
    head = f"SELECT {key_raw} AS key, count(*) AS clicks FROM clicks WHERE "
    edges = [f"{head}{_raw_where(sql, ws, q, start, first_hour)} GROUP BY 1"] if start < first_hour else []
    if last_hour < end:
        edges.append(f"{head}{_raw_where(sql, ws, q, last_hour, end)} GROUP BY 1")
    union = " UNION ALL ".join([rollup, *edges])
    return f"SELECT key, sum(clicks)::bigint AS clicks FROM ({union}) AS parts GROUP BY 1", sql.args


async def analytics(ctx: ServiceContext, workspace_id: str, q: AnalyticsQuery) -> Any:
    """The answer to ``GET /analytics``: a count object, a zero-filled series, or a ranked list."""
    if q.needs_first_click:
        first = await ctx.pool.fetchval("SELECT min(ts) FROM clicks WHERE workspace_id = $1", workspace_id)
        q = q.with_start(first or q.end)
    if q.group_by == "count":
        text, args = _grouped_sql(workspace_id, q, "0", "0", "count")
        row = await ctx.pool.fetchrow(text, *args)
        out: dict[str, Any] = {"clicks": int(row["clicks"]) if row else 0}
        if q.unique:
            out["visitors"] = int(row["visitors"]) if row else 0
        return out
    if q.group_by == "timeseries":
        return await _timeseries(ctx, workspace_id, q)
    return await _ranked(ctx, workspace_id, q)


async def _timeseries(ctx: ServiceContext, ws: str, q: AnalyticsQuery) -> list[dict[str, Any]]:
    unit = q.bucket  # one of four fixed words; the zone is a parameter ($1)
    text, args = _grouped_sql(
        ws, q, f"date_trunc('{unit}', ts, $1)", f"date_trunc('{unit}', hour, $1)", "count", (q.timezone,)
    )
    counts = {r["key"].timestamp(): r for r in await ctx.pool.fetch(text, *args)}
    series = []
    for start in bucket_starts(q.start, q.end, unit, q.zone):
        r = counts.get(start.timestamp())
        point: dict[str, Any] = {"start": start.isoformat(), "clicks": int(r["clicks"]) if r else 0}
        if q.unique:
            point["visitors"] = int(r["visitors"]) if r else 0
        series.append(point)
    return series


async def _ranked(ctx: ServiceContext, ws: str, q: AnalyticsQuery) -> list[dict[str, Any]]:
    column, dim, key = DIMENSIONS[q.group_by]
    text, args = _grouped_sql(ws, q, column, "value", dim)
    exclude_orphans = "WHERE key <> ''" if q.group_by == "top_links" else ""
    text = f"SELECT * FROM ({text}) AS g {exclude_orphans} ORDER BY clicks DESC, key LIMIT {int(q.limit)}"
    rows = await ctx.pool.fetch(text, *args)
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
        links = await ctx.pool.fetch(
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


def _event(record: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(zip(_EVENT_KEYS, (record[c] for c in EVENT_COLUMNS), strict=True))
    out["id"] = str(out["id"])
    out["timestamp"] = out["timestamp"].astimezone(UTC).isoformat()
    out["ip"] = str(out["ip"]) if out["ip"] is not None else None
    out["visitor"] = format(out["visitor"] & 0xFFFF_FFFF_FFFF_FFFF, "016x")
    return out


async def list_events(
    ctx: ServiceContext, workspace_id: str, q: AnalyticsQuery, page: int, limit: int
) -> dict[str, Any]:
    """Raw enriched clicks, newest first: ``{"data", "page", "limit", "total"}``."""
    if q.needs_first_click:
        q = q.with_start(datetime(2000, 1, 1, tzinfo=UTC))
    sql = _Sql()
    where = _raw_where(sql, workspace_id, q, q.start, q.end)
    total = await ctx.pool.fetchval(f"SELECT count(*) FROM clicks WHERE {where}", *sql.args)
    rows = await ctx.pool.fetch(
        f"SELECT {', '.join(EVENT_COLUMNS)} FROM clicks WHERE {where}"
        f" ORDER BY ts DESC, event_id DESC LIMIT {sql.p(limit)} OFFSET {sql.p(page * limit)}",
        *sql.args,
    )
    return {"data": [_event(r) for r in rows], "page": page, "limit": limit, "total": int(total)}


async def export_events(
    ctx: ServiceContext, workspace_id: str, q: AnalyticsQuery, fmt: str, chunk_rows: int = 1000
) -> AsyncIterator[bytes]:
    """Every matching click, oldest first, as CSV (with a header) or NDJSON, in chunks of bytes.

    Streams through a server-side cursor: memory stays bounded whatever the range.
    """
    import csv
    import io

    import orjson

    if fmt not in ("csv", "ndjson"):
        from api.errors import ValidationFailed

        raise ValidationFailed([{"path": "format", "message": "format must be csv or ndjson"}])
    if q.needs_first_click:
        q = q.with_start(datetime(2000, 1, 1, tzinfo=UTC))
    sql = _Sql()
    where = _raw_where(sql, workspace_id, q, q.start, q.end)
    text = f"SELECT {', '.join(EVENT_COLUMNS)} FROM clicks WHERE {where} ORDER BY ts, event_id"
    buf = io.StringIO()
    writer = csv.writer(buf)
    if fmt == "csv":
        writer.writerow(_EVENT_KEYS)
        yield buf.getvalue().encode()
    async with ctx.pool.acquire() as conn, conn.transaction(readonly=True):
        chunk: list[bytes] = []
        async for record in conn.cursor(text, *sql.args, prefetch=chunk_rows):
            event = _event(record)
            if fmt == "ndjson":
                chunk.append(orjson.dumps(event) + b"\n")
            else:
                buf.seek(0)
                buf.truncate()
                writer.writerow(["" if v is None else v for v in event.values()])
                chunk.append(buf.getvalue().encode())
            if len(chunk) >= chunk_rows:
                yield b"".join(chunk)
                chunk.clear()
        if chunk:
            yield b"".join(chunk)
