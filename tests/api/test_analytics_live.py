"""GET /analytics/live over real HTTP: a uvicorn API process, clicks stored by ingest's own store
(with its live publisher), Server-Sent Events read from the socket."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from api.app import raw_openapi_paths
from api.services.context import ServiceContext
from api.services.keys import create_key
from api.services.workspaces import get_or_create_workspace
from h0p_settings import Settings
from ingest.live import LivePublisher, stream_key
from tests.api.test_analytics_export_load import api_process
from tests.ingest.conftest import CHROME, click, make_link, store_clicks, wait_until
from tests.services import free_port

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.2 Mobile/15E148 Safari/604.1"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
BOUND_S = 20  # no wait below is longer: a missing event fails the test instead of hanging it


@pytest.fixture(scope="module")
def port(settings: Settings) -> Iterator[int]:
    with api_process(settings, H0P_LIVE_MAX_STREAMS="2") as p:
        yield p


async def _tenant(ctx: ServiceContext, pool: asyncpg.Pool, scopes: list[str] | None = None) -> dict[str, Any]:
    ws = await get_or_create_workspace(ctx, f"live-{uuid.uuid4().hex[:8]}")
    _, key = await create_key(ctx, ws.id, "live", scopes or ["analytics:read"])
    link = await make_link(pool, ws.id)
    return {"ws": ws.id, "key": key, "link": link}


class Sse:
    """An open event stream: its events parsed as they arrive."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next_event(self) -> dict[str, Any]:
        """The next event with data (comments and `retry` skipped): {"id", "event", "data"}."""
        event: dict[str, Any] = {}
        async with asyncio.timeout(BOUND_S):
            async for line in self._lines:
                if line == "":
                    if "data" in event:
                        return event
                    event = {}
                elif line.startswith("id: "):
                    event["id"] = line[4:]
                elif line.startswith("event: "):
                    event["event"] = line[7:]
                elif line.startswith("data: "):
                    event["data"] = json.loads(line[6:])
        raise AssertionError("the stream ended")


@pytest.fixture
async def http(port: int) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=BOUND_S) as client:
        yield client


