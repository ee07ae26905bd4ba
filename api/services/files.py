"""Image files: upload (proved to be an image, re-encoded without metadata), list, read, delete.

Only PNG, JPEG, WebP and GIF are accepted, and only after Pillow has decoded them: the declared
content type and the file name are never trusted. SVG is refused (it can carry scripts and no
sanitiser is installed). The re-encoded bytes are stored by their sha256 in the file storage;
a row in ``files`` is one workspace's handle on them.

Storage: local disk under ``H0P_FILES_DIR``, or an S3-compatible bucket when ``H0P_FILES_URL`` is
``s3://bucket/prefix`` (``storage_for``), so every API replica serves every file. Bytes are always
served through the API (never presigned bucket URLs): the signed URL stays the API's, the bucket
stays private, and deleting the file ends the URL at once. A store that cannot be reached is
``StorageUnavailable`` (503), and the upload or delete that hit it changed nothing.

Public content URLs: link previews are fetched by Facebook, Slack, … without an API key, so
``public_content_url`` signs the file id with the secret key (HMAC-SHA256, 128 bits). The API
serves ``GET /files/{id}/content?sig=…`` without a key when the signature matches; without
``sig`` the route needs a key of the file's workspace. Deleting the file ends the URL.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from PIL import Image, ImageOps, UnidentifiedImageError

from api import file_storage
from api.errors import NotFound, PlanLimitReached, StorageUnavailable, field_error
from api.file_storage import BlobMissing, FileStorage, LocalFileStorage, content_key
from api.ids import new_id
from api.services.context import ServiceContext
from api.services.plans import require_feature
from api.services.workspaces import workspace_plan
from h0p_settings import Settings

log = logging.getLogger("h0p.api")
FILE_ID_PREFIX = "file"
# Decoded size, checked before the pixels are read: 25 megapixels is ~100 MB as RGBA, more
# than any logo or preview image needs, and it keeps a "decompression bomb" from eating memory.
MAX_PIXELS = 25_000_000
MAX_NAME_LENGTH = 255

_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
_ADVISORY_BLOB = 0x6830_0F11  # advisory lock class id: one blob's upload vs delete


@dataclass(frozen=True, slots=True)
class FileInfo:
    id: str
    workspace_id: str
    sha256: str
    name: str
    content_type: str
    size: int
    width: int
    height: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class CleanImage:
    """An upload after decoding and re-encoding: what is stored."""

    data: bytes
    content_type: str
    width: int
    height: int


def storage_for(settings: Settings) -> FileStorage:
    """The file storage the settings name: the bucket of ``files_url``, else the directory ``files_dir``."""
    if settings.files_url:
        return file_storage.s3_storage(
            settings.files_url,
            settings.s3_endpoint_url,
            settings.s3_region,
            settings.s3_access_key_id,
            settings.s3_secret_access_key,
            settings.s3_timeout_s,
        )
    return LocalFileStorage(settings.files_dir)


@asynccontextmanager
async def _storage_call() -> AsyncIterator[None]:
    # The store's own failure becomes the API's 503; the cause goes to the log (no credentials in it).
    try:
        yield
    except file_storage.StorageUnavailable as exc:
        log.warning("file storage unavailable: %s", exc)
        raise StorageUnavailable() from None


_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"RIFF")


def _looks_like_svg(data: bytes) -> bool:
    # Only to give SVG uploads a clear message (Pillow refuses them anyway); a real image whose
    # metadata happens to mention "<svg" is not one.
    if data.startswith(_IMAGE_MAGIC):
        return False
    head = data[:1024].lstrip().lower()
    return head.startswith((b"<?xml", b"<svg", b"<!doctype svg")) or b"<svg" in head


def sanitize_image(data: bytes, max_pixels: int = MAX_PIXELS) -> CleanImage:
    """Decode ``data`` as PNG/JPEG/WebP/GIF and re-encode it without metadata; raise ValidationFailed.

    EXIF orientation is applied to the pixels before EXIF is dropped, so photos keep their
    orientation. The ICC profile is kept (colour, not personal data). GIF and WebP animations
    keep their first frame only: previews and logos are still images.
    """
    if _looks_like_svg(data):
        raise field_error("file", "SVG files are not accepted; upload a PNG, JPEG, WebP or GIF image")
    try:
        # formats= limits Pillow to these four decoders: no TIFF, PSD, EPS (Ghostscript) …
        with Image.open(io.BytesIO(data), formats=tuple(_FORMATS)) as im:
            fmt = im.format or ""
            width, height = im.size
            if width * height > max_pixels:
                raise field_error("file", f"the image has {width}x{height} pixels; at most {max_pixels:,} are accepted")
            im.seek(0)
            im.load()
            return _reencode(im, fmt)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise field_error("file", f"the image has more than {max_pixels:,} pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise field_error("file", "not a PNG, JPEG, WebP or GIF image (or a damaged one)") from None


def _reencode(im: Image.Image, fmt: str) -> CleanImage:
    keep: dict[str | tuple[int, int], object] = {k: im.info[k] for k in ("transparency", "icc_profile") if k in im.info}
    options: dict[str, object] = {}
    oriented = im
    if im.getexif().get(0x0112, 1) != 1:  # Orientation tag says the pixels are rotated/flipped
        oriented = ImageOps.exif_transpose(im)
    if fmt == "JPEG":
        # "keep" reuses the original quantisation: no second generation of JPEG loss. It needs
        # the decoded JPEG itself, which a transposed copy is not.
        options = {"quality": "keep", "subsampling": "keep"} if oriented is im else {"quality": 90}
    elif fmt == "WEBP":
        options = {"quality": 90}
    out_image = oriented
    # Whatever Pillow would write back from .info (EXIF, XMP, text chunks, comments) goes.
    out_image.info = keep
    if "icc_profile" in keep:
        options["icc_profile"] = keep["icc_profile"]
    buf = io.BytesIO()
    out_image.save(buf, format=fmt, **options)
    return CleanImage(buf.getvalue(), _FORMATS[fmt], out_image.width, out_image.height)


def _row_to_info(row: asyncpg.Record) -> FileInfo:
    return FileInfo(
        id=row["id"],
        workspace_id=row["workspace_id"],
        sha256=row["sha256"],
        name=row["name"],
        content_type=row["content_type"],
        size=row["size"],
        width=row["width"],
        height=row["height"],
        created_at=row["created_at"],
    )


@asynccontextmanager
async def _blob_lock(conn: asyncpg.Connection, key: str) -> AsyncIterator[None]:
    # Upload and delete of the same blob are serialised so a delete that saw "no other row uses
    # these bytes" cannot remove them under an upload that is about to add such a row.
    obj = int.from_bytes(bytes.fromhex(key[:8]), "big", signed=True)
    await conn.execute("SELECT pg_advisory_lock($1, $2)", _ADVISORY_BLOB, obj)
    try:
        yield
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1, $2)", _ADVISORY_BLOB, obj)


def _clean_name(name: str | None) -> str:
    # Only for display: strip any client path and control characters.
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(ch for ch in base if ch.isprintable())[:MAX_NAME_LENGTH]


async def upload_file(ctx: ServiceContext, workspace_id: str, data: bytes, name: str | None = None) -> FileInfo:
    """Store an uploaded image for the workspace.

    ValidationFailed if it is not an accepted image; FeatureNotAvailable if the plan has no
    files; PlanLimitReached past the workspace's storage quota (``file_quota_bytes``).
    """
    limit = ctx.settings.file_max_bytes
    if not data:
        raise field_error("file", "the file is empty")
    if len(data) > limit:
        raise field_error("file", f"the file has {len(data):,} bytes; at most {limit:,} are accepted")
    require_feature(await workspace_plan(ctx, workspace_id), "files")
    image = await asyncio.to_thread(sanitize_image, data)
    key = content_key(image.data)
    storage = storage_for(ctx.settings)
    async with ctx.pool.acquire() as conn, _blob_lock(conn, key), conn.transaction():
        # One upload at a time per workspace, or two concurrent ones could both pass the quota check.
        await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _ADVISORY_BLOB + 1, workspace_id)
        used = await conn.fetchval("SELECT coalesce(sum(size), 0) FROM files WHERE workspace_id = $1", workspace_id)
        quota = ctx.settings.file_quota_bytes
        if used + len(image.data) > quota:
            raise PlanLimitReached(
                f"file storage quota reached: {used:,} of {quota:,} bytes used, this image needs {len(image.data):,}"
            )
        row = await conn.fetchrow(
            "INSERT INTO files (id, workspace_id, sha256, name, content_type, size, width, height)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
            new_id(FILE_ID_PREFIX),
            workspace_id,
            key,
            _clean_name(name),
            image.content_type,
            len(image.data),
            image.width,
            image.height,
        )
        # Inside the transaction: if storing fails, no row points at missing bytes.
        async with _storage_call():
            await storage.put(key, image.data)
    return _row_to_info(row)


async def get_file(ctx: ServiceContext, workspace_id: str, file_id: str) -> FileInfo:
    """The file's metadata; NotFound unless it belongs to the workspace."""
    if "\x00" in file_id:  # Postgres text cannot hold NUL: no such file, rather than a database error
        raise NotFound(f"file {file_id!r} not found")
    row = await ctx.pool.fetchrow("SELECT * FROM files WHERE id = $1 AND workspace_id = $2", file_id, workspace_id)
    if row is None:
        raise NotFound(f"file {file_id} not found")
    return _row_to_info(row)


