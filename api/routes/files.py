"""File routes: upload (multipart), list, metadata, content, delete; and the raw-route wrapper.

List, metadata and delete are JSON endpoints (``ENDPOINTS``). Upload and content are not JSON
in/JSON out, so they are plain Starlette ``ROUTES`` served by ``RawEndpoint``, which applies
the same key authentication, rate limit, scope check and error shape as ``api.endpoints``, and
describes itself for the OpenAPI document (``OPENAPI_PATHS``). ``api.routes.qr`` uses it too.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.endpoints import Call, Endpoint, admit, error_response, query_params
from api.errors import H0pError, InternalError, NotFound, field_error
from api.schemas import Deleted, PageQuery
from api.services import files
from api.services.context import ServiceContext
from api.services.files import FileInfo
from api.services.keys import Principal

log = logging.getLogger("h0p.api")
# Multipart framing and headers on top of the file itself.
_MULTIPART_OVERHEAD = 64 * 1024
_ETAG_ANY = "*"


class File(msgspec.Struct, kw_only=True, rename="camel"):
    """An uploaded image. ``url`` loads its bytes without an API key (use it as ``ogImage`` or anywhere)."""

    id: str
    name: str
    content_type: str
    size: int
    width: int
    height: int
    sha256: str
    url: str
    created_at: datetime


class FileList(msgspec.Struct, kw_only=True):
    data: list[File]
    page: int
    limit: int
    total: int


def file_out(ctx: ServiceContext, info: FileInfo) -> File:
    return File(
        id=info.id,
        name=info.name,
        content_type=info.content_type,
        size=info.size,
        width=info.width,
        height=info.height,
        sha256=info.sha256,
        url=files.public_content_url(ctx.settings, info.id),
        created_at=info.created_at,
    )


RawHandler = Callable[[ServiceContext, Principal, Request], Awaitable[Response]]


@dataclass(frozen=True)
class RawEndpoint:
    """A keyed route whose request or response is not JSON; documented from these fields."""

    method: str
    path: str
    handler: RawHandler
    summary: str
    tag: str
    operation_id: str
    scope: str | None
    success: dict[str, Any]  # OpenAPI responses for success (status -> response object)
    description: str = ""
    parameters: list[dict[str, Any]] = field(default_factory=list)
    request_body: dict[str, Any] | None = None
    errors: tuple[int, ...] = (400, 401, 403, 429, 500)

    async def serve(self, request: Request) -> Response:
        """Authenticate, rate-limit, check the scope, run the handler; errors in the API's shape."""
        ctx: ServiceContext = request.app.state.ctx
        headers: dict[str, str] = {}
        try:
            principal = await admit(ctx, request, self.scope, headers)
            check_params(request)
            response = await self.handler(ctx, principal, request)
        except H0pError as exc:
            return error_response(exc, headers)
        except Exception:
            log.exception("unhandled error in %s %s", self.method, self.path)
            return error_response(InternalError(), headers)
        response.headers.update(headers)
        return response

    def route(self, serve: Callable[[Request], Awaitable[Response]] | None = None) -> Route:
        return Route(self.path, serve or self.serve, methods=[self.method], name=self.operation_id)

    def operation(self) -> dict[str, Any]:
        """This route's OpenAPI 3.0 operation object."""
        error_schema = {"$ref": "#/components/schemas/ErrorBody"}
        responses: dict[str, Any] = dict(self.success)
        for status in self.errors:
            responses[str(status)] = {
                "description": f"Error ({status})",
                "content": {"application/json": {"schema": error_schema}},
            }
        op: dict[str, Any] = {
            "operationId": self.operation_id,
            "summary": self.summary,
            "tags": [self.tag],
            "security": [{"apiKey": []}],
            "responses": responses,
        }
        description = self.description + (f"\n\nRequires the `{self.scope}` scope." if self.scope else "")
        if description.strip():
            op["description"] = description.strip()
        path_params = [p.strip("{}") for p in self.path.split("/") if p.startswith("{")]
        params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in path_params]
        if params or self.parameters:
            op["parameters"] = params + self.parameters
        if self.request_body is not None:
            op["requestBody"] = self.request_body
        return op


def openapi_paths(endpoints: list[RawEndpoint]) -> dict[str, dict[str, Any]]:
    """``{path: {method: operation}}`` for the OpenAPI document's ``paths``."""
    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        paths.setdefault(e.path, {})[e.method.lower()] = e.operation()
    return paths


def check_params(request: Request) -> None:
    """As ``api.endpoints`` does: each parameter once and without NUL, and ids short (else a 500 or a scan)."""
    query_params(request)
    if any(len(str(v)) > 100 or "\x00" in str(v) for v in request.path_params.values()):
        raise NotFound()


def etag_matches(request: Request, etag: str) -> bool:
    """True if ``If-None-Match`` names ``etag`` (weak comparison, as RFC 9110 asks for GET)."""
    header = request.headers.get("if-none-match")
    if not header:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return _ETAG_ANY in tags or etag in tags


def not_modified(etag: str, cache_control: str) -> Response:
    return Response(status_code=304, headers={"ETag": etag, "Cache-Control": cache_control})


# ---- JSON endpoints


async def list_(call: Call) -> FileList:
    q: PageQuery = call.query
    items, total = await files.list_files(call.ctx, call.principal.workspace_id, q.page, q.limit)
    return FileList(data=[file_out(call.ctx, i) for i in items], page=q.page, limit=q.limit, total=total)


async def get(call: Call) -> File:
    return file_out(call.ctx, await files.get_file(call.ctx, call.principal.workspace_id, call.path["id"]))


