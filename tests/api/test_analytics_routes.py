"""HTTP routes of analytics: scope, validation errors, JSON shapes, streamed export, OpenAPI."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from starlette.applications import Starlette

from api.app import create_app
from api.openapi import openapi_document
from api.routes import analytics as routes
from api.services.context import ServiceContext
from api.services.keys import create_key
from api.services.workspaces import Workspace
from h0p_settings import Settings
from tests.api.conftest import client_for, running
from tests.api.test_analytics_service import GB, US, store_events
from tests.ingest.conftest import click, make_link


@pytest.fixture(scope="module")
async def app(api_settings: Settings) -> AsyncIterator[Starlette]:
    async with running(create_app(api_settings)) as application:
        yield application


@pytest.fixture
async def client(
    app: Starlette, ctx: ServiceContext, workspace: Workspace, api_settings: Settings, pool: asyncpg.Pool
) -> AsyncIterator[httpx.AsyncClient]:
    link = await make_link(pool, workspace.id)
    now = datetime.now(UTC)
    # the two GB clicks, a minute apart, on one UTC day: one visitor (the hash is per day) at any hour
    gb = now - timedelta(hours=2)
    if (gb - timedelta(minutes=1)).date() != gb.date():
        gb += timedelta(minutes=1)
    await store_events(api_settings, pool, [
        click(link, ts=(now - timedelta(hours=1)).timestamp(), ip=US),
        click(link, ts=gb.timestamp(), ip=GB),
        click(link, ts=(gb - timedelta(minutes=1)).timestamp(), ip=GB, method="HEAD"),
    ])  # fmt: skip
    _, secret = await create_key(ctx, workspace.id, "analytics", ["analytics:read"])
    async with client_for(app, secret) as c:
        yield c


async def test_analytics_groups_clicks_of_the_callers_workspace(client: httpx.AsyncClient) -> None:
    r = await client.get("/analytics", params={"groupBy": "countries", "interval": "7d"})
    assert r.status_code == 200
    assert r.json() == [{"country": "GB", "clicks": 1}, {"country": "US", "clicks": 1}]
    r = await client.get("/analytics", params={"includeBots": "true", "unique": "true"})
    assert r.json() == {"clicks": 3, "visitors": 2}
    series = (await client.get("/analytics", params={"groupBy": "timeseries", "timezone": "Asia/Tokyo"})).json()
    assert len(series) in (24, 25) and sum(p["clicks"] for p in series) == 2
    assert series[0]["start"].endswith("+09:00")


async def test_bad_parameters_answer_400_with_the_parameter_named(client: httpx.AsyncClient) -> None:
    for params, path in (({"groupBy": "planets"}, "groupBy"), ({"timezone": "Nowhere/City"}, "timezone")):
        r = await client.get("/analytics", params=params)
        assert r.status_code == 400
        body = r.json()["error"]
        assert body["code"] == "VALIDATION_ERROR" and body["details"][0]["path"] == path


async def test_events_are_paginated_newest_first(client: httpx.AsyncClient) -> None:
    r = await client.get("/analytics/events", params={"limit": 1, "page": 1, "includeBots": "true"})
    body = r.json()
    assert (body["total"], body["page"], body["limit"], len(body["data"])) == (3, 1, 1, 1)
    assert body["data"][0]["country"] == "GB" and body["data"][0]["ip"] is None
    assert (await client.get("/analytics/events", params={"limit": 51})).status_code == 400


async def test_export_streams_csv_and_ndjson(client: httpx.AsyncClient) -> None:
    r = await client.get("/analytics/export", params={"format": "csv", "interval": "7d"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.text.splitlines()[0].startswith("id,timestamp,linkId") and len(r.text.splitlines()) == 3
    r = await client.get("/analytics/export", params={"format": "ndjson", "includeBots": "true"})
    rows = [json.loads(line) for line in r.text.splitlines()]
    assert len(rows) == 3 and [x["bot"] for x in rows] == [True, False, False]
    assert (await client.get("/analytics/export", params={"format": "xml"})).status_code == 400


async def test_analytics_needs_the_analytics_read_scope(
    app: Starlette, ctx: ServiceContext, workspace: Workspace
) -> None:
    _, secret = await create_key(ctx, workspace.id, "links only", ["links:read"])
    async with client_for(app, secret) as c:
        for path in ("/analytics", "/analytics/events", "/analytics/export"):
            assert (await c.get(path)).status_code == 403
    async with client_for(app, None) as c:
        assert (await c.get("/analytics")).status_code == 401


def test_routes_are_documented_in_openapi() -> None:
    doc = openapi_document(routes.ENDPOINTS)
    assert {"/analytics", "/analytics/events"} <= set(doc["paths"])
    names = {p["name"] for p in doc["paths"]["/analytics"]["get"]["parameters"]}
    assert {"groupBy", "interval", "timezone", "utm_source", "includeBots", "unique"} <= names
    assert "/analytics/export" in routes.OPENAPI_PATHS
