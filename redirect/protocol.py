"""uvicorn's httptools protocol that answers GET and HEAD itself, without an ASGI task.

Through ASGI, every request costs uvicorn a scope, a request-response cycle, an event, an
asyncio task and two ``send`` coroutines: about three quarters of the edge's time per
redirect. A GET or HEAD needs none of that: this protocol hands it to ``EdgeHandler.respond``
from the parser's callback and writes the reply itself, at once when the link is in the
in-process cache, or when the handler's shared Redis lookup calls back (meanwhile a pipelined
request waits its turn behind it, as behind any request in progress). The rest (a POST, a
request with a body, one pipelined behind a request in progress, a paused transport, the edge's
own endpoints) goes through uvicorn's own path unchanged. Replies on keep-alive connections are
written together once per loop pass (``_Outbox``): fewer wake-ups of the clients.

This subclass reaches into uvicorn's protocol (its parser callbacks, cycle, pipeline and
keep-alive timer) only through ``redirect.uvicorn_internals``, which lists each private name used
here and checks them at import (the edge refuses to start on a uvicorn without them; why a
subclass rather than a protocol of our own is said there). tests/redirect/test_protocol.py and
tests/redirect/test_uvicorn_contract.py check the behaviour over real sockets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, ClassVar

import httptools

from redirect import pages
from redirect.edge import RESERVED, EdgeHandler, Reply, page_reply
from redirect.uvicorn_internals import STATUS_LINE, Config, HttpToolsProtocol, ServerState

log = logging.getLogger("h0p.redirect")

_OWN_PATHS = frozenset(path.encode() for path in RESERVED)


class _NoEvent:
    def set(self) -> None:
        pass


class _Answering:
    """Stands in for uvicorn's request cycle while a reply is looked up.

    uvicorn queues a pipelined request behind it (it is not ``response_complete``), its
    shutdown clears ``keep_alive``, and a lost connection sets ``disconnected``.
    """

    __slots__ = ("disconnected", "head", "keep_alive", "response_complete")
    message_event = _NoEvent()

    def __init__(self, head: bool, keep_alive: bool) -> None:
        self.head = head
        self.keep_alive = keep_alive
        self.response_complete = False
        self.disconnected = False


class EdgeProtocol(HttpToolsProtocol):
    """One connection; ``handler`` is set on the subclass made by ``protocol_for``."""

    handler: ClassVar[EdgeHandler]
    outbox: ClassVar[_Outbox]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.respond = self.handler.respond
        self.peer = ""
        self.active_at = 0.0  # loop time of the last read or response (keep-alive timeout)
        self.deferred = False  # the request waits for on_message_complete to be answered here
        self.answering: _Answering | None = None  # a reply being looked up

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
            (method == b"GET" or method == b"HEAD")
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
        try:
            url = httptools.parse_url(self.url)
        except httptools.HttpParserInvalidURLError:
            url = None  # uvicorn's path raises the same error and answers 400
        if url is None or url.path in _OWN_PATHS:
            self._start_asgi()
            super().on_message_complete()
            return
        method = self.parser.get_method().decode("ascii")
        head = method == "HEAD"
        parser = self.parser
        keep_alive = parser.should_keep_alive() and parser.get_http_version() != "1.0"
        answer = self.respond(method, url.path, url.query or b"", self.headers, self.peer, self._reply_later)
        if type(answer) is tuple:
            self._write(answer, head, keep_alive)
            return
        # Later: a pipelined request queues behind this one in uvicorn's pipeline meanwhile.
        self.answering = self.cycle = _Answering(head, keep_alive)  # type: ignore[assignment]
        if answer is not None:
            self._reply_later(answer)

    def _reply_later(self, answer: Reply | Coroutine[Any, Any, Reply]) -> None:
        if type(answer) is tuple:
            self._write_answer(answer)
            return
        task = self.loop.create_task(self._await_answer(answer))  # type: ignore[arg-type]
        self.tasks.add(task)  # uvicorn's shutdown waits for these
        task.add_done_callback(self.tasks.discard)

    async def _await_answer(self, answer: Coroutine[Any, Any, Reply]) -> None:
        try:
            reply = await answer
        except Exception:
            log.exception("answering a request failed")
            reply = page_reply(500, pages.UNAVAILABLE)
        self._write_answer(reply)

    def _write_answer(self, reply: Reply) -> None:
        answering, self.answering = self.answering, None
        if answering is None:
            return
        answering.response_complete = True
        if self.transport.is_closing():
            return  # the client left; its click was counted when the link was answered
        self._write(reply, answering.head, answering.keep_alive)

    def _start_asgi(self) -> None:
        self.deferred = False
        super().on_headers_complete()

    def _write(self, reply: Reply, head: bool, keep_alive: bool) -> None:
        status, headers, body = reply
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
        if keep_alive:
            self.outbox.hold(self.loop, self.transport, b"".join(out))
            self.on_response_complete()  # counts the request, makes sure the keep-alive timer runs
        else:
            self.outbox.send()  # a reply held for this connection goes before this last one
            self.transport.write(b"".join(out))
            self.server_state.total_requests += 1
            self.transport.close()

    # uvicorn writes and closes at once in these two: the replies held go first
    def shutdown(self) -> None:
        self.outbox.send()
        super().shutdown()

    def send_400_response(self, msg: str) -> None:
        self.outbox.send()
        super().send_400_response(msg)


class _Outbox:
    """Replies held until the loop has read every socket that was ready, then written together.

    Each write to a client wakes its reader; written one by one, between the parsing of the
    next requests, every reply costs a wake-up (measured under the edge bench: the largest
    kernel cost per request). Written in one burst, most find the reader awake. Order per
    connection is kept: replies are written in the order they were held, and uvicorn's own
    path writes from tasks, which start after the flush scheduled before them.
    """

    def __init__(self) -> None:
        self.held: list[tuple[asyncio.Transport, bytes]] = []

    def hold(self, loop: asyncio.AbstractEventLoop, transport: asyncio.Transport, data: bytes) -> None:
        if not self.held:
            loop.call_soon(self.send)
        self.held.append((transport, data))

    def send(self) -> None:
        held, self.held = self.held, []
        for transport, data in held:
            if not transport.is_closing():
                transport.write(data)


def protocol_for(handler: EdgeHandler) -> type[EdgeProtocol]:
    """The protocol class uvicorn instantiates per connection, bound to ``handler``."""
    return type("BoundEdgeProtocol", (EdgeProtocol,), {"handler": handler, "outbox": _Outbox()})
