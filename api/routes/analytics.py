"""Analytics routes: ``GET /analytics``, ``GET /analytics/events``, ``GET /analytics/export`` (scope analytics:read)."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from api.endpoints import Call, Endpoint
from api.errors import QueryTimedOut, ValidationFailed, from_msgspec
from api.routes.files import RawEndpoint, openapi_paths
from api.services import analytics
from api.services.analytics_export import FORMATS, RETRY_AFTER_S, ClickExport
from api.services.analytics_live import LiveStream, check_last_event_id
from api.services.analytics_query import GROUP_BYS, parse_query
from api.services.context import ServiceContext
from api.services.keys import Principal

log = logging.getLogger("h0p.api")

SCOPE = "analytics:read"
Text = Annotated[str, Meta(max_length=2048)]


class AnalyticsFilters(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """Range, time zone and filters shared by the three routes (query string)."""

    interval: Literal["24h", "7d", "30d", "90d", "1y", "mtd", "ytd", "all"] | None = None
    start: Annotated[str, Meta(description="ISO 8601; without an offset, read in `timezone`")] | None = None
    end: Annotated[str, Meta(description="ISO 8601, exclusive; default now")] | None = None
    timezone: Annotated[str, Meta(max_length=64, examples=["Europe/Paris"])] = "UTC"
    linkId: Text | None = None
    domain: Text | None = None
    tagId: Text | None = None
    folderId: Text | None = None
    country: Annotated[str, Meta(max_length=2, description="ISO 3166-1 alpha-2")] | None = None
    region: Text | None = None
    city: Text | None = None
    continent: Annotated[str, Meta(max_length=2)] | None = None
    device: Literal["desktop", "mobile", "tablet", "tv", "console", "bot", "other"] | None = None
    browser: Text | None = None
    os: Text | None = None
    referer: Annotated[str, Meta(max_length=253, description="referrer host, without www.")] | None = None
    refererUrl: Text | None = None
    utm_source: Text | None = None
    utm_medium: Text | None = None
    utm_campaign: Text | None = None
    utm_term: Text | None = None
    utm_content: Text | None = None
    qr: Annotated[bool, Meta(description="only QR scans (true) or only other clicks (false)")] | None = None
    includeBots: bool = False


class AnalyticsQueryParams(AnalyticsFilters, kw_only=True):
    groupBy: Literal[GROUP_BYS] = "count"  # type: ignore[valid-type]
    unique: Annotated[bool, Meta(description="also count unique visitors (day, IP, user agent)")] = False
    limit: Annotated[int, Meta(ge=1, le=1000, description="rows of a ranked groupBy")] = 100


class EventsQuery(AnalyticsFilters, kw_only=True):
    cursor: Annotated[str, Meta(max_length=200, description="`nextCursor` of the previous page")] | None = None
    page: Annotated[int, Meta(ge=0, le=1_000_000, description="offset paging; page × limit at most 10000")] = 0
    limit: Annotated[int, Meta(ge=1, le=50)] = 10


Unknown = str | None  # null when ingest could not tell (no referrer, no geolocation, …), as in /analytics


class ClickEventOut(msgspec.Struct, kw_only=True):
    id: str
    timestamp: str
    linkId: str | None
    domain: str
    slug: str
    url: str | None
    country: Unknown
    region: Unknown
    city: Unknown
    continent: Unknown
    latitude: float | None
    longitude: float | None
    device: Unknown
    deviceBrand: Unknown
    deviceModel: Unknown
    browser: Unknown
    browserVersion: Unknown
    os: Unknown
    osVersion: Unknown
    referer: Unknown
    refererUrl: Unknown
    utm_source: Unknown
    utm_medium: Unknown
    utm_campaign: Unknown
    utm_term: Unknown
    utm_content: Unknown
    bot: bool
    qr: bool
    visitor: str
    ip: str | None
    method: str
    ua: Unknown


class EventList(msgspec.Struct, kw_only=True):
    data: list[ClickEventOut]
    page: int
    limit: int
    total: int
    nextCursor: Annotated[
        str | None, Meta(description="pass as `cursor` for the next (older) page; null on the last page")
    ]


AnalyticsResult = dict[str, Any] | list[dict[str, Any]]


def _params(query: msgspec.Struct) -> dict[str, Any]:
    return {k: v for k, v in msgspec.to_builtins(query).items() if v is not None}


async def analytics_answer(ctx: ServiceContext, workspace_id: str, query: AnalyticsQueryParams) -> AnalyticsResult:
    """``GET /analytics``'s answer to decoded parameters (the dashboard's Analytics page asks the same)."""
    result: AnalyticsResult = await analytics.analytics(ctx, workspace_id, parse_query(_params(query)))
    return result


async def get_analytics(call: Call) -> AnalyticsResult:
    return await analytics_answer(call.ctx, call.principal.workspace_id, call.query)


async def list_events(call: Call) -> EventList:
    params = _params(call.query)
    # read from the struct: to_builtins leaves out fields at their default (page 0, limit 10)
    for name in ("page", "limit", "cursor"):
        params.pop(name, None)
    q = call.query
    out = await analytics.list_events(
        call.ctx, call.principal.workspace_id, parse_query(params), q.limit, page=q.page, cursor=q.cursor
    )
    return msgspec.convert(out, EventList)


class ExportResponse(StreamingResponse):
    """An export's stream, cut after ``max_s``: a reader that stalls cannot keep its connection forever.

    A cut export ends without HTTP's last chunk, so the client sees it incomplete, not short.
    """

    def __init__(self, export: ClickExport, fmt: str, max_s: float) -> None:
        media = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
        disposition = {"Content-Disposition": f'attachment; filename="clicks.{fmt}"'}
        super().__init__(export.chunks(fmt), media_type=media, headers=disposition)
        self.export, self.max_s = export, max_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with asyncio.timeout(self.max_s):
                await super().__call__(scope, receive, send)
        except TimeoutError:
            log.warning("export cut after %.0f s (H0P_EXPORT_MAX_S)", self.max_s)
        except QueryTimedOut:  # the status went out with the first bytes: the stream ends incomplete
            log.warning("export cut: a fetch ran past H0P_ANALYTICS_STATEMENT_TIMEOUT_MS")
        finally:
            await self.body_iterator.aclose()  # type: ignore[attr-defined]  # our chunks() generator
            await self.export.close()


async def export(ctx: ServiceContext, principal: Principal, request: Request) -> Response:
    return await export_response(ctx, principal.workspace_id, request)


async def export_response(ctx: ServiceContext, workspace_id: str, request: Request) -> Response:
    """The export of the request's filters (query string) for a workspace; also the dashboard's Download CSV."""
    params = dict(request.query_params)
    fmt = params.pop("format", "csv")
    if fmt not in FORMATS:
        raise ValidationFailed([{"path": "format", "message": "format must be csv or ndjson"}])
    try:
        filters = msgspec.convert(params, AnalyticsFilters, strict=False)
    except msgspec.ValidationError as exc:
        raise from_msgspec(exc) from None
    q = parse_query(_params(filters))
    running = await ClickExport.open(request.app.state.export_pool, ctx.settings, workspace_id, q)
    return ExportResponse(running, fmt, ctx.settings.export_max_s)


class LiveResponse(StreamingResponse):
    """A live stream's events; its slot and Redis connection are given back however it ends."""

    def __init__(self, stream: LiveStream, last_event_id: str | None) -> None:
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering
        super().__init__(stream.events(last_event_id), media_type="text/event-stream", headers=headers)
        self.stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()  # type: ignore[attr-defined]  # our events() generator
            await self.stream.close()


