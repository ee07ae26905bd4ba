"""uvicorn's httptools protocol with a synchronous first try for GET and HEAD.

Through ASGI, every request costs uvicorn a scope, a request-response cycle, an event, an
asyncio task and two ``send`` coroutines: about three quarters of the edge's time per
redirect. Most redirects need none of that: the link is in the in-process cache and the reply
is known as soon as the request is parsed. For those, this protocol calls
``EdgeHandler.answer_now`` from the parser's callback and writes the reply itself. Everything
else (a cache miss, a POST, a request with a body, a pipelined request behind one still in
progress, a paused transport) goes through uvicorn's own path unchanged.

This subclass reaches into uvicorn's protocol (its parser callbacks, cycle, pipeline and
keep-alive timer): it is written against the uvicorn version pinned in pyproject.toml, and
tests/redirect/test_protocol.py checks it over real sockets.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from redirect.edge import EdgeHandler, Reply


class EdgeProtocol(HttpToolsProtocol):
    """One connection; ``handler`` is set on the subclass made by ``protocol_for``."""

    handler: ClassVar[EdgeHandler]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.answer_now = self.handler.answer_now
        self.fast = self.handler.cache.size > 0  # without an in-process cache nothing is answered now
        self.peer = ""
        self.active_at = 0.0  # loop time of the last read or response (keep-alive timeout)
        self.deferred = False  # the request waits for on_message_complete to be answered here

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.peer = self.client[0] if self.client else ""
        self.active_at = self.loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        super().connection_lost(exc)

    # Keep-alive timeout. uvicorn cancels its timer on every read and arms a new one after every
    # response: two timer operations per request. Here the timer stays armed and checks, when it
    # fires, whether the connection was active since; if so it is armed again for the rest.

    def data_received(self, data: bytes) -> None:
        self.active_at = self.loop.time()
        super().data_received(data)

    def _unset_keepalive_if_required(self) -> None:
        pass  # the timer stays armed (see timeout_keep_alive_handler)

    def on_response_complete(self) -> None:
        # uvicorn's, but the timer is armed only when none is
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.active_at = self.loop.time()
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif self.timeout_keep_alive_task is None:
            self._arm_keep_alive(self.timeout_keep_alive)

    def timeout_keep_alive_handler(self) -> None:
        self.timeout_keep_alive_task = None
        if self.deferred or (self.cycle is not None and not self.cycle.response_complete):
            return  # a request in progress: its on_response_complete arms the timer again
        idle = self.loop.time() - self.active_at
        if idle < self.timeout_keep_alive:
            self._arm_keep_alive(self.timeout_keep_alive - idle)
        else:
            super().timeout_keep_alive_handler()

    def _arm_keep_alive(self, delay: float) -> None:
        self.timeout_keep_alive_task = self.loop.call_later(delay, self.timeout_keep_alive_handler)

    def on_headers_complete(self) -> None:
        method = self.parser.get_method()
        if (
            self.fast
            and (method == b"GET" or method == b"HEAD")
            and (self.cycle is None or self.cycle.response_complete)  # in order behind a pipelined request
            and not self.expect_100_continue
            and not self.flow.write_paused
            and self.limit_concurrency is None
            and not self.parser.should_upgrade()
        ):
            self.deferred = True
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self.deferred:  # a GET with a body: uvicorn's path, as if it had never been deferred
            self._start_asgi()
        super().on_body(body)

    def on_message_complete(self) -> None:
        if not self.deferred:
            super().on_message_complete()
            return
        self.deferred = False
        method = self.parser.get_method().decode("ascii")
        try:
            url = httptools.parse_url(self.url)
        except httptools.HttpParserInvalidURLError:
            reply = None  # uvicorn's path raises the same error and answers 400
        else:
            reply = self.answer_now(method, url.path, url.query or b"", self.headers, self.peer)
        if reply is None:
            self._start_asgi()
            super().on_message_complete()
            return
        self._write(reply, method == "HEAD")

    def _start_asgi(self) -> None:
        self.deferred = False
        super().on_headers_complete()

    def _write(self, reply: Reply, head: bool) -> None:
        status, headers, body = reply
        parser = self.parser
        keep_alive = parser.should_keep_alive() and parser.get_http_version() != "1.0"
        out = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:  # date (and server, if configured)
            out += (name, b": ", value, b"\r\n")
        for name, value in headers:
            out += (name, b": ", value, b"\r\n")
        if not keep_alive:
            out.append(b"connection: close\r\n")
        out.append(b"\r\n")
        if body and not head:
            out.append(body)
        self.transport.write(b"".join(out))
        if keep_alive:
            self.on_response_complete()  # counts the request, makes sure the keep-alive timer runs
        else:
            self.server_state.total_requests += 1
            self.transport.close()


def protocol_for(handler: EdgeHandler) -> type[EdgeProtocol]:
    """The protocol class uvicorn instantiates per connection, bound to ``handler``."""
    return type("BoundEdgeProtocol", (EdgeProtocol,), {"handler": handler})
