"""Every QR option draws a code that a real decoder (zxing-cpp) reads back as the exact URL.

Pure rendering: no database. PNG is decoded as produced; SVG is rendered by cairo first.
"""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image

from api.errors import ValidationFailed
from api.services.qr import (
    LOGO_SIZE_MAX,
    LOGO_SIZE_MIN,
    QrJob,
    QrOptions,
    options_from_query,
    qr_options,
    render_qr,
    with_qr_marker,
)
from tests.api.qr_decode import decode, decode_level, raster, sample_logo

SHORT = "http://localhost:8080/abc1234?qr=1"
LONG = "https://shop.example.com/campaigns/spring-2026/landing?utm_source=poster&utm_medium=print&" + "x=1&" * 40
FORMATS = ["png", "svg"]


def draw(options: QrOptions, logo: bytes | None = None) -> tuple[bytes, str]:
    image = render_qr(QrJob(options, logo, "0" * 64 if logo else None))
    return image.content, image.media_type


def assert_scans(options: QrOptions, logo: bytes | None = None) -> None:
    content, media_type = draw(options, logo)
    assert decode(content, media_type) == [options.data]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("url", [SHORT, LONG])
def test_default_code_scans_as_the_exact_url(fmt: str, url: str) -> None:
    assert_scans(qr_options(url, format=fmt))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("level", ["L", "M", "Q", "H"])
def test_every_error_correction_level_scans(fmt: str, level: str) -> None:
    options = qr_options(LONG, format=fmt, level=level)
    content, media_type = draw(options)
    assert decode(content, media_type) == [LONG]
    # segno may raise the level for free (same symbol size) but never lowers it
    assert "LMQH".index(decode_level(content, media_type)) >= "LMQH".index(level)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("size", [74, 100, 333, 512, 1000, 2048])
def test_every_size_scans_and_is_exactly_that_many_pixels(fmt: str, size: int) -> None:
    options = qr_options(SHORT, format=fmt, size=size)
    content, media_type = draw(options)
    assert decode(content, media_type) == [SHORT]
    assert raster(content, media_type).size == (size, size)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("margin", [4, 6, 10, 20])
def test_every_quiet_zone_scans_and_stays_background(fmt: str, margin: int) -> None:
    options = qr_options(SHORT, format=fmt, size=580, margin=margin)
    content, media_type = draw(options)
    assert decode(content, media_type) == [SHORT]
    im = raster(content, media_type)
    module_px = 580 // (29 + 2 * margin)  # version 3 for this URL: 29 modules; PNG modules are whole pixels
    border = margin * module_px - 1
    strip = im.crop((0, 0, 580, border))
    assert strip.getcolors() == [(580 * border, (255, 255, 255))]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("fg", "bg"),
    [("#000000", "#ffffff"), ("#1a3d8f", "#ffffff"), ("0b6e4f", "f5f0e1"), ("#333", "#ff0"), ("#7a1f00", "#ffd7c2")],
)
def test_custom_colours_scan_and_are_used(fmt: str, fg: str, bg: str) -> None:
    options = qr_options(SHORT, format=fmt, fg_color=fg, bg_color=bg)
    content, media_type = draw(options)
    assert decode(content, media_type) == [SHORT]
    colours = {c for _, c in raster(content, media_type).getcolors(1 << 16) or []}
    assert tuple(int(options.fg_color[i : i + 2], 16) for i in (1, 3, 5)) in colours
    assert tuple(int(options.bg_color[i : i + 2], 16) for i in (1, 3, 5)) in colours


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("url", [SHORT, LONG])
@pytest.mark.parametrize("logo_size", range(LOGO_SIZE_MIN, LOGO_SIZE_MAX + 1))
def test_code_with_a_logo_scans_at_every_allowed_logo_size(fmt: str, url: str, logo_size: int) -> None:
    options = qr_options(url, format=fmt, logo="file_x", logo_size=logo_size, size=600)
    content, media_type = draw(options, sample_logo())
    assert decode(content, media_type) == [url]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_logo_raises_error_correction_to_h(fmt: str) -> None:
    options = qr_options(SHORT, format=fmt, level="L", logo="file_x")
    assert options.effective_level == "H"
    content, media_type = draw(options, sample_logo())
    assert decode_level(content, media_type) == "H"


@pytest.mark.parametrize("logo_format", ["PNG", "JPEG", "WEBP", "GIF"])
def test_logo_in_any_accepted_format_is_drawn_and_scans(logo_format: str) -> None:
    options = qr_options(SHORT, format="png", logo="file_x", logo_size=25)
    plain, _ = draw(qr_options(SHORT, format="png", level="H"))
    content, media_type = draw(options, sample_logo(logo_format))
    assert decode(content, media_type) == [SHORT]
    assert content != plain
    centre = raster(content, media_type).getpixel((256, 256))
    assert centre == (0, 0, 0)  # the logo's dark disc, not a module


def test_svg_logo_is_embedded_not_linked() -> None:
    content, _ = draw(qr_options(SHORT, format="svg", logo="file_x"), sample_logo())
    svg = content.decode()
    assert re.search(r'<image [^>]*xlink:href="data:image/png;base64,[A-Za-z0-9+/=]+"', svg)
    assert 'xmlns:xlink="http://www.w3.org/1999/xlink"' in svg
    assert "http://" not in svg.replace("http://www.w3.org/", "")