_NOT_LIVE = ("interval", "start", "end", "timezone")


async def live(ctx: ServiceContext, principal: Principal, request: Request) -> Response:
    return await live_response(ctx, principal.workspace_id, request)


async def live_response(ctx: ServiceContext, workspace_id: str, request: Request) -> Response:
    """The live stream of the request's filters for a workspace; also the dashboard's live clicks."""
    params = dict(request.query_params)
    last_event_id = check_last_event_id(request.headers.get("last-event-id") or params.pop("lastEventId", None))
    for name in _NOT_LIVE:
        if name in params:
            raise ValidationFailed([{"path": name, "message": f"{name} has no meaning for a live stream"}])
    try:
        filters = msgspec.convert(params, AnalyticsFilters, strict=False)
    except msgspec.ValidationError as exc:
        raise from_msgspec(exc) from None
    q = parse_query(_params(filters))
    ws = workspace_id

    async def links(column: str, value: str) -> list[str]:
        sql = (
            "SELECT t.link_id FROM link_tags AS t JOIN links AS l ON l.id = t.link_id"
            " WHERE t.tag_id = $1 AND l.workspace_id = $2"
            if column == "tag_id"
            else "SELECT id FROM links WHERE folder_id = $1 AND workspace_id = $2"
        )
        return [r[0] for r in await ctx.pool.fetch(sql, value, ws)]

    stream = await LiveStream.open(ctx.settings, ws, q, links)
    return LiveResponse(stream, last_event_id)