async def _open(http: httpx.AsyncClient, key: str, params: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> tuple[Any, Sse]:  # fmt: skip
    cm = http.stream("GET", "/analytics/live", params=params, headers={"x-api-key": key, **(headers or {})})
    response = await cm.__aenter__()
    assert response.status_code == 200, await response.aread()
    assert response.headers["content-type"].startswith("text/event-stream")
    sse = Sse(response)
    async with asyncio.timeout(BOUND_S):  # the first line (retry:) comes once the workspace is watched
        first = await sse._lines.__anext__()
    assert first.startswith("retry:")
    return cm, sse


async def test_stored_clicks_that_pass_the_filters_arrive_as_events(
    settings: Settings, ctx: ServiceContext, pool: asyncpg.Pool, http: httpx.AsyncClient
) -> None:
    t = await _tenant(ctx, pool)
    other = await _tenant(ctx, pool)
    cm, sse = await _open(http, t["key"], {"device": "mobile"})
    try:
        await store_clicks(settings, [
            click(t["link"], ua=IPHONE, ip="81.2.69.142", query="utm_source=news"),
            click(t["link"], ua=CHROME),  # desktop: filtered out
            click(t["link"], ua=GOOGLEBOT),  # a bot: left out as in /analytics
            click(other["link"], ua=IPHONE),  # another workspace: never seen here
        ], live=LivePublisher.from_settings(settings))  # fmt: skip
        event = await sse.next_event()
    finally:
        await cm.__aexit__(None, None, None)
    assert event["event"] == "clicks"
    (only,) = event["data"]
    assert only["linkId"] == t["link"]["id"]
    assert (only["device"], only["country"], only["city"], only["utm_source"]) == ("mobile", "GB", "London", "news")
    assert only["referer"] is None  # unknown values are null, as in /analytics


async def test_a_reconnect_with_last_event_id_gets_the_clicks_stored_meanwhile(
    settings: Settings, ctx: ServiceContext, pool: asyncpg.Pool, http: httpx.AsyncClient
) -> None:
    t = await _tenant(ctx, pool)
    cm, sse = await _open(http, t["key"])
    try:
        await store_clicks(
            settings, [click(t["link"], query="utm_content=first")], live=LivePublisher.from_settings(settings)
        )
        first = await sse.next_event()
    finally:
        await cm.__aexit__(None, None, None)
    # disconnected: two more batches are stored before the client comes back
    await store_clicks(
        settings, [click(t["link"], query="utm_content=second")], live=LivePublisher.from_settings(settings)
    )
    await store_clicks(
        settings, [click(t["link"], query="utm_content=third")], live=LivePublisher.from_settings(settings)
    )
    cm, sse = await _open(http, t["key"], headers={"Last-Event-ID": first["id"]})
    try:
        missed = [await sse.next_event(), await sse.next_event()]
    finally:
        await cm.__aexit__(None, None, None)
    assert [e["data"][0]["utm_content"] for e in missed] == ["second", "third"]
    assert first["id"] < missed[0]["id"] < missed[1]["id"]


async def test_live_streams_per_workspace_are_bounded(
    ctx: ServiceContext, pool: asyncpg.Pool, http: httpx.AsyncClient
) -> None:
    t = await _tenant(ctx, pool)
    opened = [await _open(http, t["key"]), await _open(http, t["key"])]  # H0P_LIVE_MAX_STREAMS=2
    refused = await http.get("/analytics/live", headers={"x-api-key": t["key"]})
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "RATE_LIMITED"
    assert int(refused.headers["retry-after"]) > 0
    other = await _tenant(ctx, pool)  # another workspace has slots of its own
    cm_other, _ = await _open(http, other["key"])
    await cm_other.__aexit__(None, None, None)
    await opened[0][0].__aexit__(None, None, None)

    async def slot_free() -> bool:
        count = await ctx.redis.zcard(f"h0p:{ctx.settings.redis_db}:live-conns:{t['ws']}")
        return bool(count < 2)

    await wait_until(slot_free, timeout=BOUND_S, what="the closed stream's slot given back")
    cm, _ = await _open(http, t["key"])
    await cm.__aexit__(None, None, None)
    await opened[1][0].__aexit__(None, None, None)


@pytest.mark.parametrize(
    ("params", "headers", "path"),
    [
        ({"interval": "7d"}, {}, "interval"),
        ({}, {"Last-Event-ID": "not-an-id"}, "lastEventId"),
        ({"device": "phone"}, {}, "device"),
    ],
)
async def test_bad_live_parameters_are_refused_with_their_name(
    ctx: ServiceContext, pool: asyncpg.Pool, http: httpx.AsyncClient, params: dict[str, str],
    headers: dict[str, str], path: str,
) -> None:  # fmt: skip
    t = await _tenant(ctx, pool)
    r = await http.get("/analytics/live", params=params, headers={"x-api-key": t["key"], **headers})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "VALIDATION_ERROR"
    assert [d["path"] for d in r.json()["error"]["details"]] == [path]


async def test_live_needs_the_analytics_read_scope_and_is_documented(
    ctx: ServiceContext, pool: asyncpg.Pool, http: httpx.AsyncClient
) -> None:
    t = await _tenant(ctx, pool, scopes=["links:read"])
    r = await http.get("/analytics/live", headers={"x-api-key": t["key"]})
    assert r.status_code == 403
    operation = raw_openapi_paths()["/analytics/live"]["get"]
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    assert {"Last-Event-ID", "device", "linkId", "includeBots"} <= {p["name"] for p in operation["parameters"]}


async def test_clicks_of_an_unwatched_workspace_are_not_published(
    settings: Settings, ctx: ServiceContext, pool: asyncpg.Pool
) -> None:
    t = await _tenant(ctx, pool)
    await store_clicks(settings, [click(t["link"])], live=LivePublisher.from_settings(settings))
    assert await ctx.redis.exists(stream_key(settings.redis_db, t["ws"])) == 0


async def test_redis_away_loses_the_live_view_not_the_clicks(
    settings: Settings, ctx: ServiceContext, pool: asyncpg.Pool
) -> None:
    t = await _tenant(ctx, pool)
    away = LivePublisher(f"redis://127.0.0.1:{free_port()}/0", settings.redis_db, 1000)  # nothing listens there
    assert await store_clicks(settings, [click(t["link"]), click(t["link"])], live=away) == 2
    assert await pool.fetchval("SELECT count(*) FROM clicks WHERE workspace_id = $1", t["ws"]) == 2
