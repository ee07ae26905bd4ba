"""Analytics routes: ``GET /analytics``, ``GET /analytics/events``, ``GET /analytics/export`` (scope analytics:read)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from api.endpoints import Call, Endpoint
from api.errors import ValidationFailed, from_msgspec
from api.routes.files import RawEndpoint, openapi_paths
from api.services import analytics
from api.services.analytics_query import GROUP_BYS, parse_query
from api.services.context import ServiceContext
from api.services.keys import Principal

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
    page: Annotated[int, Meta(ge=0, le=1_000_000)] = 0
    limit: Annotated[int, Meta(ge=1, le=50)] = 10


class ClickEventOut(msgspec.Struct, kw_only=True):
    id: str
    timestamp: str
    linkId: str | None
    domain: str
    slug: str
    url: str | None
    country: str
    region: str
    city: str
    continent: str
    latitude: float | None
    longitude: float | None
    device: str
    deviceBrand: str
    deviceModel: str
    browser: str
    browserVersion: str
    os: str
    osVersion: str
    referer: str
    refererUrl: str
    utmSource: str
    utmMedium: str
    utmCampaign: str
    utmTerm: str
    utmContent: str
    bot: bool
    qr: bool
    visitor: str
    ip: str | None
    method: str
    ua: str


class EventList(msgspec.Struct, kw_only=True):
    data: list[ClickEventOut]
    page: int
    limit: int
    total: int


AnalyticsResult = dict[str, Any] | list[dict[str, Any]]


def _params(query: msgspec.Struct) -> dict[str, Any]:
    return {k: v for k, v in msgspec.to_builtins(query).items() if v is not None}


async def get_analytics(call: Call) -> AnalyticsResult:
    q = parse_query(_params(call.query))
    result: AnalyticsResult = await analytics.analytics(call.ctx, call.principal.workspace_id, q)
    return result


async def list_events(call: Call) -> EventList:
    params = _params(call.query)
    # read from the struct: to_builtins leaves out fields at their default (page 0, limit 10)
    params.pop("page", None)
    params.pop("limit", None)
    page, limit = call.query.page, call.query.limit
    out = await analytics.list_events(call.ctx, call.principal.workspace_id, parse_query(params), page, limit)
    return msgspec.convert(out, EventList)


async def export(ctx: ServiceContext, principal: Principal, request: Request) -> Response:
    params = dict(request.query_params)
    fmt = params.pop("format", "csv")
    if fmt not in ("csv", "ndjson"):
        raise ValidationFailed([{"path": "format", "message": "format must be csv or ndjson"}])
    try:
        filters = msgspec.convert(params, AnalyticsFilters, strict=False)
    except msgspec.ValidationError as exc:
        raise from_msgspec(exc) from None
    q = parse_query(_params(filters))
    media = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
    return StreamingResponse(
        analytics.export_events(ctx, principal.workspace_id, q, fmt),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="clicks.{fmt}"'},
    )


_DESCRIPTION = (
    "Counts of clicks for the workspace. `groupBy=count` returns `{clicks}`; `timeseries` a zero-filled list of "
    "`{start, clicks}` whose bucket follows the range (minute up to 2 h, hour up to 3 days, day up to 120 days, "
    "then month) in `timezone`; every other groupBy a list ranked by clicks, e.g. `[{country, clicks}]`, "
    "`[{city, country, clicks}]`, `[{linkId, domain, slug, url, clicks}]`. `unique=true` adds `visitors` "
    "(a salted hash of day, IP and user agent; the IP itself is not stored). Bots (crawlers, link-preview "
    "fetchers, scripts, HEAD requests) are left out unless `includeBots=true`. Unknown values are `null`. "
    "Hits on slugs that do not exist (orphans) count in the totals and dimensions, not in `top_links`. "
    "Default range: the last 24 hours."
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
    description="For BI tools: streamed through a database cursor, so any range can be exported.",
)  # fmt: skip

ENDPOINTS = [
    Endpoint(
        "GET", "/analytics", get_analytics, "Click analytics", "Analytics", scope=SCOPE, query=AnalyticsQueryParams,
        response=AnalyticsResult, operation_id="getAnalytics", description=_DESCRIPTION,
        example=None,
    ),
    Endpoint(
        "GET", "/analytics/events", list_events, "Raw click events, newest first", "Analytics", scope=SCOPE,
        query=EventsQuery, response=EventList, operation_id="listAnalyticsEvents",
        description="Enriched clicks of the range, newest first, paginated (`page` from 0, `limit` up to 50).",
    ),
]  # fmt: skip

ROUTES = [EXPORT.route()]
OPENAPI_PATHS = openapi_paths([EXPORT])
