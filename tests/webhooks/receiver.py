"""A real webhook receiver on loopback: verifies every delivery with ``standardwebhooks`` (the spec's library)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.services import free_port


@dataclass
class Received:
    webhook_id: str
    headers: dict[str, str]
    body: bytes
    payload: Any


@dataclass
class Endpoint:
    """One path of the receiver: the secrets it verifies with and how it answers."""

    secrets: list[str] = field(default_factory=list)
    status: int = 200
    delay_s: float = 0.0
    hold: asyncio.Event | None = None  # when set, a request waits until the event is set
    held_status: int | None = None  # if set, a request that was held answers this and is not recorded
    received: list[Received] = field(default_factory=list)  # verified deliveries, in arrival order
    rejected: list[str] = field(default_factory=list)  # verification failures
    refused: set[str] = field(default_factory=set)  # webhook-ids answered with ``status`` >= 300
    arrivals: int = 0  # requests that reached this endpoint, verified or not
    entered: asyncio.Event = field(default_factory=asyncio.Event)  # a request arrived (for hold)

    def ids(self) -> set[str]:
        return {r.webhook_id for r in self.received}

    def types(self) -> list[str]:
        return [r.payload["type"] for r in self.received]


class Receiver:
    """``/{name}`` endpoints served by uvicorn on 127.0.0.1 in the test's event loop."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoints: dict[str, Endpoint] = {}

    def url(self, name: str, host: str = "127.0.0.1") -> str:
        self.endpoints.setdefault(name, Endpoint())
        return f"http://{host}:{self.port}/{name}"

    def endpoint(self, name: str) -> Endpoint:
        return self.endpoints.setdefault(name, Endpoint())

    async def _handle(self, request: Request) -> Response:
        ep = self.endpoint(request.path_params["name"])
        ep.arrivals += 1
        ep.entered.set()
        body = await request.body()
        headers = dict(request.headers)
        if ep.hold is not None:
            await ep.hold.wait()
            if ep.held_status is not None:
                return Response("dropped", status_code=ep.held_status)
        if ep.delay_s:
            await asyncio.sleep(ep.delay_s)
        if ep.status >= 300:
            ep.refused.add(headers.get("webhook-id", ""))
            return Response(f"status {ep.status}", status_code=ep.status)
        payload = None
        for secret in ep.secrets:
            try:
                payload = Webhook(secret).verify(body, headers)
                break
            except WebhookVerificationError:
                continue
        if payload is None:
            ep.rejected.append(headers.get("webhook-id", ""))
            return Response("bad signature", status_code=400)
        ep.received.append(Received(headers["webhook-id"], headers, body, payload))
        return Response("ok")

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Receiver]:
        app = Starlette(routes=[Route("/{name}", self._handle, methods=["POST"])])
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error", lifespan="off")
        )
        task = asyncio.create_task(server.serve())
        await wait_until(lambda: server.started, 10.0, "the receiver to listen")
        try:
            yield self
        finally:
            for ep in self.endpoints.values():
                if ep.hold is not None:
                    ep.hold.set()
            server.should_exit = True
            await task


async def wait_until(check: Any, timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``check()`` (sync or async) until it is truthy (no timed assertion: the timeout only ends a hang)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (await result if inspect.isawaitable(result := check()) else result):
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
