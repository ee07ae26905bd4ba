"""link.clicked end to end: edge → broker → ingest (stores the click and its event) → h0p webhooks → receiver."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import uuid

import httpx
import pytest

from api.app import create_app as create_api
from api.services.context import ServiceContext
from api.services.keys import create_key
from api.services.workspaces import get_or_create_workspace
from h0p_settings import Settings
from ingest.consumer import running_consumer
from tests.api.conftest import client_for, running
from tests.redirect.conftest import served
from tests.webhooks.conftest import create_webhook, dispatching
from tests.webhooks.receiver import Receiver, wait_until

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


@pytest.fixture
def e2e_settings(wh_settings: Settings) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return dataclasses.replace(
        wh_settings,
        kafka_topic=f"wh-clicks-{tag}",
        kafka_group=f"wh-ingest-{tag}",
        ingest_session_timeout_ms=1500,
        trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),),
    )


@pytest.mark.slow
async def test_a_click_on_the_edge_arrives_as_link_clicked_with_its_country_and_bots_only_where_asked(
    e2e_settings: Settings, wh_ctx: ServiceContext, receiver: Receiver
) -> None:
    workspace = await get_or_create_workspace(wh_ctx, f"clk-{uuid.uuid4().hex[:8]}")
    _, secret = await create_key(wh_ctx, workspace.id, "e2e", None)
    async with running(create_api(e2e_settings)) as app, client_for(app, secret) as api:
        link = (
            await api.post("/links", json={"url": "https://example.com/c", "slug": f"c-{uuid.uuid4().hex[:6]}"})
        ).json()
        other = (await api.post("/links", json={"url": "https://example.com/o"})).json()
        await create_webhook(api, receiver, "humans", events=["link.clicked"])
        await create_webhook(api, receiver, "all", events=["link.clicked"], includeBots=True)
        await create_webhook(api, receiver, "other", events=["link.clicked"], linkIds=[other["id"]])
        async with (
            running_consumer(e2e_settings),
            dispatching(e2e_settings),
            served(e2e_settings) as (_, edge_url),
            httpx.AsyncClient(base_url=edge_url) as browser,
        ):
            path = "/" + link["slug"] + "?utm_source=newsletter"
            human = await browser.get(
                path, headers={"host": "localhost", "user-agent": CHROME, "x-forwarded-for": "81.2.69.142"}
            )
            assert human.status_code == 302
            bot = await browser.get(
                path, headers={"host": "localhost", "user-agent": GOOGLEBOT, "x-forwarded-for": "8.8.8.8"}
            )
            assert bot.status_code == 302
            humans, everyone = receiver.endpoint("humans"), receiver.endpoint("all")
            await wait_until(lambda: len(everyone.received) == 2, 60, "both clicks at the bots-too endpoint")
            await wait_until(lambda: len(humans.received) == 1, 30, "the human click")
            await asyncio.sleep(0.5)  # room for a wrong extra delivery (not a timing assertion)
    payload = humans.received[0].payload
    assert payload["type"] == "link.clicked"
    click = payload["data"]["click"]
    assert click["country"] == "GB" and click["continent"] == "EU" and click["city"] == "London"
    assert click["browser"] == "Chrome" and click["bot"] is False and click["utm_source"] == "newsletter"
    assert payload["data"]["link"]["id"] == link["id"]
    assert len(humans.received) == 1  # the bot is excluded
    assert sorted(r.payload["data"]["click"]["bot"] for r in everyone.received) == [False, True]
    assert not receiver.endpoint("other").received  # scoped to another link