def test_png_output_is_a_png_and_svg_output_is_svg() -> None:
    png, png_type = draw(qr_options(SHORT, format="png"))
    svg, svg_type = draw(qr_options(SHORT, format="svg"))
    assert (png_type, svg_type) == ("image/png", "image/svg+xml")
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG"
    assert svg.startswith(b"<svg ") and svg.rstrip().endswith(b"</svg>")


def test_same_options_give_the_same_etag_and_bytes() -> None:
    a = render_qr(QrJob(qr_options(SHORT, size=300)))
    b = render_qr(QrJob(qr_options(SHORT, size=300)))
    assert (a.etag, a.content) == (b.etag, b.content)
    assert re.fullmatch(r'"qr-[0-9a-f]{40}"', a.etag)


@pytest.mark.parametrize(
    "change",
    [
        {"format": "svg"},
        {"size": 301},
        {"level": "Q"},
        {"fg_color": "#112233"},
        {"bg_color": "#eeeeee"},
        {"margin": 5},
        {"logo": "file_x"},
    ],
)
def test_any_changed_option_changes_the_etag(change: dict[str, object]) -> None:
    base = render_qr(QrJob(qr_options(SHORT, size=300))).etag
    options = qr_options(SHORT, **{"size": 300, **change})  # type: ignore[arg-type]
    assert QrJob(options, b"", "a" * 64).etag != base


def test_a_different_logo_changes_the_etag() -> None:
    options = qr_options(SHORT, logo="file_x")
    assert QrJob(options, b"", "a" * 64).etag != QrJob(options, b"", "b" * 64).etag


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://localhost:8080/abc", "http://localhost:8080/abc?qr=1"),
        ("https://go.example.com/sale?ref=x", "https://go.example.com/sale?ref=x&qr=1"),
        ("https://go.example.com/a-b_c", "https://go.example.com/a-b_c?qr=1"),
    ],
)
def test_short_url_gets_the_qr_marker_whether_or_not_it_has_a_query(url: str, expected: str) -> None:
    assert with_qr_marker(url) == expected


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"format": "gif"}, "format"),
        ({"size": 63}, "size"),
        ({"size": 2049}, "size"),
        ({"level": "X"}, "level"),
        ({"margin": 3}, "margin"),
        ({"margin": 0}, "margin"),
        ({"margin": 21}, "margin"),
        ({"logo_size": 9}, "logoSize"),
        ({"logo_size": 26}, "logoSize"),
        ({"fg_color": "red"}, "fgColor"),
        ({"fg_color": "#12345"}, "fgColor"),
        ({"bg_color": "#gggggg"}, "bgColor"),
        ({"fg_color": "#ffffff", "bg_color": "#000000"}, "fgColor"),  # inverted
        ({"fg_color": "#bbbbbb", "bg_color": "#ffffff"}, "fgColor"),  # too little contrast
        ({"logo": ""}, "logo"),
    ],
)
def test_bad_option_is_a_validation_error_naming_the_field(kwargs: dict[str, object], path: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        qr_options(SHORT, **kwargs)  # type: ignore[arg-type]
    assert [d["path"] for d in caught.value.details or []] == [path]


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "example.com/x", "javascript:alert(1)", "https://" + "a" * 2050]
)
def test_data_must_be_an_http_url_of_bounded_length(url: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        qr_options(url)
    assert caught.value.details and caught.value.details[0]["path"] == "url"


def test_every_bad_option_is_reported_at_once() -> None:
    with pytest.raises(ValidationFailed) as caught:
        qr_options(SHORT, format="bmp", size=1, margin=1)
    assert {d["path"] for d in caught.value.details or []} == {"format", "size", "margin"}


def test_size_too_small_for_a_long_url_is_refused_not_drawn_blurred() -> None:
    with pytest.raises(ValidationFailed) as caught:
        render_qr(QrJob(qr_options("https://example.com/" + "a" * 1000, size=200)))
    assert caught.value.details and caught.value.details[0]["path"] == "size"


def test_url_too_long_for_level_h_is_refused() -> None:
    with pytest.raises(ValidationFailed) as caught:
        render_qr(QrJob(qr_options("https://example.com/" + "a" * 2000, level="H", size=2048)))
    assert caught.value.details and caught.value.details[0]["path"] == "url"


def test_query_values_are_parsed_and_checked() -> None:
    params = {"format": "SVG", "size": "300", "level": "q", "fgColor": "#123", "margin": "6", "logoSize": "15"}
    options = options_from_query(params, SHORT)
    assert (options.format, options.size, options.level, options.fg_color, options.margin, options.logo_size) == (
        "svg",
        300,
        "Q",
        "#112233",
        6,
        15,
    )


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"size": "big"}, "size"),
        ({"margin": "-1"}, "margin"),
        ({"logoSize": "1e3"}, "logoSize"),
        ({"colour": "x"}, "colour"),
    ],
)
def test_unparseable_or_unknown_query_values_are_validation_errors(params: dict[str, str], path: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        options_from_query(params, SHORT)
    assert [d["path"] for d in caught.value.details or []] == [path]
