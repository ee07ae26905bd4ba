"""Fixtures of the webhook tests: settings for loopback receivers, the API, a receiver, a delivery process."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
import pytest
from starlette.applications import Starlette

from api.app import create_app
from api.services.context import ServiceContext, close_context, open_context
from api.services.keys import create_key
from api.services.workspaces import Workspace, get_or_create_workspace
from h0p_settings import Settings
from tests.api.conftest import client_for, dns_server, running
from tests.api.dns_server import LoopbackDns
from tests.webhooks.receiver import Receiver
from webhooks.dispatcher import Dispatcher
from webhooks.outbound import delivery_session

RETRY_SCHEDULE_S = (0.2, 0.2, 0.3, 0.3, 0.5, 0.5, 1.0)


__all__ = ["dns_server"]  # the API tests' loopback DNS server, for domain verification


@pytest.fixture(scope="session")
def wh_settings(settings: Settings, dns_server: LoopbackDns) -> Settings:
    """Loopback receivers allowed, a short retry schedule, rate limits off, DNS from the loopback server."""
    return dataclasses.replace(
        settings,
        dns_resolver=dns_server.address,
        allow_private_targets=True,
        rate_limits_enabled=False,
        webhook_retry_schedule_s=RETRY_SCHEDULE_S,
        webhook_timeout_s=3.0,
        webhook_metrics_port=0,
    )


@pytest.fixture(scope="session")
async def wh_ctx(wh_settings: Settings) -> AsyncIterator[ServiceContext]:
    c = await open_context(wh_settings)
    yield c
    await close_context(c)


@pytest.fixture(scope="session")
async def wh_app(wh_settings: Settings) -> AsyncIterator[Starlette]:
    async with running(create_app(wh_settings)) as app:
        yield app


@pytest.fixture
async def workspace(wh_ctx: ServiceContext) -> Workspace:
    import uuid

    return await get_or_create_workspace(wh_ctx, f"wh-{uuid.uuid4().hex[:10]}")


@pytest.fixture
async def api(wh_app: Starlette, wh_ctx: ServiceContext, workspace: Workspace) -> AsyncIterator[httpx.AsyncClient]:
    _, secret = await create_key(wh_ctx, workspace.id, "test", None)
    async with client_for(wh_app, secret) as client:
        yield client


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver().running() as r:
        yield r


@asynccontextmanager
async def dispatching(settings: Settings) -> AsyncIterator[Dispatcher]:
    """A delivery process (the real Dispatcher) in this event loop for the body of the ``async with``."""
    ctx = await open_context(settings, pool_size=4)
    stop = asyncio.Event()
    try:
        async with delivery_session(settings, settings.webhook_concurrency) as session:
            dispatcher = Dispatcher(ctx, session)
            task = asyncio.create_task(dispatcher.run(stop))
            try:
                yield dispatcher
            finally:
                stop.set()
                await asyncio.wait_for(task, 30)
    finally:
        await close_context(ctx)


@pytest.fixture
async def dispatcher(wh_settings: Settings) -> AsyncIterator[Dispatcher]:
    async with dispatching(wh_settings) as d:
        yield d


CreateHook = Callable[..., object]


async def create_webhook(api: httpx.AsyncClient, receiver: Receiver, name: str, **fields: object) -> dict[str, object]:
    """POST /webhooks to the receiver's endpoint ``name``; the receiver learns the secret."""
    body = {"url": receiver.url(name), "events": ["link.created", "link.updated", "link.deleted"], **fields}
    answer = await api.post("/webhooks", json=body)
    assert answer.status_code == 201, answer.text
    hook: dict[str, object] = answer.json()
    receiver.endpoint(name).secrets.append(str(hook["secret"]))
    return hook
