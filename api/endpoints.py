"""Declaring an API route once: the handler, its scope, its input and output types.

Each route module lists ``ENDPOINTS: list[Endpoint]``. ``api.app`` turns them into Starlette
routes (``Endpoint.route``) and ``api.openapi`` into the OpenAPI document, so what is served
and what is documented cannot drift apart. The wrapper does, in order: authenticate, rate
limit, check the scope, decode path, query and body (400 with field paths), call the handler,
encode the result; any ``H0pError`` becomes the error body from ``api.errors``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from api import ratelimit
from api.auth import authenticate_request, client_address, require_scope
from api.errors import H0pError, InternalError, NotFound, RateLimited, Unauthorized, error_body, from_msgspec
from api.errors import ValidationFailed as ValidationFailed
from api.services.context import ServiceContext
from api.services.keys import Principal

log = logging.getLogger("h0p.api")
MAX_BODY_BYTES = 4 * 1024 * 1024  # a bulk request of 100 links with long rules fits
_PATH_PARAM = re.compile(r"{(\w+)}")
_encoder = msgspec.json.Encoder()
JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Call:
    """What a handler receives: the services' context, the caller, and the decoded input."""

    ctx: ServiceContext
    principal: Principal
    path: dict[str, str]
    query: Any
    body: Any
    request: Request


@dataclass(frozen=True, slots=True)
class Reply:
    """A handler result with a status other than the endpoint's default (e.g. upsert's 201 vs 200)."""

    status: int
    body: object


Handler = Callable[[Call], Awaitable[object]]


@dataclass(frozen=True)
class Endpoint:
    """One route: documented from these fields, served by ``route()``."""

    method: str
    path: str  # Starlette and OpenAPI syntax alike: /links/{id}
    handler: Handler
    summary: str
    tag: str
    scope: str | None = None  # required key scope; None = any valid key
    body: Any = None  # msgspec type the JSON body is decoded to
    query: type[msgspec.Struct] | None = None  # msgspec Struct of the query string
    response: Any = None  # msgspec type of the success body
    response_variants: tuple[type, ...] = ()  # documented as an array of oneOf these (bulk)
    status: int = 200
    other_statuses: tuple[int, ...] = ()  # e.g. 201 for an upsert that creates
    errors: tuple[int, ...] = ()  # error statuses beyond the ones implied (400/401/403/404/429/500)
    description: str = ""
    example: object = None  # a request body example
    operation_id: str = ""
    path_params: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path_params", tuple(_PATH_PARAM.findall(self.path)))

    def route(self) -> Route:
        """The Starlette route serving this endpoint."""

        async def serve(request: Request) -> Response:
            return await _serve(self, request)

        return Route(self.path, serve, methods=[self.method], name=self.operation_id or None)


def json_response(status: int, body: object, headers: dict[str, str] | None = None) -> Response:
    return Response(_encoder.encode(body), status_code=status, headers=headers, media_type=JSON)


def error_response(exc: H0pError, headers: dict[str, str] | None = None) -> Response:
    """The JSON error response for ``exc`` (the only place errors are shaped)."""
    status, body = error_body(exc)
    if isinstance(exc, RateLimited):
        headers = {**(headers or {}), **exc.headers}
    return json_response(status, body, headers)


async def _read_body(request: Request, kind: Any) -> Any:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != JSON:
        raise ValidationFailed([{"path": "body", "message": "the body must be JSON (Content-Type: application/json)"}])
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
        raise ValidationFailed([{"path": "body", "message": f"the body is larger than {MAX_BODY_BYTES} bytes"}])
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ValidationFailed([{"path": "body", "message": f"the body is larger than {MAX_BODY_BYTES} bytes"}])
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        value = msgspec.json.decode(raw, type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise from_msgspec(exc) from None
    if b"\\u0000" in raw:  # Postgres text cannot hold NUL: find the field and refuse it
        _refuse_nul(msgspec.json.decode(raw), "")
    return value


def _refuse_nul(node: Any, path: str) -> None:
    if isinstance(node, str) and "\x00" in node:
        raise ValidationFailed([{"path": path or "body", "message": "text must not contain NUL characters"}])
    if isinstance(node, list):
        for i, item in enumerate(node):
            _refuse_nul(item, f"{path}[{i}]")
    elif isinstance(node, dict):
        for key, item in node.items():
            _refuse_nul(key, path)
            _refuse_nul(item, f"{path}.{key}" if path else key)


def query_params(request: Request) -> dict[str, str]:
    """The query string as a dict: 400 naming a parameter given twice or holding a NUL (Postgres text cannot)."""
    seen: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if "\x00" in name or "\x00" in value:
            raise ValidationFailed([{"path": name, "message": "text must not contain NUL characters"}])
        if name in seen:  # `interval=7d&interval=30d` has no single meaning: refuse it rather than pick one
            raise ValidationFailed([{"path": name, "message": f"{name} is given more than once"}])
        seen[name] = value
    return seen


def read_query(request: Request, kind: type[msgspec.Struct] | None) -> Any:
    """The query string decoded into ``kind`` (400 with the parameter as path), as every JSON route reads it."""
    if kind is None:
        if request.query_params:
            names = sorted(set(request.query_params.keys()))
            raise ValidationFailed([{"path": n, "message": "this route takes no query parameters"} for n in names])
        return None
    params = query_params(request)
    try:
        query = msgspec.convert(params, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise from_msgspec(exc) from None
    for f in msgspec.structs.fields(kind):
        # lax conversion reads the text `null` as None; a parameter that is given must have a value
        if f.encode_name in params and getattr(query, f.name) is None:
            raise ValidationFailed([{"path": f.encode_name, "message": f"{params[f.encode_name]!r} is not a value"}])
    return query


async def admit(ctx: ServiceContext, request: Request, scope: str | None, headers: dict[str, str]) -> Principal:
    """The gate of every route: authenticate, charge the rate limit, check the scope (None: any key).

    ``headers`` receives the rate-limit headers as soon as they are known, so that the
    caller's answer (an error included) carries them.
    """
    try:
        principal = await authenticate_request(ctx, request)
    except Unauthorized:
        state = await ratelimit.charge_anonymous(ctx, client_address(request, ctx.settings))
        headers.update(state.headers() if state else {})
        raise
    state = await ratelimit.charge(ctx, principal)
    headers.update(state.headers() if state else {})
    require_scope(principal, scope)
    return principal


async def _serve(endpoint: Endpoint, request: Request) -> Response:
    ctx: ServiceContext = request.app.state.ctx
    headers: dict[str, str] = {}
    try:
        principal = await admit(ctx, request, endpoint.scope, headers)
        path = {name: str(request.path_params[name]) for name in endpoint.path_params}
        if any(len(v) > 100 or "\x00" in v for v in path.values()):
            raise NotFound()
        query = read_query(request, endpoint.query)
        body = await _read_body(request, endpoint.body) if endpoint.body is not None else None
        result = await endpoint.handler(Call(ctx, principal, path, query, body, request))
    except H0pError as exc:
        return error_response(exc, headers)
    except ClientDisconnect:  # the client left mid-body: nobody to answer, nothing went wrong here
        return Response(status_code=400)
    except Exception:
        log.exception("unhandled error in %s %s", endpoint.method, endpoint.path)
        return error_response(InternalError(), headers)
    if isinstance(result, Reply):
        return json_response(result.status, result.body, headers)
    return json_response(endpoint.status, result, headers)
