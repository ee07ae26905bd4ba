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
from api.services.workspaces import Workspace, get_or_create_workspace, set_plan
from h0p_settings import Settings
from tests.api.conftest import client_for, running

AppFactory = Callable[..., AbstractAsyncContextManager[Starlette]]


@pytest.fixture
def limited_app(api_settings: Settings) -> AppFactory:
    @asynccontextmanager
    async def make(
        per_second: int = 1000,
        per_minute: int = 100_000,
        workspace_per_second: int = 1000,
        workspace_per_minute: int = 100_000,
        plans_json: str = "",
    ) -> AsyncIterator[Starlette]:
        s = dataclasses.replace(
            api_settings,
            plans_json=plans_json,
            rate_limits_enabled=True,
            rate_limit_per_second=per_second,
            rate_limit_per_minute=per_minute,
            workspace_rate_limit_per_second=workspace_per_second,
            workspace_rate_limit_per_minute=workspace_per_minute,
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


async def test_refused_requests_do_not_use_up_the_minute(
    limited_app: AppFactory, ctx: ServiceContext, workspace: Workspace
) -> None:
    # Two processes on one Redis with the same minute limit: a burst refused by the first one's
    # per-second window must leave the minute's allowance to the second one.
    _, secret = await create_key(ctx, workspace.id, "rl", None)
    async with (
        limited_app(per_second=2, per_minute=10) as strict,
        limited_app(per_second=1000, per_minute=10) as loose,
        client_for(strict, secret) as a,
        client_for(loose, secret) as b,
    ):
        await at_window_start(60, 10)
        await at_window_start(1, 0.7)
        first = await burst(a, 8)
        second = await burst(b, 15)
    assert sorted(r.status_code for r in first) == [200] * 2 + [429] * 6
    assert sum(r.status_code == 200 for r in second) == 8  # 10 - the 2 served, not 10 - 8 tried


async def test_keys_of_one_workspace_together_stay_within_the_workspace_bucket(
    limited_app: AppFactory, ctx: ServiceContext, workspace: Workspace
) -> None:
    secrets = [(await create_key(ctx, workspace.id, f"rl{i}", None))[1] for i in range(10)]
    async with limited_app(per_minute=5, workspace_per_minute=20) as app:
        clients = [client_for(app, s) for s in secrets]
        try:
            await at_window_start(60, 10)
            responses = await asyncio.gather(*(c.get("/workspace") for c in clients for _ in range(5)))
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert (len(ok), len(refused)) == (20, 30)  # ten keys of 5/min each, but 20/min for the workspace
    assert all(r.json()["error"]["code"] == "RATE_LIMITED" for r in refused)


def with_plans(ctx: ServiceContext, plans_json: str) -> ServiceContext:
    return dataclasses.replace(ctx, settings=dataclasses.replace(ctx.settings, plans_json=plans_json))


async def test_a_plan_sets_its_own_workspace_bucket(
    limited_app: AppFactory, ctx: ServiceContext, workspace: Workspace
) -> None:
    plans = '{"team": {"workspaceRateLimitPerMinute": 4}}'
    await set_plan(with_plans(ctx, plans), workspace.id, "team")
    secrets = [(await create_key(ctx, workspace.id, f"rl{i}", None))[1] for i in range(2)]
    async with limited_app(per_minute=3, plans_json=plans) as app:
        a, b = client_for(app, secrets[0]), client_for(app, secrets[1])
        try:
            await at_window_start(60, 10)
            responses = [*await burst(a, 3), *await burst(b, 3)]
        finally:
            await a.aclose()
            await b.aclose()
    assert sum(r.status_code == 200 for r in responses) == 4


async def test_the_workspace_bucket_never_holds_one_key_below_its_own_limit(
    limited_app: AppFactory, ctx: ServiceContext, workspace: Workspace
) -> None:
    # a plan raising the per-key minute above the default workspace minute keeps that key's whole limit
    plans = '{"big": {"rateLimitPerMinute": 12}}'
    await set_plan(with_plans(ctx, plans), workspace.id, "big")
    _, secret = await create_key(ctx, workspace.id, "rl", None)
    async with (
        limited_app(workspace_per_minute=5, plans_json=plans) as app,
        client_for(app, secret) as client,
    ):
        await at_window_start(60, 10)
        responses = await burst(client, 15)
    assert sorted(r.status_code for r in responses) == [200] * 12 + [429] * 3


async def test_another_workspace_is_not_slowed_by_a_busy_one(
    limited_app: AppFactory, ctx: ServiceContext, workspace: Workspace
) -> None:
    other = await get_or_create_workspace(ctx, f"{workspace.name}-other")
    _, busy = await create_key(ctx, workspace.id, "busy", None)
    _, calm = await create_key(ctx, other.id, "calm", None)
    async with limited_app(workspace_per_minute=5) as app, client_for(app, busy) as a, client_for(app, calm) as b:
        await at_window_start(60, 10)
        await burst(a, 8)
        assert [r.status_code for r in await burst(b, 5)] == [200] * 5


_INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "spam", "version": "1"}},
}
_MCP_HEADERS = {"accept": "application/json, text/event-stream"}


_TOOLS_LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}


@pytest.mark.parametrize("message", [_INITIALIZE, _TOOLS_LIST], ids=lambda m: m["method"])
async def test_mcp_handshake_and_tool_listing_spam_gets_429(
    limited_app: AppFactory, ctx: ServiceContext, workspace: Workspace, message: dict[str, object]
) -> None:
    _, secret = await create_key(ctx, workspace.id, "agent", None)
    async with limited_app(per_second=3) as app, client_for(app, secret) as client:
        await at_window_start(1, 0.7)
        responses = await asyncio.gather(*(client.post("/mcp", json=message, headers=_MCP_HEADERS) for _ in range(6)))
    assert sorted(r.status_code for r in responses) == [200] * 3 + [429] * 3
    assert all("x-ratelimit-limit" in r.headers for r in responses)
    for r in responses:
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "RATE_LIMITED" and r.headers["retry-after"] == "1"
