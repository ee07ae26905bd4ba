"""QR code routes: ``GET /qr`` (a URL or a link) and ``GET /links/{id}/qr``; PNG or SVG, with ETag.

The ETag is computed from the options (and the logo's hash) before anything is drawn, so a
client revalidating with ``If-None-Match`` gets a 304 without the server rendering the code.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from api.auth import require_scope
from api.errors import ValidationFailed
from api.routes.files import RawEndpoint, etag_matches, not_modified, openapi_paths
from api.services import qr
from api.services.context import ServiceContext
from api.services.keys import Principal

# The code of a URL never changes; a link's can (its slug or domain): revalidate after 5 minutes.
CACHE_CONTROL = "private, max-age=300"


async def _respond(ctx: ServiceContext, principal: Principal, request: Request, options: qr.QrOptions) -> Response:
    if options.logo is not None:
        require_scope(principal, "files:read")  # the logo is read from the workspace's files
    job = await qr.prepare_qr(ctx, principal.workspace_id, options)
    if etag_matches(request, job.etag):
        return not_modified(job.etag, CACHE_CONTROL)
    image = await asyncio.to_thread(qr.render_qr, job)
    headers = {
        "ETag": image.etag,
        "Cache-Control": CACHE_CONTROL,
        "Content-Disposition": f'inline; filename="qr.{options.format}"',
        "X-Content-Type-Options": "nosniff",
    }
    return Response(image.content, media_type=image.media_type, headers=headers)


async def qr_code(ctx: ServiceContext, principal: Principal, request: Request) -> Response:
    params = dict(request.query_params)
    url, link_id = params.pop("url", None), params.pop("linkId", None)
    if (url is None) == (link_id is None):
        raise ValidationFailed([{"path": "url", "message": "give either url or linkId"}])
    if link_id is not None:
        url = await qr.link_qr_url(ctx, principal.workspace_id, link_id)
    assert url is not None
    return await _respond(ctx, principal, request, qr.options_from_query(params, url))


async def link_qr_code(ctx: ServiceContext, principal: Principal, request: Request) -> Response:
    params = dict(request.query_params)
    if "url" in params or "linkId" in params:
        raise ValidationFailed([{"path": k, "message": "not allowed here"} for k in ("url", "linkId") if k in params])
    url = await qr.link_qr_url(ctx, principal.workspace_id, request.path_params["id"])
    return await _respond(ctx, principal, request, qr.options_from_query(params, url))


def _int_param(name: str, low: int, high: int, default: int, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "integer", "minimum": low, "maximum": high, "default": default},
    }


def _options_params() -> list[dict[str, Any]]:
    # Built from the service's bounds, so the document says what the code enforces.
    colour = {"type": "string", "pattern": "^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$"}
    return [
        {"name": "format", "in": "query", "required": False,
         "schema": {"type": "string", "enum": ["png", "svg"], "default": "png"}},
        _int_param("size", qr.SIZE_MIN, qr.SIZE_MAX, qr.SIZE_DEFAULT,
                   f"Width and height in pixels; at least {qr.MIN_MODULE_PX} px per module (else 400)."),
        {"name": "level", "in": "query", "required": False, "description": "Error correction; H when `logo` is set.",
         "schema": {"type": "string", "enum": ["L", "M", "Q", "H"], "default": qr.LEVEL_DEFAULT}},
        {"name": "fgColor", "in": "query", "required": False, "schema": {**colour, "default": "#000000"},
         "description": f"Dark modules; darker than `bgColor` with a contrast of at least {qr.MIN_CONTRAST:.0f}:1."},
        {"name": "bgColor", "in": "query", "required": False, "schema": {**colour, "default": "#ffffff"}},
        _int_param("margin", qr.MARGIN_MIN, qr.MARGIN_MAX, qr.MARGIN_DEFAULT,
                   "Quiet zone in modules (scanners need at least 4)."),
        {"name": "logo", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "Id of an image uploaded with POST /files (needs the `files:read` scope too)."},
        _int_param("logoSize", qr.LOGO_SIZE_MIN, qr.LOGO_SIZE_MAX, qr.LOGO_SIZE_DEFAULT,
                   "Logo width, percent of the code's width."),
    ]  # fmt: skip


_SUCCESS = {
    "200": {
        "description": "The QR code",
        "headers": {"ETag": {"schema": {"type": "string"}}},
        "content": {
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/svg+xml": {"schema": {"type": "string"}},
        },
    },
    "304": {"description": "Not modified (If-None-Match matched the ETag)"},
}
_PROVEN = (
    "Every option is bounded to codes that scan: the test suite decodes each one with zxing-cpp, in PNG and "
    "SVG, with and without a logo. Bad options are 400 VALIDATION_ERROR and nothing is drawn."
)

QR = RawEndpoint(
    "GET", "/qr", qr_code, "Get a QR code for a URL or a link", "QR codes", "getQrCode", scope="links:read",
    success=_SUCCESS, errors=(400, 401, 403, 404, 429, 500),
    parameters=[
        {"name": "url", "in": "query", "required": False, "schema": {"type": "string", "maxLength": qr.MAX_DATA_LENGTH},
         "description": "The http(s) URL to encode (give `url` or `linkId`)."},
        {"name": "linkId", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "A link of the workspace: encodes its short URL marked `?qr=1` (counted as a scan)."},
        *_options_params(),
    ],
    description=_PROVEN,
)  # fmt: skip
LINK_QR = RawEndpoint(
    "GET", "/links/{id}/qr", link_qr_code, "Get a link's QR code", "QR codes", "getLinkQrCode", scope="links:read",
    success=_SUCCESS, errors=(400, 401, 403, 404, 429, 500), parameters=_options_params(),
    description="Encodes the link's short URL with `?qr=1`, which the edge strips and counts as a QR scan. " + _PROVEN,
)  # fmt: skip

ROUTES = [QR.route(), LINK_QR.route()]
OPENAPI_PATHS = openapi_paths([QR, LINK_QR])
