"""QR codes for URLs and links: PNG or SVG, colours, quiet zone, an optional centred logo.

A code that does not scan is a lost campaign, so every option is bounded to what scanners read
(the tests decode each one with zxing-cpp): the quiet zone is never under the 4 modules ISO/IEC
18004 requires, modules are at least 2 px in a PNG, the dark colour must be darker than the
light one with a contrast ratio of at least 3:1 (many phone scanners do not read inverted
codes), and a logo covers at most 25% of the symbol's width with error correction forced to H
(which restores 30% of the codewords; a 25%-wide square hides about 6% of the modules).

The symbol is encoded by segno; Pillow draws the PNG (so the logo can be composed onto it) and
segno writes the SVG, to which the logo is added as an embedded data: URI (an external URL would
be dropped by most renderers — the missing-logo bug other shorteners have).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import segno
from PIL import Image, ImageDraw

from api.errors import ValidationFailed
from api.services.context import ServiceContext
from api.services.files import load_logo
from api.services.links import get_link

QrFormat = Literal["png", "svg"]
QrLevel = Literal["L", "M", "Q", "H"]

RENDERER_VERSION = 1  # part of every ETag: bump when the same options start drawing different bytes
SIZE_MIN, SIZE_MAX, SIZE_DEFAULT = 64, 2048, 512
MARGIN_MIN, MARGIN_MAX, MARGIN_DEFAULT = 4, 20, 4
LOGO_SIZE_MIN, LOGO_SIZE_MAX, LOGO_SIZE_DEFAULT = 10, 25, 20  # percent of the symbol's width
LEVEL_DEFAULT: QrLevel = "M"
MIN_CONTRAST = 3.0
MIN_MODULE_PX = 2
MAX_DATA_LENGTH = 2048
QR_MARKER = "qr=1"  # added to a link's short URL; the edge strips it and counts the click as a scan
# SVGs embed the logo as PNG: enough pixels for print, not a multi-megabyte document.
SVG_LOGO_MAX_PX = 512

_MEDIA_TYPES: dict[str, str] = {"png": "image/png", "svg": "image/svg+xml"}
QUERY_PARAMS = ("url", "linkId", "format", "size", "level", "fgColor", "bgColor", "margin", "logo", "logoSize")


@dataclass(frozen=True, slots=True)
class QrOptions:
    """Validated options (build them with ``qr_options``). Colours are ``#rrggbb``."""

    data: str
    format: QrFormat = "png"
    size: int = SIZE_DEFAULT
    level: QrLevel = LEVEL_DEFAULT
    fg_color: str = "#000000"
    bg_color: str = "#ffffff"
    margin: int = MARGIN_DEFAULT
    logo: str | None = None
    logo_size: int = LOGO_SIZE_DEFAULT

    @property
    def effective_level(self) -> QrLevel:
        # The logo hides modules: only level H has the error correction to restore them.
        return "H" if self.logo else self.level

    @property
    def media_type(self) -> str:
        return _MEDIA_TYPES[self.format]


@dataclass(frozen=True, slots=True)
class QrJob:
    """Options plus the logo's bytes: everything rendering needs, and the ETag of the result."""

    options: QrOptions
    logo: bytes | None = None
    logo_sha256: str | None = None

    @property
    def etag(self) -> str:
        return qr_etag(self.options, self.logo_sha256)


@dataclass(frozen=True, slots=True)
class QrImage:
    content: bytes
    media_type: str
    etag: str


def _parse_color(value: str) -> str | None:
    raw = value.strip().lstrip("#").lower()
    if len(raw) == 3:
        raw = "".join(c * 2 for c in raw)
    if len(raw) != 6 or any(c not in "0123456789abcdef" for c in raw):
        return None
    return "#" + raw


