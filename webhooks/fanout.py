"""Events to deliveries: each outbox row becomes one delivery per endpoint that wants it.

In one transaction: take a batch of ``webhook_events`` (``FOR UPDATE SKIP LOCKED``, so any
number of delivery processes share the work), build each body once per event, insert the
deliveries, delete the events. A crash before the commit leaves the events for the next pass;
nothing is lost and nothing is fanned out twice.

``link.clicked`` rows carry only the click's key: the stored, enriched click is read here
(ingest wrote it in the transaction that added the event), with the link as the API returns it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import asyncpg
import msgspec

from api.ids import new_id
from api.services.context import ServiceContext
from api.services.links import LINK_SELECT, link_from_row
from api.webhook_schemas import Click, LinkClickedData
from webhooks.sender import envelope

log = logging.getLogger("h0p.webhooks")

TAKE_EVENTS_SQL = """
DELETE FROM webhook_events WHERE id IN (
    SELECT id FROM webhook_events ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
)
RETURNING id, workspace_id, type, link_id, data::text AS data, click_event_id, click_ts, occurred_at
"""

WEBHOOKS_SQL = """
SELECT id, workspace_id, events, link_ids, folder_ids, tag_ids, include_bots
FROM webhooks WHERE workspace_id = ANY($1::text[]) AND NOT disabled
"""

CLICKS_SQL = """
SELECT c.event_id, c.ts, c.link_id, c.url, c.country, c.region, c.city, c.continent, c.latitude, c.longitude,
       c.device, c.browser, c.os, c.referer, c.referer_url, c.qr, c.bot,
       c.utm_source, c.utm_medium, c.utm_campaign, c.utm_term, c.utm_content
FROM clicks c JOIN unnest($1::uuid[], $2::timestamptz[]) AS k(event_id, ts) ON c.event_id = k.event_id AND c.ts = k.ts
"""

DELIVERY_COLUMNS = ("id", "webhook_id", "event_type", "body", "next_attempt_at")


class _Scope(NamedTuple):
    link_id: str | None
    folder_id: str | None
    tag_ids: Sequence[str]


class _LinkScope(msgspec.Struct, rename="camel"):
    id: str
    folder_id: str | None = None
    tag_ids: list[str] = []


def _matches(hook: asyncpg.Record, scope: _Scope | None) -> bool:
    if scope is None or not (hook["link_ids"] or hook["folder_ids"] or hook["tag_ids"]):
        return True
    return (
        scope.link_id in hook["link_ids"]
        or (scope.folder_id is not None and scope.folder_id in hook["folder_ids"])
        or any(t in hook["tag_ids"] for t in scope.tag_ids)
    )


def _may_want_click(hooks: dict[str, list[asyncpg.Record]], event: asyncpg.Record) -> bool:
    """False when no endpoint can want this click (decided by link id alone): its row is not even read.

    Ingest writes an event for every click of a subscribed workspace; an endpoint scoped to a few
    links must not cost a read of every other click.
    """
    for h in hooks.get(event["workspace_id"], ()):
        if "link.clicked" not in h["events"]:
            continue
        if h["folder_ids"] or h["tag_ids"] or not h["link_ids"] or event["link_id"] in h["link_ids"]:
            return True
    return False


def click_from_row(row: asyncpg.Record) -> Click:
    """The ``click`` of a ``link.clicked`` event from a stored ``clicks`` row."""
    return Click(
        id=str(row["event_id"]), timestamp=row["ts"], url=row["url"], country=row["country"],
        region=row["region"], city=row["city"], continent=row["continent"], latitude=row["latitude"],
        longitude=row["longitude"], device=row["device"], browser=row["browser"], os=row["os"],
        referer=row["referer"], referer_url=row["referer_url"], qr=row["qr"], bot=row["bot"],
        utm_source=row["utm_source"], utm_medium=row["utm_medium"], utm_campaign=row["utm_campaign"],
        utm_term=row["utm_term"], utm_content=row["utm_content"],
    )  # fmt: skip


async def fan_out(ctx: ServiceContext, conn: asyncpg.Connection, limit: int = 1000) -> int:
    """Turn up to ``limit`` events into deliveries (one transaction); returns the events taken."""
    async with conn.transaction():
        events = await conn.fetch(TAKE_EVENTS_SQL, limit)
        if not events:
            return 0
        hooks: dict[str, list[asyncpg.Record]] = {}
        for h in await conn.fetch(WEBHOOKS_SQL, list({e["workspace_id"] for e in events})):
            hooks.setdefault(h["workspace_id"], []).append(h)
        clicked = [e for e in events if e["type"] == "link.clicked" and _may_want_click(hooks, e)]
        clicks: dict[Any, asyncpg.Record] = {}
        links: dict[str, Any] = {}
        if clicked:
            rows = await conn.fetch(
                CLICKS_SQL, [e["click_event_id"] for e in clicked], [e["click_ts"] for e in clicked]
            )
            clicks = {r["event_id"]: r for r in rows}
            link_ids = list({r["link_id"] for r in rows if r["link_id"]})
            for r in await conn.fetch(LINK_SELECT + " WHERE l.id = ANY($1::text[])", link_ids):
                links[r["id"]] = link_from_row(ctx, r)
        now = datetime.now(UTC)
        deliveries: list[tuple[str, str, str, str, datetime]] = []
        for e in events:
            wanted = [h for h in hooks.get(e["workspace_id"], ()) if e["type"] in h["events"]]
            if not wanted:
                continue
            scope: _Scope | None = None
            occurred_at = e["occurred_at"]
            if e["type"] == "link.clicked":
                click = clicks.get(e["click_event_id"])
                if click is None:  # out of every endpoint's scope (or, impossibly, not stored)
                    continue
                link = links.get(click["link_id"])
                if not any(h["include_bots"] for h in wanted) and click["bot"]:
                    continue
                wanted = [h for h in wanted if h["include_bots"] or not click["bot"]]
                scope = _Scope(click["link_id"], link.folder_id if link else None, link.tag_ids if link else ())
                data = msgspec.json.encode(LinkClickedData(click=click_from_row(click), link=link))
                occurred_at = click["ts"]
            else:
                data = e["data"].encode()
                if e["type"].startswith("link."):
                    ls = msgspec.json.decode(data, type=_LinkScope)
                    scope = _Scope(ls.id, ls.folder_id, ls.tag_ids)
            body = envelope(e["type"], occurred_at, data).decode()
            for h in wanted:
                if _matches(h, scope):
                    deliveries.append((new_id("msg"), h["id"], e["type"], body, now))
        if deliveries:
            await conn.copy_records_to_table("webhook_deliveries", records=deliveries, columns=DELIVERY_COLUMNS)
    return len(events)
