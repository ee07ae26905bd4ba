"""link.* events: recorded with the change, delivered signed (verified by ``standardwebhooks``), in order of kind."""

from __future__ import annotations

import base64

import httpx

from tests.webhooks.conftest import create_webhook
from tests.webhooks.receiver import Receiver, wait_until
from webhooks.dispatcher import Dispatcher


async def test_link_created_updated_deleted_arrive_signed_and_verified_by_the_reference_library(
    api: httpx.AsyncClient, receiver: Receiver, dispatcher: Dispatcher
) -> None:
    hook = await create_webhook(api, receiver, "crm")
    secret = str(hook["secret"])
    assert secret.startswith("whsec_") and 24 <= len(base64.b64decode(secret[6:])) <= 64
    created = (await api.post("/links", json={"url": "https://example.com/a", "slug": "wh-a"})).json()
    await api.patch(f"/links/{created['id']}", json={"title": "A"})
    await api.delete(f"/links/{created['id']}")
    ep = receiver.endpoint("crm")
    await wait_until(lambda: len(ep.received) == 3, what="three deliveries")
    assert sorted(ep.types()) == ["link.created", "link.deleted", "link.updated"]
    assert not ep.rejected
    by_type = {r.payload["type"]: r.payload for r in ep.received}
    assert by_type["link.created"]["data"]["id"] == created["id"]
    assert by_type["link.created"]["data"]["shortUrl"] == created["shortUrl"]
    assert by_type["link.updated"]["data"]["title"] == "A"
    assert by_type["link.deleted"]["data"]["slug"] == "wh-a"
    assert all(r.payload["timestamp"].endswith("Z") for r in ep.received)
    assert all(r.headers["webhook-id"].startswith("msg_") for r in ep.received)


async def test_the_secret_is_shown_only_at_creation_and_rotation(api: httpx.AsyncClient, receiver: Receiver) -> None:
    hook = await create_webhook(api, receiver, "quiet")
    assert "secret" not in (await api.get(f"/webhooks/{hook['id']}")).json()
    assert all("secret" not in h for h in (await api.get("/webhooks")).json()["data"])
    rotated = (await api.post(f"/webhooks/{hook['id']}/rotate-secret")).json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != hook["secret"]


async def test_bulk_creation_sends_one_event_per_link(
    api: httpx.AsyncClient, receiver: Receiver, dispatcher: Dispatcher
) -> None:
    await create_webhook(api, receiver, "bulk", events=["link.created"])
    answer = await api.post("/links/bulk", json=[{"url": f"https://example.com/{i}"} for i in range(5)])
    assert answer.status_code == 200
    ep = receiver.endpoint("bulk")
    await wait_until(lambda: len(ep.received) == 5, what="five deliveries")
    assert {r.payload["data"]["id"] for r in ep.received} == {link["id"] for link in answer.json()}


async def test_no_endpoint_no_outbox_row(api: httpx.AsyncClient, wh_ctx: object) -> None:
    from api.services.context import ServiceContext

    assert isinstance(wh_ctx, ServiceContext)
    before = await wh_ctx.pool.fetchval("SELECT count(*) FROM webhook_events")
    await api.post("/links", json={"url": "https://example.com/none"})
    assert await wh_ctx.pool.fetchval("SELECT count(*) FROM webhook_events") == before