def _luminance(color: str) -> float:
    # WCAG 2 relative luminance
    def channel(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.04045 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def contrast_ratio(fg: str, bg: str) -> float:
    """WCAG contrast ratio of two ``#rrggbb`` colours (1 to 21)."""
    a, b = sorted((_luminance(fg), _luminance(bg)), reverse=True)
    return (a + 0.05) / (b + 0.05)


def qr_options(
    data: str,
    *,
    format: str = "png",
    size: int = SIZE_DEFAULT,
    level: str = LEVEL_DEFAULT,
    fg_color: str = "#000000",
    bg_color: str = "#ffffff",
    margin: int = MARGIN_DEFAULT,
    logo: str | None = None,
    logo_size: int = LOGO_SIZE_DEFAULT,
) -> QrOptions:
    """Check every option and return them normalised; ValidationFailed lists every bad one."""
    problems: list[dict[str, str]] = []

    def bad(path: str, message: str) -> None:
        problems.append({"path": path, "message": message})

    parts = urlsplit(data)
    if len(data) > MAX_DATA_LENGTH:
        bad("url", f"at most {MAX_DATA_LENGTH} characters")
    elif parts.scheme not in ("http", "https") or not parts.netloc:
        bad("url", "expected an absolute http:// or https:// URL")
    if format not in _MEDIA_TYPES:
        bad("format", "expected png or svg")
    if not SIZE_MIN <= size <= SIZE_MAX:
        bad("size", f"expected a size in pixels from {SIZE_MIN} to {SIZE_MAX}")
    if level not in ("L", "M", "Q", "H"):
        bad("level", "expected L, M, Q or H")
    if not MARGIN_MIN <= margin <= MARGIN_MAX:
        bad("margin", f"expected a quiet zone of {MARGIN_MIN} to {MARGIN_MAX} modules (scanners need at least 4)")
    if not LOGO_SIZE_MIN <= logo_size <= LOGO_SIZE_MAX:
        bad("logoSize", f"expected {LOGO_SIZE_MIN} to {LOGO_SIZE_MAX} (percent of the code's width)")
    if logo is not None and not logo.strip():
        bad("logo", "expected a file id")
    fg, bg = _parse_color(fg_color), _parse_color(bg_color)
    if fg is None:
        bad("fgColor", "expected a hex colour such as #000000 or #000")
    if bg is None:
        bad("bgColor", "expected a hex colour such as #ffffff or #fff")
    if fg and bg:
        if _luminance(fg) >= _luminance(bg):
            bad("fgColor", "must be darker than bgColor: many scanners cannot read inverted codes")
        elif (ratio := contrast_ratio(fg, bg)) < MIN_CONTRAST:
            bad("fgColor", f"contrast with bgColor is {ratio:.1f}:1; scanners need at least {MIN_CONTRAST:.0f}:1")
    if problems:
        raise ValidationFailed(problems)
    assert fg is not None and bg is not None
    return QrOptions(
        data=data,
        format=format,  # type: ignore[arg-type]  # checked above
        size=size,
        level=level,  # type: ignore[arg-type]
        fg_color=fg,
        bg_color=bg,
        margin=margin,
        logo=logo,
        logo_size=logo_size,
    )


def options_from_query(params: Mapping[str, str], data: str) -> QrOptions:
    """``qr_options`` from query-string values (``size=300&fgColor=%23112233`` …); ``data`` is the URL to encode."""
    unknown = sorted(set(params) - set(QUERY_PARAMS))
    if unknown:
        raise ValidationFailed([{"path": k, "message": "unknown query parameter"} for k in unknown])
    ints: dict[str, int] = {}
    problems: list[dict[str, str]] = []
    for name, default in (("size", SIZE_DEFAULT), ("margin", MARGIN_DEFAULT), ("logoSize", LOGO_SIZE_DEFAULT)):
        raw = params.get(name)
        if raw is None:
            ints[name] = default
        elif raw.strip().isdigit() and len(raw.strip()) <= 6:
            ints[name] = int(raw)
        else:
            problems.append({"path": name, "message": "expected a whole number"})
    if problems:
        raise ValidationFailed(problems)
    return qr_options(
        data,
        format=params.get("format", "png").lower(),
        size=ints["size"],
        level=params.get("level", LEVEL_DEFAULT).upper(),
        fg_color=params.get("fgColor", "#000000"),
        bg_color=params.get("bgColor", "#ffffff"),
        margin=ints["margin"],
        logo=params.get("logo"),
        logo_size=ints["logoSize"],
    )


def with_qr_marker(short_url: str) -> str:
    """``short_url`` with the QR-scan marker (``qr=1``) appended to its query, whatever the query holds."""
    parts = urlsplit(short_url)
    query = f"{parts.query}&{QR_MARKER}" if parts.query else QR_MARKER
    return urlunsplit(parts._replace(query=query))


def qr_etag(options: QrOptions, logo_sha256: str | None) -> str:
    """A strong ETag: the same options (and logo bytes) always draw the same image."""
    key = [
        RENDERER_VERSION,
        options.data,
        options.format,
        options.size,
        options.effective_level,
        options.fg_color,
        options.bg_color,
        options.margin,
        logo_sha256 if options.logo else None,
        options.logo_size if options.logo else None,
    ]
    digest = hashlib.sha256(json.dumps(key, separators=(",", ":")).encode()).hexdigest()
    return f'"qr-{digest[:40]}"'


def _encode(options: QrOptions) -> segno.QRCode:
    try:
        # micro=False: Micro QR is not read by phone cameras.
        qr = segno.make(options.data, error=options.effective_level, micro=False)
    except segno.DataOverflowError:
        raise ValidationFailed(
            [{"path": "url", "message": f"too long for a QR code at error correction level {options.effective_level}"}]
        ) from None
    modules = int(qr.symbol_size(scale=1, border=options.margin)[0])
    if options.size < modules * MIN_MODULE_PX:
        raise ValidationFailed(
            [{"path": "size", "message": f"this URL needs at least {modules * MIN_MODULE_PX} px ({modules} modules)"}]
        )
    return qr


def _logo_box(symbol: int, logo_size: int) -> tuple[int, int]:
    """(first module, width in modules) of the square cleared for the logo, centred on the module grid."""
    width = max(1, round(symbol * logo_size / 100))
    if width % 2 != symbol % 2:  # same parity as the symbol, or it cannot sit exactly in the middle
        width -= 1
    return (symbol - width) // 2, width


def _open_logo(logo: bytes) -> Image.Image:
    with Image.open(io.BytesIO(logo)) as im:
        im.seek(0)
        return im.convert("RGBA")


def _hex_rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def _render_png(qr: segno.QRCode, options: QrOptions, logo: bytes | None) -> bytes:
    symbol = int(qr.symbol_size(scale=1, border=0)[0])
    total = symbol + 2 * options.margin
    scale = options.size // total
    # Palette image: index 0 = light, 1 = dark; scaled by a whole factor so every module is
    # the same number of pixels; the leftover pixels widen the quiet zone.
    grid = Image.frombytes("P", (symbol, symbol), bytes(1 if v & 1 else 0 for row in qr.matrix for v in row))
    fg, bg = _hex_rgb(options.fg_color), _hex_rgb(options.bg_color)
    grid.putpalette([*bg, *fg])
    grid = grid.resize((symbol * scale, symbol * scale), Image.Resampling.NEAREST)
    canvas = Image.new("P", (options.size, options.size), 0)
    canvas.putpalette([*bg, *fg])
    offset = (options.size - symbol * scale) // 2
    canvas.paste(grid, (offset, offset))
    if logo is not None:
        canvas = canvas.convert("RGB")
        first, width = _logo_box(symbol, options.logo_size)
        x0 = offset + first * scale
        box = width * scale
        ImageDraw.Draw(canvas).rectangle((x0, x0, x0 + box - 1, x0 + box - 1), fill=bg)
        # a module of plain background around the logo keeps its edge off the nearest modules
        inner = max(1, box - 2 * scale)
        mark = _open_logo(logo)
        mark.thumbnail((inner, inner), Image.Resampling.LANCZOS)
        canvas.paste(mark, (x0 + (box - mark.width) // 2, x0 + (box - mark.height) // 2), mark)
    out = io.BytesIO()
    canvas.save(out, format="PNG")
    return out.getvalue()


def _render_svg(qr: segno.QRCode, options: QrOptions, logo: bytes | None) -> bytes:
    total = int(qr.symbol_size(scale=1, border=options.margin)[0])
    buf = io.BytesIO()
    # Drawn in module units and sized by a viewBox: with a fractional scale segno's background
    # path comes out one module short (float floor division), leaving a transparent strip.
    qr.save(
        buf,
        kind="svg",
        scale=1,
        border=options.margin,
        dark=options.fg_color,
        light=options.bg_color,
        xmldecl=False,
        svgclass=None,
        lineclass=None,
    )
    svg = buf.getvalue().decode()
    natural = f'width="{total}" height="{total}"'
    if natural not in svg:
        raise RuntimeError("unexpected SVG from segno: no width/height on the root element")
    sized = f'width="{options.size}" height="{options.size}" viewBox="0 0 {total} {total}"'
    svg = svg.replace(natural, sized, 1)
    if logo is None:
        return svg.encode()
    symbol = total - 2 * options.margin
    first, width = _logo_box(symbol, options.logo_size)
    x0 = options.margin + first
    mark = _open_logo(logo)
    mark.thumbnail((SVG_LOGO_MAX_PX, SVG_LOGO_MAX_PX), Image.Resampling.LANCZOS)
    png = io.BytesIO()
    mark.save(png, format="PNG")
    href = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    # xlink:href, not href: SVG 1.1 renderers (Inkscape, older Safari, print RIPs) only know that one.
    # A module of plain background around the logo keeps its edge off the nearest modules.
    overlay = (
        f'<rect x="{x0}" y="{x0}" width="{width}" height="{width}" fill="{options.bg_color}"/>'
        f'<image x="{x0 + 1}" y="{x0 + 1}" width="{max(1, width - 2)}" height="{max(1, width - 2)}"'
        f' preserveAspectRatio="xMidYMid meet" xlink:href="{href}"/>'
    )
    svg = svg.replace("<svg ", '<svg xmlns:xlink="http://www.w3.org/1999/xlink" ', 1)
    head, _, tail = svg.rpartition("</svg>")
    return (head + overlay + "</svg>" + tail).encode()


def render_qr(job: QrJob) -> QrImage:
    """Draw the code (CPU-bound: call it from a thread in async code); ValidationFailed if it cannot fit."""
    qr = _encode(job.options)
    draw = _render_png if job.options.format == "png" else _render_svg
    return QrImage(draw(qr, job.options, job.logo), job.options.media_type, job.etag)


async def prepare_qr(ctx: ServiceContext, workspace_id: str, options: QrOptions) -> QrJob:
    """Load the logo (a file of this workspace, else ValidationFailed on ``logo``) and fix the ETag."""
    if options.logo is None:
        return QrJob(options)
    info, content = await load_logo(ctx, workspace_id, options.logo)
    return QrJob(options, content, info.sha256)


async def generate_qr(ctx: ServiceContext, workspace_id: str, options: QrOptions) -> QrImage:
    """Prepare and render a code off the event loop."""
    job = await prepare_qr(ctx, workspace_id, options)
    return await asyncio.to_thread(render_qr, job)


async def link_qr_url(ctx: ServiceContext, workspace_id: str, link_id: str) -> str:
    """The URL a link's QR code encodes: its short URL with the QR-scan marker. NotFound if not the workspace's."""
    link = await get_link(ctx, workspace_id, link_id)
    return with_qr_marker(link.short_url)
