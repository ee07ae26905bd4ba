"""The Analytics page: the workspace's clicks (or one link's, tag's, folder's, domain's) explored by filter.

The page is a shell (the controls, the filter chips, empty panels); ``static/analytics.js`` fills
the panels from ``/app/analytics/data``, which answers exactly what ``GET /analytics`` answers
(same parameters, validation and error shape), downloads through ``/app/analytics/export`` and
follows ``/app/analytics/live``: the API's own handlers behind the session instead of a key.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlencode

from starlette.responses import Response
from starlette.routing import Route

from api.dashboard.web import View, page
from api.endpoints import error_response, json_response, read_query
from api.errors import H0pError, NotFound
from api.routes.analytics import AnalyticsQueryParams, analytics_answer, export_response, live_response
from api.services import folders, links, tags
from api.services.analytics_query import FILTERS

INTERVALS = [("24h", "Last 24 hours"), ("7d", "Last 7 days"), ("30d", "Last 30 days"), ("90d", "Last 90 days"),
             ("1y", "Last 12 months"), ("mtd", "Month to date"), ("ytd", "Year to date"), ("all", "All time"),
             ("custom", "Custom")]  # fmt: skip
# The page's filters, as the API names them, with the chip's label.
FILTER_LABELS = {
    "linkId": "Link", "domain": "Domain", "tagId": "Tag", "folderId": "Folder", "country": "Country",
    "region": "Region", "city": "City", "continent": "Continent", "device": "Device", "browser": "Browser",
    "os": "OS", "referer": "Referrer", "refererUrl": "Referrer URL", "utm_source": "UTM source",
    "utm_medium": "UTM medium", "utm_campaign": "UTM campaign", "utm_term": "UTM term", "utm_content": "UTM content",
    "qr": "QR scans",
}  # fmt: skip
assert set(FILTER_LABELS) == {*FILTERS, "qr"}, "a filter of /analytics has no label on the Analytics page"


async def _scope_name(view: View, name: str, value: str) -> str:
    """What a chip shows for a scope filter: the link's short URL, the tag's or folder's name."""
    try:
        if name == "linkId":
            return (await links.get_link(view.ctx, view.workspace_id, value)).short_url
        if name == "tagId":
            return (await tags.get_tag(view.ctx, view.workspace_id, value)).name
        if name == "folderId":
            return (await folders.get_folder(view.ctx, view.workspace_id, value)).name
    except NotFound:
        return f"{value} (not found)"
    return value


async def _page(view: View) -> Response:
    q = view.request.query_params
    chips = []
    for name, label in FILTER_LABELS.items():
        value = q.get(name)
        if not value:
            continue
        shown = await _scope_name(view, name, value) if name in ("linkId", "tagId", "folderId") else value
        rest = [(k, v) for k, v in q.multi_items() if k != name]
        chips.append({"name": name, "label": label, "value": value, "shown": shown, "remove": urlencode(rest)})
    interval = q.get("interval") or ("custom" if q.get("start") else "24h")
    return view.render(
        "analytics.html",
        intervals=INTERVALS,
        interval=interval,
        start=q.get("start", "")[:10],
        end=q.get("end", "")[:10],
        unique=q.get("unique") == "true",
        include_bots=q.get("includeBots") == "true",
        chips=chips,
        scope=next((c for c in chips if c["name"] in ("linkId", "tagId", "folderId", "domain")), None),
        export_query=_export_query(q),
    )


def _export_query(q: Mapping[str, str]) -> str:
    """The export of the view (what analytics.js also builds): its filters, its range, bots or not."""
    params = [(k, q[k]) for k in FILTER_LABELS if q.get(k)]
    interval = q.get("interval") or ("custom" if q.get("start") else "24h")
    if interval == "custom":
        params += [(k, q[k]) for k in ("start", "end") if q.get(k)]
    else:
        params.append(("interval", interval))
    if q.get("includeBots") == "true":
        params.append(("includeBots", "true"))
    return urlencode(params)


async def _data(view: View) -> Response:
    # GET /analytics behind the session: its parameters, answers and errors, unchanged
    try:
        query = read_query(view.request, AnalyticsQueryParams)
        return json_response(200, await analytics_answer(view.ctx, view.workspace_id, query))
    except H0pError as exc:
        return error_response(exc)


async def _export(view: View) -> Response:
    try:
        return await export_response(view.ctx, view.workspace_id, view.request)
    except H0pError as exc:
        return error_response(exc)


async def _live(view: View) -> Response:
    try:
        return await live_response(view.ctx, view.workspace_id, view.request)
    except H0pError as exc:
        return error_response(exc)


ROUTES = [
    Route("/analytics", page(_page), methods=["GET"]),
    Route("/analytics/data", page(_data), methods=["GET"]),
    Route("/analytics/export", page(_export), methods=["GET"]),
    Route("/analytics/live", page(_live), methods=["GET"]),
]
