"""Test helpers: read a QR code back with a real decoder (zxing-cpp), as a phone would."""

from __future__ import annotations

import io

import cairosvg
import zxingcpp
from PIL import Image, ImageDraw


def raster(content: bytes, media_type: str) -> Image.Image:
    """The image a user would see: PNG as is, SVG rendered by cairo at its own size."""
    if media_type == "image/svg+xml":
        content = cairosvg.svg2png(bytestring=content)
    with Image.open(io.BytesIO(content)) as im:
        return im.convert("RGB")


def decode(content: bytes, media_type: str) -> list[str]:
    """Every QR code text zxing-cpp finds in the image."""
    found = zxingcpp.read_barcodes(raster(content, media_type))
    return [b.text for b in found if b.format == zxingcpp.BarcodeFormat.QRCode]


def decode_level(content: bytes, media_type: str) -> str:
    """The error correction level of the one QR code in the image."""
    (code,) = zxingcpp.read_barcodes(raster(content, media_type))
    assert code.format == zxingcpp.BarcodeFormat.QRCode
    return str(code.ec_level)


def sample_logo(fmt: str = "PNG", size: tuple[int, int] = (240, 240)) -> bytes:
    """A logo that is hard on decoders: opaque, dark, with a transparent corner."""
    im = Image.new("RGBA", size, (200, 30, 30, 255))
    draw = ImageDraw.Draw(im)
    w, h = size
    draw.ellipse((w // 8, h // 8, w * 7 // 8, h * 7 // 8), fill=(0, 0, 0, 255))
    draw.rectangle((0, 0, w // 4, h // 4), fill=(0, 0, 0, 0))
    out = io.BytesIO()
    im.convert("RGB" if fmt == "JPEG" else "RGBA").save(out, format=fmt)
    return out.getvalue()
