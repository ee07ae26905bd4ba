"""Delivery behaviour: retries until the receiver is back, 410, rotation, per-endpoint isolation, test and retry."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from api.services.context import ServiceContext
from h0p_settings import Settings
from tests.webhooks.conftest import RETRY_SCHEDULE_S, create_webhook
from tests.webhooks.receiver import Receiver, wait_until
from webhooks.dispatcher import Dispatcher


async def test_a_receiver_down_for_a_while_gets_every_event_once_its_back_with_stable_ids(
    api: httpx.AsyncClient, receiver: Receiver, dispatcher: Dispatcher
) -> None:
    hook = await create_webhook(api, receiver, "flaky", events=["link.created"])
    ep = receiver.endpoint("flaky")
    ep.status = 503
    created = [(await api.post("/links", json={"url": f"https://example.com/f{i}"})).json()["id"] for i in range(6)]
    # every event refused at least once (counting arrivals alone could be one event's retries)
    await wait_until(lambda: len(ep.refused) == 6, what="every event refused while down")

    async def webhook() -> dict[str, Any]:
        return dict((await api.get(f"/webhooks/{hook['id']}")).json())

    async def failing() -> bool:
        return (await webhook())["failingSince"] is not None

    await wait_until(failing, what="the failures recorded")
    assert not (await webhook())["disabled"]
    ep.status = 200
    await wait_until(lambda: {r.payload["data"]["id"] for r in ep.received} == set(created), what="every event")
    assert len(ep.ids()) == 6  # after dedupe by webhook-id: each event once
    assert ep.ids() == ep.refused  # the retries kept each delivery's webhook-id

    async def deliveries() -> list[dict[str, Any]]:
        body = (await api.get(f"/webhooks/{hook['id']}/deliveries", params={"limit": 50})).json()
        return list(body["data"])

    async def all_delivered() -> bool:
        return all(d["state"] == "delivered" for d in await deliveries())

    # the sender records an attempt after the receiver answered: wait for the last ones to be stored
    await wait_until(all_delivered, what="every delivery recorded as delivered")
    data = await deliveries()
    assert len(data) == 6
    for d in data:
        assert d["id"] in ep.ids()  # the webhook-id of the successful attempt is the delivery's id
        failed = [a for a in d["attempts"] if a["status"] == 503]
        assert failed and failed[0]["response"] == "status 503"
    assert (await webhook())["failingSince"] is None


async def test_a_delivery_failing_every_attempt_ends_failed_after_the_schedule(
    api: httpx.AsyncClient, receiver: Receiver, dispatcher: Dispatcher
) -> None:
    hook = await create_webhook(api, receiver, "down", events=["link.created"])
    receiver.endpoint("down").status = 500
    await api.post("/links", json={"url": "https://example.com/down"})

    async def states() -> list[str]:
        data = (await api.get(f"/webhooks/{hook['id']}/deliveries")).json()["data"]
        return [d["state"] for d in data]

    for _ in range(600):
        if await states() == ["failed"]:
            break
        await asyncio.sleep(0.05)
    data = (await api.get(f"/webhooks/{hook['id']}/deliveries", params={"status": "failed"})).json()["data"]
    assert len(data) == 1 and len(data[0]["attempts"]) == len(RETRY_SCHEDULE_S) + 1
    assert data[0]["nextAttemptAt"] is None
    assert (await api.get(f"/webhooks/{hook['id']}/deliveries", params={"status": "pending"})).json()["total"] == 0


async def test_410_gone_disables_the_webhook_at_once_and_stops_its_pending_deliveries(
    api: httpx.AsyncClient, receiver: Receiver, dispatcher: Dispatcher
) -> None:
    hook = await create_webhook(api, receiver, "gone", events=["link.created"])
    ep = receiver.endpoint("gone")
    ep.status = 410
    await api.post("/links", json={"url": "https://example.com/g1"})
    await wait_until(lambda: ep.arrivals == 1, what="the 410")

    async def disabled() -> bool:
        return bool((await api.get(f"/webhooks/{hook['id']}")).json()["disabled"])

    for _ in range(200):
        if await disabled():
            break
        await asyncio.sleep(0.05)
    shown = (await api.get(f"/webhooks/{hook['id']}")).json()
    assert shown["disabled"] and "410" in shown["disabledReason"]
    await api.post("/links", json={"url": "https://example.com/g2"})  # no event for a disabled endpoint
    await asyncio.sleep(1.0)  # time for a wrong attempt to happen (not a timing assertion)
    assert ep.arrivals == 1
    states = [d["state"] for d in (await api.get(f"/webhooks/{hook['id']}/deliveries")).json()["data"]]
    assert states == ["failed"]


async def test_disabling_a_webhook_stops_its_pending_retries(
    api: httpx.AsyncClient, receiver: Receiver, dispatcher: Dispatcher, wh_ctx: ServiceContext
) -> None:
    hook = await create_webhook(api, receiver, "stopme", events=["link.created"])
    ep = receiver.endpoint("stopme")
    ep.status = 500
    await api.post("/links", json={"url": "https://example.com/s"})
    await wait_until(lambda: ep.arrivals >= 2, what="a retry")
    answer = await api.patch(f"/webhooks/{hook['id']}", json={"disabled": True})
    assert answer.json()["disabled"] and answer.json()["disabledReason"] == "disabled by a user"
    await wait_until(lambda: True)
    for _ in range(200):
        pending = await wh_ctx.pool.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE webhook_id = $1 AND state = 'pending'", hook["id"]
        )
        if pending == 0:
            break
        await asyncio.sleep(0.05)
    seen = ep.arrivals
    await asyncio.sleep(1.5)  # several retry intervals of the test schedule
    assert ep.arrivals == seen


async def test_rotation_signs_with_both_secrets_then_only_the_new_one(
    api: httpx.AsyncClient, receiver: Receiver, dispatcher: Dispatcher, wh_ctx: ServiceContext
) -> None:
    hook = await create_webhook(api, receiver, "rot", events=["link.created"])
    old = str(hook["secret"])
    new = (await api.post(f"/webhooks/{hook['id']}/rotate-secret")).json()
    assert new["previousSecretExpiresAt"] is not None
    ep = receiver.endpoint("rot")
    ep.secrets = [new["secret"]]  # a receiver already switched to the new secret
    await api.post("/links", json={"url": "https://example.com/r1"})
    await wait_until(lambda: len(ep.received) == 1, what="delivery verified with the new secret")
    assert len(ep.received[0].headers["webhook-signature"].split(" ")) == 2
    ep.secrets = [old]  # a receiver not switched yet still verifies
    await api.post("/links", json={"url": "https://example.com/r2"})
    await wait_until(lambda: len(ep.received) == 2, what="delivery verified with the old secret")
    # 24 hours later (the overlap is over)
    await wh_ctx.pool.execute(
        "UPDATE webhooks SET previous_secret_until = now() - interval '1 s' WHERE id = $1", hook["id"]
    )
    ep.status, ep.secrets = 200, [old]
    await api.post("/links", json={"url": "https://example.com/r3"})
    await wait_until(lambda: len(ep.rejected) >= 1, what="the old secret to stop verifying")
    ep.secrets = [new["secret"]]
    await wait_until(lambda: len(ep.received) == 3, what="the retry verified with the new secret")
    assert len(ep.received[2].headers["webhook-signature"].split(" ")) == 1


async def test_a_slow_receiver_does_not_delay_another(
    api: httpx.AsyncClient, receiver: Receiver, dispatcher: Dispatcher
) -> None:
    await create_webhook(api, receiver, "slow", events=["link.created"])
    await create_webhook(api, receiver, "fast", events=["link.created"])
    slow, fast = receiver.endpoint("slow"), receiver.endpoint("fast")
    slow.hold = asyncio.Event()  # the slow receiver answers nothing until released
    for i in range(30):  # more than the slow endpoint's concurrency
        await api.post("/links", json={"url": f"https://example.com/slow{i}"})
    await wait_until(lambda: len(fast.received) == 30, what="all deliveries to the fast receiver")
    assert not slow.received  # the slow one is still holding its first requests
    slow.hold.set()
    await wait_until(lambda: len(slow.ids()) == 30, what="the slow receiver to catch up")


async def test_test_sends_a_ping_now_and_a_success_re_enables(api: httpx.AsyncClient, receiver: Receiver) -> None:
    hook = await create_webhook(api, receiver, "ping")
    await api.patch(f"/webhooks/{hook['id']}", json={"disabled": True})
    delivery = (await api.post(f"/webhooks/{hook['id']}/test")).json()
    assert delivery["eventType"] == "ping" and delivery["state"] == "delivered"
    assert delivery["attempts"][0]["status"] == 200
    ep = receiver.endpoint("ping")
    assert ep.received[0].payload["type"] == "ping"
    assert ep.received[0].payload["data"] == {"webhookId": hook["id"]}
    assert ep.received[0].webhook_id == delivery["id"]
    assert not (await api.get(f"/webhooks/{hook['id']}")).json()["disabled"]


async def test_retry_sends_again_now_with_the_same_webhook_id(api: httpx.AsyncClient, receiver: Receiver) -> None:
    hook = await create_webhook(api, receiver, "again")
    ep = receiver.endpoint("again")
    ep.status = 500
    failed = (await api.post(f"/webhooks/{hook['id']}/test")).json()
    assert failed["state"] == "pending" and failed["attempts"][0]["status"] == 500
    assert failed["nextAttemptAt"] is not None
    ep.status = 200
    retried = (await api.post(f"/webhooks/{hook['id']}/deliveries/{failed['id']}/retry")).json()
    assert retried["state"] == "delivered" and len(retried["attempts"]) == 2
    assert ep.received[0].webhook_id == failed["id"]


async def test_an_unreachable_endpoint_is_a_failed_attempt_with_the_network_error(
    api: httpx.AsyncClient, receiver: Receiver
) -> None:
    from tests.services import free_port

    answer = await api.post(
        "/webhooks", json={"url": f"http://127.0.0.1:{free_port()}/nobody", "events": ["link.created"]}
    )
    delivery = (await api.post(f"/webhooks/{answer.json()['id']}/test")).json()
    attempt = delivery["attempts"][0]
    assert attempt["status"] is None and "Cannot connect" in attempt["error"]


async def test_test_beside_a_running_delivery_process_sends_the_ping_once_and_reports_it(
    api: httpx.AsyncClient, receiver: Receiver, dispatcher: Dispatcher
) -> None:
    hook = await create_webhook(api, receiver, "pings")
    deliveries = [(await api.post(f"/webhooks/{hook['id']}/test")).json() for _ in range(5)]
    assert [d["state"] for d in deliveries] == ["delivered"] * 5
    await asyncio.sleep(0.5)  # room for a second sending by the delivery process (not a timing assertion)
    ep = receiver.endpoint("pings")
    assert len(ep.received) == 5 and ep.ids() == {d["id"] for d in deliveries}


async def test_an_endpoint_slower_than_the_timeout_is_a_failed_attempt_retried_later(
    api: httpx.AsyncClient, receiver: Receiver, wh_ctx: ServiceContext, wh_settings: Settings
) -> None:
    import dataclasses

    from api.services import webhooks as webhooks_service

    hook = await create_webhook(api, receiver, "sluggish")
    receiver.endpoint("sluggish").delay_s = 2.0
    impatient = dataclasses.replace(wh_ctx, settings=dataclasses.replace(wh_settings, webhook_timeout_s=0.5))
    workspace_id = await wh_ctx.pool.fetchval("SELECT workspace_id FROM webhooks WHERE id = $1", hook["id"])
    delivery = await webhooks_service.test_webhook(impatient, workspace_id, str(hook["id"]))
    assert delivery.attempts[0].status is None and delivery.attempts[0].error == "timed out after 0.5 s"
    assert delivery.state == "pending" and delivery.next_attempt_at is not None
