"""Ingest's side of link.clicked: one outbox event per stored click, none for a redelivery, none unsubscribed."""

from __future__ import annotations

import uuid

import asyncpg

from h0p_settings import Settings
from ingest.enrich.row import Enricher
from ingest.links import LinkDirectory
from ingest.store import ClickStore
from ingest.webhook_clicks import ClickSubscriptions
from tests.ingest.conftest import click, make_link, make_workspace
from webhooks.signing import new_secret

GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"


async def test_each_stored_click_has_one_event_redeliveries_none_and_bots_only_when_wanted(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    subscribed, quiet = await make_workspace(pool), await make_workspace(pool)
    link, other = await make_link(pool, subscribed), await make_link(pool, quiet)
    await pool.execute(
        "INSERT INTO webhooks (id, workspace_id, url, events, secret) VALUES ($1, $2, 'https://x.example/h', $3, $4)",
        f"wh_{subscribed}", subscribed, ["link.clicked"], new_secret(),
    )  # fmt: skip
    events = [click(link, ua=CHROME) for _ in range(6)] + [click(link, ua=GOOGLEBOT)] + [click(other, ua=CHROME)]
    directory, subscriptions = LinkDirectory(), ClickSubscriptions()
    enricher = Enricher(settings, directory)
    store = ClickStore(settings.database_url)
    try:
        await subscriptions.refresh(await store.connection())
        rows = [enricher.row(e, uuid.UUID(e.id)) for e in events]
        assert await store.write(rows[:4], subscriptions) == 4  # fast path
        assert await store.write(rows, subscriptions) == 4  # 4 redelivered (slow path), 4 new
        assert await store.write(rows, subscriptions) == 0
    finally:
        await store.close()
        enricher.close()
    stored = await pool.fetch(
        "SELECT click_event_id, link_id FROM webhook_events WHERE workspace_id = ANY($1::text[])", [subscribed, quiet]
    )
    humans = {uuid.UUID(e.id) for e in events[:6]}
    assert sorted(r["click_event_id"] for r in stored) == sorted(humans)  # once each; no bot, nothing of `quiet`
    await pool.execute("DELETE FROM webhook_events WHERE workspace_id = $1", subscribed)


async def test_without_a_subscription_nothing_is_written_or_read(settings: Settings, pool: asyncpg.Pool) -> None:
    subscriptions = ClickSubscriptions()
    assert subscriptions.events([("row",)]) == []  # no subscribed workspace: not even a row is looked at


async def test_endpoints_scoped_to_links_get_events_for_those_links_only(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    # A webhook on one campaign link of a busy workspace: the other links' clicks are no work at all.
    workspace = await make_workspace(pool)
    watched, busy = await make_link(pool, workspace), await make_link(pool, workspace)
    await pool.execute(
        "INSERT INTO webhooks (id, workspace_id, url, events, secret, link_ids)"
        " VALUES ($1, $2, 'https://x.example/h', $3, $4, $5)",
        f"wh_{workspace}", workspace, ["link.clicked"], new_secret(), [watched["id"]],
    )  # fmt: skip
    events = [click(watched, ua=CHROME)] + [click(busy, ua=CHROME) for _ in range(5)]
    directory, subscriptions = LinkDirectory(), ClickSubscriptions()
    enricher = Enricher(settings, directory)
    store = ClickStore(settings.database_url)
    try:
        await subscriptions.refresh(await store.connection())
        assert await store.write([enricher.row(e, uuid.UUID(e.id)) for e in events], subscriptions) == 6
    finally:
        await store.close()
        enricher.close()
    stored = await pool.fetch("SELECT click_event_id FROM webhook_events WHERE workspace_id = $1", workspace)
    assert [r["click_event_id"] for r in stored] == [uuid.UUID(events[0].id)]
    await pool.execute("DELETE FROM webhook_events WHERE workspace_id = $1", workspace)
