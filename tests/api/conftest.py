"""Fixtures of the API tests: a service context on the session's database and Redis, fresh workspaces."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx
import pytest
import redis.asyncio as aioredis
from starlette.applications import Starlette

from api.app import create_app
from api.services.context import ServiceContext, close_context, open_context
from api.services.keys import create_key
from api.services.workspaces import Workspace, get_or_create_workspace
from h0p_settings import Settings
from tests.api.dns_server import LoopbackDns
from tests.moto_server import MotoServer

_names = itertools.count()


@pytest.fixture(scope="session")
async def ctx(settings: Settings) -> AsyncIterator[ServiceContext]:
    c = await open_context(settings)
    yield c
    await close_context(c)


@pytest.fixture
async def workspace(ctx: ServiceContext) -> Workspace:
    """A new, empty workspace on the default (self-hosted) plan for each test."""
    return await get_or_create_workspace(ctx, f"test-{os.getpid()}-{next(_names)}")


@pytest.fixture(scope="session")
def dns_server() -> Iterator[LoopbackDns]:
    """A real DNS server on loopback; tests publish TXT records in ``dns_server.zone.records``."""
    server = LoopbackDns().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """A real S3-protocol server (moto) on loopback, for the files on object storage."""
    server = MotoServer().start()
    yield server
    server.stop()


def s3_settings(settings: Settings, moto: MotoServer, bucket: str | None = None) -> Settings:
    """``settings`` with the uploaded files in a new bucket (or ``bucket``) of ``moto``, under the prefix ``files``."""
    return dataclasses.replace(
        settings,
        files_url=f"s3://{bucket or moto.new_bucket()}/files",
        s3_endpoint_url=moto.endpoint,
        s3_region="us-east-1",
        s3_access_key_id="test-key-id",
        s3_secret_access_key="test-secret-access-key",
        s3_timeout_s=5.0,
    )


@pytest.fixture(scope="session")
def api_settings(settings: Settings, dns_server: LoopbackDns) -> Settings:
    """The API's settings in route tests: rate limits off (their own tests turn them on), loopback DNS."""
    return dataclasses.replace(settings, rate_limits_enabled=False, dns_resolver=dns_server.address)


@asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[Starlette]:
    """Run ``app``'s lifespan in a task of its own: entered and exited there, whichever task tears down.

    (pytest-asyncio finalises async fixtures in another task, and anyio task groups in the
    lifespan, such as MCP's session manager, must be exited in the task that entered them.)
    """
    started, stop = asyncio.Event(), asyncio.Event()

    async def lifespan() -> None:
        async with app.router.lifespan_context(app):
            started.set()
            await stop.wait()

    task = asyncio.create_task(lifespan())
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiter.cancel()
        task.result()  # start-up failed: raise its error
    try:
        yield app
    finally:
        stop.set()
        await task


@pytest.fixture(scope="session")
async def api_app(api_settings: Settings) -> AsyncIterator[Starlette]:
    async with running(create_app(api_settings)) as app:
        yield app


def client_for(app: Starlette, secret: str | None) -> httpx.AsyncClient:
    """An HTTP client calling ``app`` in-process with ``secret`` as x-api-key."""
    headers = {"x-api-key": secret} if secret else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test", headers=headers)


@pytest.fixture
async def api(api_app: Starlette, ctx: ServiceContext, workspace: Workspace) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the API with an all-scopes key of a fresh workspace."""
    _, secret = await create_key(ctx, workspace.id, "test", None)
    async with client_for(api_app, secret) as client:
        yield client


async def raw(client: aioredis.Redis, key: str) -> bytes:
    """The bytes stored at ``key`` (the test fails if there are none)."""
    value = await client.get(key)
    assert isinstance(value, bytes), f"nothing at {key}"
    return value
