"""Scope filters, domain.verified, disabling an endpoint that keeps failing, pruning the delivery log."""

from __future__ import annotations

import asyncio
import dataclasses

import httpx

from api.services.context import ServiceContext
from h0p_settings import Settings
from tests.api.dns_server import LoopbackDns
from tests.webhooks.conftest import create_webhook, dispatching
from tests.webhooks.receiver import Receiver, wait_until
from webhooks.dispatcher import Dispatcher


async def test_scope_filters_send_only_the_events_of_links_in_scope(
    api: httpx.AsyncClient, receiver: Receiver, dispatcher: Dispatcher
) -> None:
    first = (await api.post("/links", json={"url": "https://example.com/1"})).json()
    folder = (await api.post("/folders", json={"name": "spring"})).json()
    tag = (await api.post("/tags", json={"name": "promo"})).json()
    await create_webhook(api, receiver, "by-link", linkIds=[first["id"]])
    await create_webhook(api, receiver, "by-folder", folderIds=[folder["id"]])
    await create_webhook(api, receiver, "by-tag", tagIds=[tag["id"]])
    await create_webhook(api, receiver, "everything")
    await api.patch(f"/links/{first['id']}", json={"title": "first"})
    in_folder = (await api.post("/links", json={"url": "https://example.com/2", "folderId": folder["id"]})).json()
    tagged = (await api.post("/links", json={"url": "https://example.com/3", "tagIds": [tag["id"]]})).json()
    await api.post("/links", json={"url": "https://example.com/4"})
    everything = receiver.endpoint("everything")
    await wait_until(lambda: len(everything.received) == 4, what="the unscoped endpoint's four events")
    await asyncio.sleep(0.5)  # room for a wrong extra delivery (not a timing assertion)

    def seen(name: str) -> list[tuple[str, str]]:
        return [(r.payload["type"], r.payload["data"]["id"]) for r in receiver.endpoint(name).received]

    assert seen("by-link") == [("link.updated", first["id"])]
    assert seen("by-folder") == [("link.created", in_folder["id"])]
    assert seen("by-tag") == [("link.created", tagged["id"])]


async def test_scope_ids_must_belong_to_the_workspace(api: httpx.AsyncClient, receiver: Receiver) -> None:
    answer = await api.post(
        "/webhooks", json={"url": receiver.url("x"), "events": ["link.created"], "tagIds": ["tag_nope"]}
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "VALIDATION_ERROR"
    assert answer.json()["error"]["details"][0]["path"] == "tagIds"


async def test_verifying_a_domain_sends_domain_verified(
    api: httpx.AsyncClient, receiver: Receiver, dispatcher: Dispatcher, dns_server: LoopbackDns
) -> None:
    await create_webhook(api, receiver, "domains", events=["domain.verified"])
    host = f"go-{id(receiver)}.example.com"
    domain = (await api.post("/domains", json={"domain": host})).json()
    dns_server.zone.records[f"_h0p-challenge.{host}"] = [domain["records"][0]["value"]]
    assert (await api.post(f"/domains/{domain['id']}/verify")).json()["verified"]
    assert (await api.post(f"/domains/{domain['id']}/verify")).json()["verified"]  # again: no second event
    ep = receiver.endpoint("domains")
    await wait_until(lambda: len(ep.received) == 1, what="domain.verified")
    await asyncio.sleep(0.5)
    assert len(ep.received) == 1
    assert ep.received[0].payload["type"] == "domain.verified"
    assert ep.received[0].payload["data"]["domain"] == host and ep.received[0].payload["data"]["verified"]


async def test_an_endpoint_failing_every_attempt_for_the_set_time_is_disabled(
    api: httpx.AsyncClient, receiver: Receiver, wh_settings: Settings
) -> None:
    hook = await create_webhook(api, receiver, "dying", events=["link.created"])
    receiver.endpoint("dying").status = 500
    await api.post("/links", json={"url": "https://example.com/d"})
    async with dispatching(dataclasses.replace(wh_settings, webhook_disable_after_s=0.5)):
        for _ in range(300):
            shown = (await api.get(f"/webhooks/{hook['id']}")).json()
            if shown["disabled"]:
                break
            await asyncio.sleep(0.05)
    assert shown["disabled"] and shown["disabledReason"].startswith("every attempt failed")
    assert (await api.get(f"/webhooks/{hook['id']}/deliveries", params={"status": "pending"})).json()["total"] == 0


async def test_the_delivery_log_is_pruned_after_the_retention_time(
    api: httpx.AsyncClient, receiver: Receiver, wh_settings: Settings, wh_ctx: ServiceContext
) -> None:
    hook = await create_webhook(api, receiver, "old")
    delivery = (await api.post(f"/webhooks/{hook['id']}/test")).json()
    await wh_ctx.pool.execute(
        "UPDATE webhook_deliveries SET created_at = now() - interval '2 hours' WHERE id = $1", delivery["id"]
    )
    async with dispatching(dataclasses.replace(wh_settings, webhook_retention_s=3600.0)) as d:
        await wait_until(lambda: d.stats.pruned >= 1, what="a prune")
    assert (await api.get(f"/webhooks/{hook['id']}/deliveries")).json()["total"] == 0
