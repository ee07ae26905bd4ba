"""A click on the edge reaches the analytics API: edge → broker → ingest → Postgres → /analytics."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from api.app import create_app as create_api
from api.services.context import ServiceContext, close_context, open_context
from api.services.keys import create_key
from api.services.workspaces import get_or_create_workspace
from h0p_settings import Settings
from ingest.consumer import running_consumer
from tests.ingest.conftest import wait_until
from tests.redirect.conftest import served

CHROME_ON_ANDROID = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36"
)


@pytest.fixture
def e2e_settings(settings: Settings) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return dataclasses.replace(
        settings,
        kafka_topic=f"e2e-clicks-{tag}",
        kafka_group=f"e2e-ingest-{tag}",
        rate_limits_enabled=False,
        ingest_session_timeout_ms=1500,  # Tansu answers a group join after half of it
    )


@pytest.fixture
async def ctx(e2e_settings: Settings) -> AsyncIterator[ServiceContext]:
    c = await open_context(e2e_settings)
    yield c
    await close_context(c)


@pytest.mark.slow
async def test_a_redirect_on_the_edge_shows_in_analytics(e2e_settings: Settings, ctx: ServiceContext) -> None:
    workspace = await get_or_create_workspace(ctx, f"e2e-{uuid.uuid4().hex[:8]}")
    _, secret = await create_key(ctx, workspace.id, "e2e", None)
    api_app = create_api(e2e_settings)
    async with (
        api_app.router.lifespan_context(api_app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=api_app), base_url="http://api.test", headers={"x-api-key": secret}
        ) as api,
        running_consumer(e2e_settings),
        served(e2e_settings) as (_, edge_url),
        httpx.AsyncClient(base_url=edge_url, headers={"user-agent": CHROME_ON_ANDROID}) as browser,
    ):
        created = await api.post("/links", json={"url": "https://example.com/spring", "slug": "e2e-spring"})
        assert created.status_code == 201, created.text
        link_id = created.json()["id"]

        # No sleep for the consumer to join its group, and no wall-clock bound: a click sent before
        # the join arrives once it is done, and how fast is the benchmark's business (loadtests/).
        hit = await browser.get("/e2e-spring?utm_source=newsletter", headers={"host": "localhost"})
        assert hit.status_code == 302
        assert hit.headers["location"] == "https://example.com/spring?utm_source=newsletter"

        async def counted() -> bool:
            answer = await api.get("/analytics", params={"groupBy": "count", "linkId": link_id})
            assert answer.status_code == 200, answer.text
            return bool(answer.json().get("clicks") == 1)

        await wait_until(counted, timeout=60, what="the click to reach /analytics")

        devices = await api.get("/analytics", params={"groupBy": "devices", "linkId": link_id})
        assert devices.json() == [{"device": "mobile", "clicks": 1}]
        sources = await api.get("/analytics", params={"groupBy": "utm_sources", "linkId": link_id})
        assert sources.json() == [{"utm_source": "newsletter", "clicks": 1}]
        link = await api.get(f"/links/{link_id}")
        assert link.json()["clicks"] == 1