async def delete(call: Call) -> Deleted:
    await files.delete_file(call.ctx, call.principal.workspace_id, call.path["id"])
    return Deleted(id=call.path["id"])


ENDPOINTS = [
    Endpoint(
        "GET", "/files", list_, "List files", "Files", scope="files:read", query=PageQuery, response=FileList,
        operation_id="listFiles", description="Newest first.",
    ),
    Endpoint(
        "GET", "/files/{id}", get, "Get a file's metadata", "Files", scope="files:read", response=File,
        operation_id="getFile",
    ),
    Endpoint(
        "DELETE", "/files/{id}", delete, "Delete a file", "Files", scope="files:write", response=Deleted,
        operation_id="deleteFile", errors=(503,),
        description="Its public `url` stops working; QR codes asking for it as `logo` get 400; links that use it "
        "as `ogImage` keep the id but their preview loses the image. 503 STORAGE_UNAVAILABLE (nothing deleted) if "
        "the file storage cannot be reached.",
    ),
]  # fmt: skip


# ---- raw routes: upload and content


async def _capped_body(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    # The multipart parser spools whatever it is given: stop reading at the limit instead.
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise field_error("file", f"the upload is larger than {limit - _MULTIPART_OVERHEAD:,} bytes")
        yield chunk


async def _read_upload(ctx: ServiceContext, request: Request) -> tuple[bytes, str | None]:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != "multipart/form-data":
        raise field_error("file", "send the image as multipart/form-data with a field named file")
    limit = ctx.settings.file_max_bytes + _MULTIPART_OVERHEAD
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise field_error("file", f"the file is larger than {ctx.settings.file_max_bytes:,} bytes")
    parser = MultiPartParser(request.headers, _capped_body(request, limit), max_files=1, max_fields=5)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise field_error("file", f"bad multipart body: {exc.message}") from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise field_error("file", "no file in the field named file")
        return await upload.read(), upload.filename
    finally:
        await form.close()


async def upload(ctx: ServiceContext, principal: Principal, request: Request) -> Response:
    data, name = await _read_upload(ctx, request)
    info = await files.upload_file(ctx, principal.workspace_id, data, name)
    body = msgspec.json.encode(file_out(ctx, info))
    return Response(body, status_code=201, media_type="application/json")


def _content_response(request: Request, info: FileInfo, content: bytes, cache_control: str) -> Response:
    etag = f'"{info.sha256}"'
    if etag_matches(request, etag):
        return not_modified(etag, cache_control)
    headers = {
        "ETag": etag,
        "Cache-Control": cache_control,
        # the bytes were re-encoded by us, but a browser must still never sniff them into HTML
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'",
    }
    return Response(content, media_type=info.content_type, headers=headers)


async def content(ctx: ServiceContext, principal: Principal, request: Request) -> Response:
    info, data = await files.read_file(ctx, principal.workspace_id, request.path_params["id"])
    return _content_response(request, info, data, "private, max-age=3600")


async def serve_content(request: Request) -> Response:
    """``?sig=`` (the file's public URL) needs no key: link-preview fetchers have none."""
    signature = request.query_params.get("sig")
    if signature is None:
        return await CONTENT.serve(request)
    ctx: ServiceContext = request.app.state.ctx
    try:
        check_params(request)
        info, data = await files.read_public_file(ctx, request.path_params["id"], signature)
    except H0pError as exc:  # NotFound, or StorageUnavailable (503) when the object store is down
        return error_response(exc)
    # The id's bytes never change (a new upload is a new id): cacheable by anyone, forever.
    return _content_response(request, info, data, "public, max-age=31536000, immutable")


_FILE_JSON = {"application/json": {"schema": {"$ref": "#/components/schemas/File"}}}
_IMAGE = {"schema": {"type": "string", "format": "binary"}}

UPLOAD = RawEndpoint(
    "POST", "/files", upload, "Upload an image", "Files", "uploadFile", scope="files:write",
    success={"201": {"description": "Created", "content": _FILE_JSON}},
    description="PNG, JPEG, WebP or GIF, decoded to prove it is one (the declared type is not trusted), at most "
    "`H0P_FILE_MAX_BYTES` (5 MiB by default) and 25 megapixels; re-encoded without metadata (EXIF orientation "
    "applied; animations keep their first frame). SVG is refused. Counts against the workspace's storage quota "
    "(403 PLAN_LIMIT_REACHED). 503 STORAGE_UNAVAILABLE (nothing stored) if the file storage cannot be reached.",
    errors=(400, 401, 403, 429, 500, 503),
    request_body={
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["file"], "properties": {"file": _IMAGE["schema"]}}
            }
        },
    },
)  # fmt: skip
CONTENT = RawEndpoint(
    "GET", "/files/{id}/content", content, "Get a file's bytes", "Files", "getFileContent", scope="files:read",
    success={
        "200": {"description": "The image", "content": {t: _IMAGE for t in ("image/png", "image/jpeg", "image/webp",
                                                                          "image/gif")}},
        "304": {"description": "Not modified (If-None-Match)"},
    },
    errors=(400, 401, 403, 404, 429, 500, 503),
    parameters=[{
        "name": "sig", "in": "query", "required": False, "schema": {"type": "string"},
        "description": "The signature in the file's public `url`: with it no API key is needed.",
    }],
    description="With an API key of the file's workspace, or without one through the file's public `url` "
    "(`?sig=`). `ETag` is the sha256 of the bytes.",
)  # fmt: skip

ROUTES = [UPLOAD.route(), CONTENT.route(serve_content)]
OPENAPI_PATHS = openapi_paths([UPLOAD, CONTENT])
