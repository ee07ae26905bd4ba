"""The QR tool: a link's (or any URL's) QR code as MCP image content, from ``api.services.qr``."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from api.auth import require_scope
from api.errors import field_error
from api.mcp.spec import Id, ImageResult, ToolSpec
from api.services import qr
from api.services.context import ServiceContext
from api.services.keys import Principal


class QrCodeArgs(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, rename="camel"):
    """The options of the QR route: a link's code (``linkId``) or any URL's (``url``)."""

    link_id: Id | None = None
    url: Annotated[str, Meta(min_length=1, max_length=qr.MAX_DATA_LENGTH)] | None = None
    format: Literal["png", "svg"] = "png"
    size: Annotated[int, Meta(ge=qr.SIZE_MIN, le=qr.SIZE_MAX)] = qr.SIZE_DEFAULT
    level: Literal["L", "M", "Q", "H"] = qr.LEVEL_DEFAULT
    fg_color: Annotated[str, Meta(max_length=7, examples=["#112233"])] = "#000000"
    bg_color: Annotated[str, Meta(max_length=7, examples=["#ffffff"])] = "#ffffff"
    margin: Annotated[int, Meta(ge=qr.MARGIN_MIN, le=qr.MARGIN_MAX)] = qr.MARGIN_DEFAULT
    logo: Annotated[str, Meta(description="id of an uploaded image file")] | None = None
    logo_size: Annotated[int, Meta(ge=qr.LOGO_SIZE_MIN, le=qr.LOGO_SIZE_MAX)] = qr.LOGO_SIZE_DEFAULT


async def _get_qr_code(ctx: ServiceContext, who: Principal, args: QrCodeArgs) -> ImageResult:
    if args.logo is not None:
        require_scope(who, "files:read")  # as the route: the logo is read from the workspace's files
    if (args.link_id is None) == (args.url is None):
        raise field_error("linkId", "give either linkId (a link's code, scans are counted) or url")
    data = args.url if args.link_id is None else await qr.link_qr_url(ctx, who.workspace_id, args.link_id)
    assert data is not None
    options = qr.qr_options(
        data,
        format=args.format,
        size=args.size,
        level=args.level,
        fg_color=args.fg_color,
        bg_color=args.bg_color,
        margin=args.margin,
        logo=args.logo,
        logo_size=args.logo_size,
    )
    image = await qr.generate_qr(ctx, who.workspace_id, options)
    return ImageResult(image.content, image.media_type, f"QR code ({args.format}, {args.size}px) for {data}")


QR_TOOLS: list[ToolSpec] = [
    ToolSpec(
        name="get_qr_code",
        title="Get a QR code",
        description=(
            "Draw the QR code of a link (`linkId`: it encodes the short URL with a scan marker, so scans "
            "are counted apart from clicks) or of any `url`. PNG comes back as image content; SVG as the "
            "SVG document in text. Options: `size` in px, `fgColor`/`bgColor` (dark on light, contrast "
            "at least 3:1), `margin` in modules (at least 4), error correction `level`, `logo` (an "
            "uploaded file id) and `logoSize` (percent of the width)."
        ),
        example='{"linkId": "link_01JD5X7Q2M8V4N6P0R3S5T7W9Y", "size": 600, "fgColor": "#1a237e"}',
        route="GET /qr, GET /links/{id}/qr",
        scope="links:read",
        args=QrCodeArgs,
        run=_get_qr_code,
        read_only=True,
        idempotent=True,
    ),
]