async def list_files(
    ctx: ServiceContext, workspace_id: str, page: int = 0, limit: int = 10
) -> tuple[list[FileInfo], int]:
    """One page of the workspace's files, newest first, and the total count."""
    rows = await ctx.pool.fetch(
        "SELECT *, count(*) OVER () AS total FROM files WHERE workspace_id = $1"
        " ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3",
        workspace_id,
        limit,
        page * limit,
    )
    if rows:
        total = int(rows[0]["total"])
    else:  # the page is past the end: the count still matters to the client
        total = int(await ctx.pool.fetchval("SELECT count(*) FROM files WHERE workspace_id = $1", workspace_id))
    return [_row_to_info(r) for r in rows], total


async def read_file(ctx: ServiceContext, workspace_id: str, file_id: str) -> tuple[FileInfo, bytes]:
    """The file's metadata and bytes; NotFound unless it belongs to the workspace."""
    info = await get_file(ctx, workspace_id, file_id)
    return info, await _read_blob(ctx, info)


async def read_public_file(ctx: ServiceContext, file_id: str, signature: str) -> tuple[FileInfo, bytes]:
    """The file behind a public content URL; NotFound if the signature is wrong or the file is gone."""
    expected = (content_signature(ctx.settings, file_id), _legacy_content_signature(ctx.settings, file_id))
    if not any(hmac.compare_digest(signature.encode(), e.encode()) for e in expected):
        raise NotFound(f"file {file_id} not found")
    row = await ctx.pool.fetchrow("SELECT * FROM files WHERE id = $1", file_id.replace("\x00", ""))
    if row is None:
        raise NotFound(f"file {file_id} not found")
    info = _row_to_info(row)
    return info, await _read_blob(ctx, info)


