"""Rate limits per key in Redis: exact counts under concurrency, headers, several app instances."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
import pytest
from starlette.applications import Starlette

from api.app import create_app
from api.services.context import ServiceContext
from api.services.keys import create_key
from api.services.workspaces import Workspace, set_plan
from h0p_settings import Settings
from tests.api.conftest import client_for, running

AppFactory = Callable[..., AbstractAsyncContextManager[Starlette]]


@pytest.fixture
def limited_app(api_settings: Settings) -> AppFactory:
    @asynccontextmanager
    async def make(per_second: int = 1000, per_minute: int = 100_000) -> AsyncIterator[Starlette]:
        s = dataclasses.replace(
            api_settings, rate_limits_enabled=True, rate_limit_per_second=per_second, rate_limit_per_minute=per_minute
        )
        async with running(create_app(s)) as app:
            yield app

    return make


async def at_window_start(period: float, margin: float) -> None:
    """Wait until the current window has at least ``margin`` seconds left, so a burst fits in one."""
    left = period - time.time() % period
    if left < margin:
        await asyncio.sleep(left + 0.02)


async def burst(client: httpx.AsyncClient, n: int) -> list[httpx.Response]:
    return list(await asyncio.gather(*(client.get("/workspace") for _ in range(n))))


async def test_concurrent_requests_get_exactly_the_minute_limit(
    limited_app: AppFactory, ctx: ServiceContext, workspace: Workspace
) -> None:
    _, secret = await create_key(ctx, workspace.id, "rl", None)
    async with limited_app(per_minute=10) as app, client_for(app, secret) as client:
        await at_window_start(60, 10)
        responses = await burst(client, 15)
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert (len(ok), len(refused)) == (10, 5)
    assert sorted(int(r.headers["x-ratelimit-remaining"]) for r in ok) == list(range(10))
    assert {r.headers["x-ratelimit-limit"] for r in responses} == {"10"}
    reset = (int(time.time()) // 60 + 1) * 60
    for r in refused:
        assert r.json()["error"]["code"] == "RATE_LIMITED"
        assert r.headers["x-ratelimit-remaining"] == "0"
        assert abs(int(r.headers["x-ratelimit-reset"]) - reset) <= 1
        assert 1 <= int(r.headers["retry-after"]) <= 60


async def test_the_per_second_window_refuses_with_retry_after_1(
    limited_app: AppFactory, ctx: ServiceContext, workspace: Workspace
) -> None:
    _, secret = await create_key(ctx, workspace.id, "rl", None)
    async with limited_app(per_second=3) as app, client_for(app, secret) as client:
        await at_window_start(1, 0.7)
        responses = await burst(client, 6)
        assert sorted(r.status_code for r in responses) == [200] * 3 + [429] * 3
        assert {r.headers["retry-after"] for r in responses if r.status_code == 429} == {"1"}
        assert {r.headers["x-ratelimit-limit"] for r in responses} == {"3"}
        await asyncio.sleep(1.05)
        assert (await client.get("/workspace")).status_code == 200  # the next second starts over


async def test_two_api_instances_share_one_limit(
    limited_app: AppFactory, ctx: ServiceContext, workspace: Workspace
) -> None:
    _, secret = await create_key(ctx, workspace.id, "rl", None)
    async with (
        limited_app(per_minute=10) as first,
        limited_app(per_minute=10) as second,
        client_for(first, secret) as a,
        client_for(second, secret) as b,
    ):
        await at_window_start(60, 10)
        responses = await asyncio.gather(*(c.get("/workspace") for c in (a, b) * 10))
    assert sum(r.status_code == 200 for r in responses) == 10
    assert sum(r.status_code == 429 for r in responses) == 10


async def test_the_plan_overrides_the_default_limits(
    limited_app: AppFactory, ctx: ServiceContext, workspace: Workspace
) -> None:
    await set_plan(ctx, workspace.id, "free")  # 2/s, 60/min
    _, secret = await create_key(ctx, workspace.id, "rl", None)
    async with limited_app() as app, client_for(app, secret) as client:
        await at_window_start(1, 0.7)
        responses = await burst(client, 4)
    assert sorted(r.status_code for r in responses) == [200, 200, 429, 429]


async def test_requests_without_a_valid_key_are_limited_by_address(limited_app: AppFactory) -> None:
    async with limited_app(per_second=2) as app, client_for(app, "h0p_wrong") as client:
        await at_window_start(1, 0.7)
        responses = await burst(client, 4)
    assert sorted(r.status_code for r in responses) == [401, 401, 429, 429]
    assert all("x-ratelimit-limit" in r.headers for r in responses)


async def test_disabled_rate_limits_send_no_headers_and_never_refuse(api: httpx.AsyncClient) -> None:
    responses = await burst(api, 12)
    assert {r.status_code for r in responses} == {200}
    assert all("x-ratelimit-limit" not in r.headers for r in responses)