_LIVE_PARAMS: list[dict[str, Any]] = [
    {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "the `id` of the last event received: the stream resumes after it (EventSource sends it)"},
    {"name": "lastEventId", "in": "query", "required": False, "schema": {"type": "string"},
     "description": "the same as the Last-Event-ID header, for clients that cannot set headers"},
    *({"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
      for name in AnalyticsFilters.__struct_fields__ if name not in _NOT_LIVE),
]  # fmt: skip

LIVE = RawEndpoint(
    "GET", "/analytics/live", live, "Live clicks (Server-Sent Events)", "Analytics", "streamAnalyticsLive",
    scope=SCOPE, parameters=_LIVE_PARAMS,
    success={"200": {"description": "An endless `text/event-stream`", "content": {"text/event-stream": {
        "schema": {"type": "string"},
        "example": 'id: 1733220000000-0\nevent: clicks\ndata: [{"id":"0193…","timestamp":"2025-03-31T10:00:00Z",'
                   '"linkId":"link_…","country":"US","device":"mobile",…}]\n\n',
    }}}},
    errors=(400, 401, 403, 429, 500),
    description=(
        "Clicks as they are stored (within about a second or two of the redirect): one `clicks` event per ingest "
        "batch, its `data` a JSON list of the batch's clicks that pass the filters (the same filters as "
        "`/analytics`: linkId, domain, tagId, folderId, country, …, qr, includeBots; bots are left out unless "
        "`includeBots=true`), each `{id, timestamp, linkId, domain, slug, country, region, city, continent, "
        "device, browser, os, referer, refererUrl, utm_*, bot, qr}` (unknown values `null`). A comment line "
        "(`: ping`) comes every 15 s when nothing happens. Reconnecting with `Last-Event-ID` (EventSource does "
        "it by itself) resumes after that event: nothing is lost that is still recent, i.e. among the workspace's "
        "last H0P_LIVE_STREAM_LENGTH batches, kept up to 5 minutes after the last live stream closed. At most "
        "H0P_LIVE_MAX_STREAMS streams per workspace are open at once: one more is 429 RATE_LIMITED with "
        "Retry-After. Usable from any HTTP client: `curl -N -H 'x-api-key: …' …/analytics/live`."
    ),
)  # fmt: skip

_DESCRIPTION = (
    "Counts of clicks for the workspace. `groupBy=count` returns `{clicks}`; `timeseries` a zero-filled list of "
    "`{start, clicks}` whose bucket follows the range (minute up to 2 h, hour up to 3 days, day up to 120 days, "
    "then month) in `timezone`; every other groupBy a list ranked by clicks, e.g. `[{country, clicks}]`, "
    "`[{city, country, clicks}]`, `[{linkId, domain, slug, url, clicks}]`. `unique=true` adds `visitors` "
    "(a salted hash of day, IP and user agent; the IP itself is not stored). Bots (crawlers, link-preview "
    "fetchers, scripts, HEAD requests) are left out unless `includeBots=true`. Unknown values are `null`. "
    "UTM values are named as on links: `[{utm_source, clicks}]`. "
    "Hits on slugs that do not exist (orphans) count in the totals and dimensions, not in `top_links`. "
    "Default range: the last 24 hours, at most from 2000-01-01 (earlier starts are clamped); a time series of "
    "more than 2000 buckets is refused (VALIDATION_ERROR). A query running longer than "
    "H0P_ANALYTICS_STATEMENT_TIMEOUT_MS is cut: 503 QUERY_TIMEOUT."
)
_EXAMPLE_EXPORT_PARAMS: list[dict[str, Any]] = [
    {"name": "format", "in": "query", "required": False, "schema": {"type": "string", "enum": ["csv", "ndjson"],
     "default": "csv"}},
    *({"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
      for name in AnalyticsFilters.__struct_fields__),
]  # fmt: skip

EXPORT = RawEndpoint(
    "GET", "/analytics/export", export, "Export raw click events (CSV or NDJSON)", "Analytics", "exportAnalytics",
    scope=SCOPE, parameters=_EXAMPLE_EXPORT_PARAMS,
    success={"200": {"description": "Every matching click, oldest first, streamed", "content": {
        "text/csv": {"schema": {"type": "string"}, "example": "id,timestamp,linkId,domain,slug,url,country,...\n"},
        "application/x-ndjson": {"schema": {"type": "string"},
                                 "example": '{"id":"0193…","timestamp":"2025-03-31T10:00:00+00:00","country":"US"}\n'},
    }}},
    description=(
        "For BI tools: streamed through a database cursor, so any range can be exported. Exports have their own "
        f"small connection pool and run one at a time per workspace: a second one meanwhile, or one when every "
        f"export slot is busy, is 429 RATE_LIMITED with Retry-After ({RETRY_AFTER_S} s). An export that runs longer "
        "than H0P_EXPORT_MAX_S is cut (the response ends without its last chunk). Unknown values are empty, "
        "booleans `true`/`false`; a CSV cell starting with =, +, -, @, tab or CR is prefixed with `'` so that "
        "spreadsheets show it as text (NDJSON keeps values as stored, unknown ones `null`)."
    ),
)  # fmt: skip

ENDPOINTS = [
    Endpoint(
        "GET", "/analytics", get_analytics, "Click analytics", "Analytics", scope=SCOPE, query=AnalyticsQueryParams,
        response=AnalyticsResult, operation_id="getAnalytics", description=_DESCRIPTION,
        example=None, errors=(503,),
    ),
    Endpoint(
        "GET", "/analytics/events", list_events, "Raw click events, newest first", "Analytics", scope=SCOPE,
        query=EventsQuery, response=EventList, operation_id="listAnalyticsEvents", errors=(503,),
        description=(
            "Enriched clicks of the range, newest first, `limit` up to 50 a page. Follow `nextCursor` (pass it as "
            "`cursor`): keyset paging, stable while clicks arrive. `page` (from 0, offset paging) still works for "
            "the first 10000 rows. Unknown values are `null`."
        ),
    ),
]  # fmt: skip

ROUTES = [EXPORT.route(), LIVE.route()]
OPENAPI_PATHS = openapi_paths([EXPORT, LIVE])
