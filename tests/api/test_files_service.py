"""Image files through the service: only real images get in, stripped of metadata, within quota.

Every test that takes ``ctx`` runs twice: files on local disk, and files in an S3 bucket of a
real S3-protocol server on loopback (moto).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from api.errors import FeatureNotAvailable, NotFound, PlanLimitReached, ValidationFailed
from api.file_storage import LocalFileStorage, content_key
from api.ids import new_id
from api.services import files
from api.services.context import ServiceContext
from api.services.workspaces import Workspace, get_or_create_workspace, set_plan
from h0p_settings import Settings
from tests.api.conftest import s3_settings
from tests.moto_server import MotoServer


@pytest.fixture(scope="module", params=["local", "s3"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def bucket_settings(settings: Settings, moto_server: MotoServer) -> Settings:
    return s3_settings(settings, moto_server)


@pytest.fixture
def ctx(ctx: ServiceContext, backend: str, request: pytest.FixtureRequest) -> ServiceContext:
    if backend == "local":
        return ctx
    # asked for here, not as an argument: the local runs need no S3 server
    return dataclasses.replace(ctx, settings=request.getfixturevalue("bucket_settings"))


@pytest.fixture
def ws(workspace: Workspace) -> str:
    return workspace.id


def image_bytes(
    fmt: str = "PNG", size: tuple[int, int] = (64, 48), color: tuple[int, ...] = (10, 120, 200), **kw: object
) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format=fmt, **kw)
    return out.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares huge dimensions in a few bytes: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp"), ("GIF", "image/gif")],
)
async def test_upload_accepts_each_image_format_and_reports_what_it_really_is(
    ctx: ServiceContext, ws: str, fmt: str, content_type: str
) -> None:
    info = await files.upload_file(ctx, ws, image_bytes(fmt), name="logo.bin")
    assert (info.content_type, info.width, info.height, info.name) == (content_type, 64, 48, "logo.bin")
    got, content = await files.read_file(ctx, ws, info.id)
    assert got == info and len(content) == info.size and content_key(content) == info.sha256
    with Image.open(io.BytesIO(content)) as im:
        assert im.format == fmt and im.size == (64, 48)


async def test_declared_name_and_type_are_not_trusted(ctx: ServiceContext, ws: str) -> None:
    info = await files.upload_file(ctx, ws, image_bytes("JPEG"), name="C:\\Users\\me\\photo.png")
    assert info.content_type == "image/jpeg"
    assert info.name == "photo.png"


@pytest.mark.parametrize(
    "data",
    [
        b"GIF89a this is not really a gif",
        b"%PDF-1.7\n1 0 obj\n",
        b"hello, world",
        image_bytes("PNG")[:40],  # truncated
        image_bytes("BMP"),  # an image, but not an accepted format
        image_bytes("TIFF"),
    ],
    ids=["fake-gif-magic", "pdf", "text", "truncated-png", "bmp", "tiff"],
)
async def test_non_images_and_other_formats_are_refused(ctx: ServiceContext, ws: str, data: bytes) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await files.upload_file(ctx, ws, data)
    assert caught.value.details == [{"path": "file", "message": caught.value.message}]


@pytest.mark.parametrize(
    "svg",
    [
        b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
        b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>',
        b"\n  <!-- logo -->\n<svg onload='alert(1)'/>",
    ],
)
async def test_svg_is_refused(ctx: ServiceContext, ws: str, svg: bytes) -> None:
    with pytest.raises(ValidationFailed, match="SVG"):
        await files.upload_file(ctx, ws, svg)


async def test_empty_and_oversized_uploads_are_refused(ctx: ServiceContext, ws: str) -> None:
    with pytest.raises(ValidationFailed, match="empty"):
        await files.upload_file(ctx, ws, b"")
    small = dataclasses.replace(ctx, settings=dataclasses.replace(ctx.settings, file_max_bytes=1000))
    big = image_bytes("GIF", size=(400, 400), color=(1, 2, 3))
    noisy = Image.effect_noise((200, 200), 64).convert("RGB")
    buf = io.BytesIO()
    noisy.save(buf, format="PNG")
    assert len(buf.getvalue()) > 1000
    with pytest.raises(ValidationFailed, match="at most 1,000 are accepted"):
        await files.upload_file(small, ws, buf.getvalue())
    assert len(big) < 1000  # a small file with many pixels is fine under the byte limit
    await files.upload_file(small, ws, big)


@pytest.mark.parametrize(("width", "height"), [(6000, 5000), (40_000, 40_000), (100_000, 100_000)])
async def test_decompression_bombs_are_refused_before_decoding(
    ctx: ServiceContext, ws: str, width: int, height: int
) -> None:
    bomb = png_header_only(width, height)
    assert len(bomb) < 200
    with pytest.raises(ValidationFailed, match="pixels"):
        await files.upload_file(ctx, ws, bomb)


async def test_metadata_is_stripped_but_orientation_is_applied(ctx: ServiceContext, ws: str) -> None:
    exif = Image.Exif()
    exif[0x010F] = "SpyCam Inc."  # Make
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    photo = image_bytes("JPEG", size=(80, 40), exif=exif.tobytes())
    info = await files.upload_file(ctx, ws, photo)
    _, content = await files.read_file(ctx, ws, info.id)
    with Image.open(io.BytesIO(content)) as im:
        assert dict(im.getexif()) == {}
        assert im.size == (40, 80)
    assert b"SpyCam" not in content


async def test_png_text_chunks_are_stripped(ctx: ServiceContext, ws: str) -> None:
    meta = PngImagePlugin.PngInfo()
    meta.add_text("Author", "Jane Doe, 12 Secret Street")
    png = image_bytes("PNG", pnginfo=meta)
    info = await files.upload_file(ctx, ws, png)
    _, content = await files.read_file(ctx, ws, info.id)
    assert b"Secret Street" not in content
    with Image.open(io.BytesIO(content)) as im:
        assert "Author" not in im.info


async def test_jpeg_without_rotation_is_not_recompressed_lossily(ctx: ServiceContext, ws: str) -> None:
    original = image_bytes("JPEG", size=(120, 90), quality=60)
    info = await files.upload_file(ctx, ws, original)
    _, content = await files.read_file(ctx, ws, info.id)
    with Image.open(io.BytesIO(original)) as a, Image.open(io.BytesIO(content)) as b:
        assert a.quantization == b.quantization  # type: ignore[attr-defined]


async def test_same_image_twice_is_stored_once_and_kept_until_the_last_copy_is_deleted(
    ctx: ServiceContext, ws: str
) -> None:
    data = image_bytes("PNG", color=(9, 9, 9))
    first = await files.upload_file(ctx, ws, data)
    second = await files.upload_file(ctx, ws, data)
    assert first.id != second.id and first.sha256 == second.sha256
    storage = files.storage_for(ctx.settings)
    assert await storage.exists(first.sha256)
    await files.delete_file(ctx, ws, first.id)
    assert await storage.exists(first.sha256)
    with pytest.raises(NotFound):
        await files.get_file(ctx, ws, first.id)
    await files.delete_file(ctx, ws, second.id)
    assert not await storage.exists(first.sha256)
    with pytest.raises(NotFound, match="not found"):
        await files.read_file(ctx, ws, second.id)


async def test_another_workspace_cannot_see_read_or_delete_a_file(ctx: ServiceContext, ws: str) -> None:
    info = await files.upload_file(ctx, ws, image_bytes())
    other = (await get_or_create_workspace(ctx, new_id("files-other"))).id
    with pytest.raises(NotFound):
        await files.get_file(ctx, other, info.id)
    with pytest.raises(NotFound):
        await files.read_file(ctx, other, info.id)
    with pytest.raises(NotFound):
        await files.delete_file(ctx, other, info.id)
    assert (await files.list_files(ctx, other)) == ([], 0)
    with pytest.raises(ValidationFailed) as caught:
        await files.load_logo(ctx, other, info.id)
    assert caught.value.details and caught.value.details[0]["path"] == "logo"


async def test_list_is_paginated_newest_first(ctx: ServiceContext, ws: str) -> None:
    ids = [(await files.upload_file(ctx, ws, image_bytes(color=(i, 0, 0)))).id for i in range(5)]
    page0, total = await files.list_files(ctx, ws, page=0, limit=2)
    page2, _ = await files.list_files(ctx, ws, page=2, limit=2)
    past, total_past = await files.list_files(ctx, ws, page=9, limit=2)
    assert total == total_past == 5
    assert [f.id for f in page0] == ids[::-1][:2]
    assert [f.id for f in page2] == [ids[0]]
    assert past == []


async def test_quota_counts_stored_bytes_and_refuses_the_upload_that_would_pass_it(
    ctx: ServiceContext, ws: str
) -> None:
    first = image_bytes("PNG", color=(1, 1, 1))
    stored = len(files.sanitize_image(first).data)
    limited = dataclasses.replace(ctx, settings=dataclasses.replace(ctx.settings, file_quota_bytes=stored * 2))
    await files.upload_file(limited, ws, first)
    await files.upload_file(limited, ws, first)  # exactly at the quota
    with pytest.raises(PlanLimitReached, match="quota"):
        await files.upload_file(limited, ws, image_bytes("PNG", color=(2, 2, 2)))
    assert (await files.list_files(limited, ws))[1] == 2


async def test_concurrent_uploads_cannot_overshoot_the_quota(ctx: ServiceContext, ws: str) -> None:
    data = [image_bytes("PNG", color=(3, i, 3)) for i in range(6)]
    each = max(len(files.sanitize_image(d).data) for d in data)
    limited = dataclasses.replace(ctx, settings=dataclasses.replace(ctx.settings, file_quota_bytes=each * 3))
    results = await asyncio.gather(*(files.upload_file(limited, ws, d) for d in data), return_exceptions=True)
    assert sum(not isinstance(r, BaseException) for r in results) == 3
    assert all(isinstance(r, PlanLimitReached) for r in results if isinstance(r, BaseException))


async def test_plan_without_files_cannot_upload(ctx: ServiceContext, ws: str) -> None:
    await set_plan(ctx, ws, "free")
    with pytest.raises(FeatureNotAvailable):
        await files.upload_file(ctx, ws, image_bytes())


async def test_public_content_url_is_signed_and_works_without_a_workspace(ctx: ServiceContext, ws: str) -> None:
    info = await files.upload_file(ctx, ws, image_bytes())
    url = files.public_content_url(ctx.settings, info.id)
    assert url.startswith(files.api_base_url(ctx.settings) + f"/files/{info.id}/content?sig=")
    sig = url.rpartition("sig=")[2]
    got, content = await files.read_public_file(ctx, info.id, sig)
    assert got.id == info.id and content_key(content) == info.sha256
    with pytest.raises(NotFound):
        await files.read_public_file(ctx, info.id, "0" * 32)
    other_key = dataclasses.replace(ctx.settings, secret_key="another-secret")
    assert files.content_signature(other_key, info.id) != sig
    await files.delete_file(ctx, ws, info.id)
    with pytest.raises(NotFound):
        await files.read_public_file(ctx, info.id, sig)


async def test_content_urls_are_signed_with_the_file_url_key_and_old_urls_still_open(
    ctx: ServiceContext, ws: str
) -> None:
    info = await files.upload_file(ctx, ws, image_bytes())
    sig = files.public_content_url(ctx.settings, info.id).rpartition("sig=")[2]
    derived = hmac.new(ctx.settings.derived_key("file-urls"), f"h0p-file-content:{info.id}".encode(), hashlib.sha256)
    assert sig == derived.hexdigest()[:32]
    # a URL issued before per-purpose keys (signed with H0P_SECRET_KEY itself) is stored in links' ogImage
    old = hmac.new(ctx.settings.secret_key.encode(), f"h0p-file-content:{info.id}".encode(), hashlib.sha256)
    got, _ = await files.read_public_file(ctx, info.id, old.hexdigest()[:32])
    assert got.id == info.id


def test_api_public_url_setting_is_the_base_of_content_urls(settings: Settings) -> None:
    s = dataclasses.replace(settings, api_public_url="https://api.h0p.example")
    assert files.public_content_url(s, "file_01ABC").startswith("https://api.h0p.example/files/file_01ABC/content?sig=")
    assert files.is_file_id("file_01ABC") and not files.is_file_id("https://cdn.example/file_01.png")


def test_local_storage_refuses_keys_that_are_not_content_hashes(tmp_path: Path) -> None:
    storage = LocalFileStorage(tmp_path)
    with pytest.raises(ValueError):
        storage.path_for("../../etc/passwd")
    with pytest.raises(ValueError):
        asyncio.run(storage.put("0" * 64, b"not matching"))


async def test_a_png_whose_metadata_mentions_svg_is_still_an_image(ctx: ServiceContext, ws: str) -> None:
    meta = PngImagePlugin.PngInfo()
    meta.add_text("Comment", "exported from <svg> by a design tool")
    info = await files.upload_file(ctx, ws, image_bytes("PNG", pnginfo=meta))
    assert info.content_type == "image/png"


async def test_a_file_id_with_a_nul_character_is_not_found(ctx: ServiceContext, ws: str) -> None:
    with pytest.raises(NotFound):
        await files.get_file(ctx, ws, "file_\x00")
    with pytest.raises(ValidationFailed) as caught:
        await files.load_logo(ctx, ws, "file_\x00")
    assert [d["path"] for d in caught.value.details or []] == ["logo"]
