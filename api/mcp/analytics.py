"""The analytics tool: ``GET /analytics`` (groupBy, interval or start/end, filters) over MCP.

The arguments are the route's own query Struct (``AnalyticsQueryParams``, parameter names as
in the query string) and go through ``parse_query``, as in the route, so both accept and
refuse the same input with the same messages.
"""

from __future__ import annotations

from typing import Any

import msgspec

from api.mcp.spec import ToolSpec
from api.routes.analytics import SCOPE, AnalyticsQueryParams
from api.services.analytics import analytics, parse_query
from api.services.context import ServiceContext
from api.services.keys import Principal


async def _get_analytics(ctx: ServiceContext, who: Principal, args: AnalyticsQueryParams) -> Any:
    params = {k: v for k, v in msgspec.to_builtins(args).items() if v is not None}
    return await analytics(ctx, who.workspace_id, parse_query(params))


ANALYTICS_TOOLS: list[ToolSpec] = [
    ToolSpec(
        name="get_analytics",
        title="Get click analytics",
        description=(
            "Count the workspace's clicks. `groupBy`: count (the default: returns {clicks}), timeseries "
            "(clicks per minute/hour/day/month bucket, zero-filled, in `timezone`), or a ranking by "
            "countries, regions, cities, continents, devices, browsers, os, referers, referer_urls, "
            "top_links, utm_sources, utm_mediums, utm_campaigns, utm_terms, utm_contents (lists come back "
            "as {data: [...]}, most clicks first, at most `limit` rows). Time: `interval` (24h by default, "
            "7d, 30d, 90d, 1y, mtd, ytd, all) or `start`/`end` (ISO 8601). Filters: linkId, domain, tagId, "
            "folderId, country, device, browser, os, referer, utm_*; `qr: true` counts QR scans only; "
            "`unique: true` adds unique visitors; bots are left out unless `includeBots: true`."
        ),
        example='{"groupBy": "countries", "interval": "7d", "linkId": "link_01JD5X7Q2M8V4N6P0R3S5T7W9Y"}',
        route="GET /analytics",
        scope=SCOPE,
        args=AnalyticsQueryParams,
        run=_get_analytics,
        read_only=True,
        idempotent=True,
    ),
]
