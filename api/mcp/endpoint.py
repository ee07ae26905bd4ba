"""``/mcp`` on the API process: the Streamable HTTP transport behind the API's own key check.

Every HTTP request is authenticated and charged to the rate limit before the MCP SDK sees it,
exactly as a route does it (``api.auth.authenticate_request``, ``api.ratelimit.charge``; without
a valid key the request is counted against the client address and answered 401 with the API's
error body). So every message costs one request, ``initialize``, ``tools/list`` and
notifications included (429 with the API's error body over the limit): a client cannot spin
the handshake for free. A refused ``tools/call`` is answered instead as the tool error an
agent can read (``RATE_LIMITED`` with ``retryAfter``), as over stdio, rather than as an HTTP
status its SDK reports as a bare failure. Each POST carries one JSON-RPC message (the SDK
accepts no batches), so nothing is charged twice. The service context is the
app's (``request.app.state.ctx``, as for the routes) and rides with the principal in the
ASGI scope to the tool call. The transport is stateless with JSON responses: no session
lives in one process, so any API replica behind a load balancer can answer any request,
and a revoked key stops working on its very next request.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from mcp.server import ServerRequestContext
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from api import auth, ratelimit
from api.errors import H0pError, RateLimited, Unauthorized, ValidationFailed, error_body
from api.mcp.server import build_server, error_result
from api.services.context import ServiceContext
from api.services.keys import Principal

CALLER_SCOPE_KEY = "h0p.mcp.caller"
_TOOL_CALL = "tools/call"
MAX_BODY_BYTES = 4 * 1024 * 1024  # the routes' limit: a bulk of 100 links with long rules fits


# The SDK's transport logger, whose per-request chatter is tuned down by ``_TransportLogFilter``.
_SDK_LOG = logging.getLogger("mcp.server.streamable_http")
log = logging.getLogger("h0p.mcp")


class _TransportLogFilter(logging.Filter):
    """What the SDK logs per request, at the level an operator needs it.

    Stateless, every request ends its one-request "session": the SDK says "Terminating session:
    None" at INFO each time; that is DEBUG. A client that goes away mid-request (a closed laptop,
    a cancelled call) makes it log ERROR with a traceback; nothing failed on the server, so that
    is one DEBUG line too. Everything else passes untouched.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and str(record.msg).startswith("Terminating session:"):
            return self._demote(record, record.getMessage())
        if record.exc_info and isinstance(record.exc_info[1], ClientDisconnect):
            return self._demote(record, "MCP client disconnected before its request was answered")
        return True

    @staticmethod
    def _demote(record: logging.LogRecord, message: str) -> bool:
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        record.msg, record.args, record.exc_info, record.exc_text = message, None, None, None
        return _SDK_LOG.isEnabledFor(logging.DEBUG)


_TRANSPORT_LOG_FILTER = _TransportLogFilter()


async def _caller_of_request(rctx: ServerRequestContext[Any, Any]) -> tuple[ServiceContext, Principal]:
    caller = None if rctx.request is None else rctx.request.scope.get(CALLER_SCOPE_KEY)
    if caller is None:  # only reachable if the SDK app were mounted without this endpoint's gate
        raise Unauthorized()
    ctx, principal = caller
    return ctx, principal


class _Message(msgspec.Struct):
    # Only what the gate needs; every other field of the JSON-RPC message is skipped, not decoded.
    method: str = ""
    id: int | str | None = None


async def _read_body(receive: Receive) -> bytes:
    """The whole request body; ClientDisconnect if the client left, ValidationFailed past MAX_BODY_BYTES."""
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ValidationFailed([{"path": None, "message": f"the body is larger than {MAX_BODY_BYTES} bytes"}])
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the SDK the body already read, then the client's next events."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


def _tool_error(exc: H0pError) -> dict[str, Any]:
    result: dict[str, Any] = error_result(exc).model_dump(by_alias=True, mode="json", exclude_none=True)
    return result


class McpEndpoint:
    """The ASGI app to route at ``/mcp``, and ``run()``, the lifespan hook it needs."""

    def __init__(self, version: str | None = None) -> None:
        _SDK_LOG.addFilter(_TRANSPORT_LOG_FILTER)  # the same object each time: added once
        # Every request is charged here, before the SDK parses it: the server must not charge again.
        self.server = build_server(_caller_of_request, version, charge_messages=False)
        self._manager = StreamableHTTPSessionManager(
            app=self.server,
            json_response=True,
            stateless=True,
            # No cookie or ambient credential authenticates here (the key is a header a rebound
            # page cannot know), so Host/Origin pinning would only break deployments on other names.
            security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
            max_request_body_size=MAX_BODY_BYTES,
        )

    @contextlib.asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        """Enter once in the app's lifespan: it owns the SDK's task group (requests fail outside it)."""
        async with self._manager.run():
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # pragma: no cover - Starlette routes only HTTP here
            return
        request = Request(scope)
        ctx: ServiceContext = request.app.state.ctx
        try:
            try:
                principal = await auth.authenticate_request(ctx, request)
            except Unauthorized:
                # As on the routes: requests without a valid key are counted per client address,
                # which slows down key guessing; over that limit the answer is 429, not 401.
                await ratelimit.charge_anonymous(ctx, auth.client_address(request, ctx.settings))
                raise
            message = _Message()
            if scope["method"] == "POST":  # read after the key check, as the routes do
                raw = await _read_body(receive)
                receive = _replaying(raw, receive)
                try:
                    message = msgspec.json.decode(raw, type=_Message)
                except (msgspec.ValidationError, msgspec.DecodeError):
                    pass  # not a JSON-RPC object: charged all the same, and the SDK answers the parse error
            state = await ratelimit.charge(ctx, principal)
        except ClientDisconnect:  # nobody left to answer; nothing failed here
            log.debug("MCP client disconnected before its request was answered")
            return
        except RateLimited as exc:
            if message.method == _TOOL_CALL and message.id is not None:
                answer = {"jsonrpc": "2.0", "id": message.id, "result": _tool_error(exc)}
                response = Response(msgspec.json.encode(answer), 200, exc.headers, media_type="application/json")
            else:
                _, body = error_body(exc)
                response = Response(msgspec.json.encode(body), 429, exc.headers, media_type="application/json")
            await response(scope, receive, send)
            return
        except H0pError as exc:
            status, body = error_body(exc)
            headers = exc.headers if isinstance(exc, RateLimited) else None
            response = Response(msgspec.json.encode(body), status, headers, media_type="application/json")
            await response(scope, receive, send)
            return
        scope[CALLER_SCOPE_KEY] = (ctx, principal)
        if state is None:
            await self._manager.handle_request(scope, receive, send)
            return
        extra = [(name.lower().encode(), value.encode()) for name, value in state.headers().items()]

        async def send_with_limits(message: Message) -> None:
            # The SDK's answer carries the X-RateLimit-* headers a route's answer carries.
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self._manager.handle_request(scope, receive, send_with_limits)