async def _read_blob(ctx: ServiceContext, info: FileInfo) -> bytes:
    try:
        async with _storage_call():
            return await storage_for(ctx.settings).get(info.sha256)
    except BlobMissing:
        raise NotFound(f"the content of file {info.id} is missing from the file storage") from None


async def delete_file(ctx: ServiceContext, workspace_id: str, file_id: str) -> None:
    """Delete the file; its bytes go with the last row that uses them. NotFound unless it is the workspace's."""
    info = await get_file(ctx, workspace_id, file_id)
    async with ctx.pool.acquire() as conn, _blob_lock(conn, info.sha256):
        async with conn.transaction():
            deleted = await conn.fetchval(
                "DELETE FROM files WHERE id = $1 AND workspace_id = $2 RETURNING id", file_id, workspace_id
            )
            if deleted is None:  # deleted concurrently
                raise NotFound(f"file {file_id} not found")
            in_use = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM files WHERE sha256 = $1)", info.sha256)
            if not in_use:
                # Inside the transaction: if the store is down the row stays, and a retry deletes both.
                async with _storage_call():
                    await storage_for(ctx.settings).delete(info.sha256)


async def load_logo(ctx: ServiceContext, workspace_id: str, file_id: str) -> tuple[FileInfo, bytes]:
    """A file used as a QR logo: ValidationFailed on ``logo`` (not 404) if it is not the workspace's."""
    try:
        return await read_file(ctx, workspace_id, file_id)
    except NotFound:
        raise field_error("logo", f"no image file {file_id} in this workspace") from None


def content_signature(settings: Settings, file_id: str) -> str:
    """The ``sig`` of a file's public content URL (HMAC-SHA256 of the id under the file-URL key, 128 bits)."""
    mac = hmac.new(settings.derived_key("file-urls"), f"h0p-file-content:{file_id}".encode(), hashlib.sha256)
    return mac.hexdigest()[:32]


def _legacy_content_signature(settings: Settings, file_id: str) -> str:
    # Before per-purpose keys, URLs were signed with H0P_SECRET_KEY itself, and links store their
    # ogImage URL: still verified (never issued) so those previews keep working after an upgrade.
    mac = hmac.new(settings.secret_key.encode(), f"h0p-file-content:{file_id}".encode(), hashlib.sha256)
    return mac.hexdigest()[:32]


def api_base_url(settings: Settings) -> str:
    """Where clients reach the API: ``api_public_url``, else ``scheme://default_domain:api_port``."""
    if settings.api_public_url:
        return settings.api_public_url.rstrip("/")
    return f"{settings.public_scheme}://{settings.default_domain}:{settings.api_port}"


def is_file_id(value: str) -> bool:
    """True if ``value`` names an uploaded file (``file_…``) rather than a URL."""
    return value.startswith(FILE_ID_PREFIX + "_") and "/" not in value


def public_content_url(settings: Settings, file_id: str) -> str:
    """The URL anyone (preview fetchers included) can load the file from, without an API key."""
    return f"{api_base_url(settings)}/files/{file_id}/content?sig={content_signature(settings, file_id)}"


async def storage_used(ctx: ServiceContext, workspace_id: str) -> int:
    """Bytes of uploaded files the workspace holds (what its quota counts)."""
    used: int = await ctx.pool.fetchval(
        "SELECT coalesce(sum(size), 0) FROM files WHERE workspace_id = $1", workspace_id
    )
    return used
