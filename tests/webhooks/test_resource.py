"""The webhook resource: scopes, the plan feature, pagination, PATCH, and its documentation in /doc."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette

from api.services.context import ServiceContext
from api.services.keys import create_key
from api.services.workspaces import Workspace, set_plan
from tests.api.conftest import client_for
from tests.webhooks.receiver import Receiver


async def test_webhooks_need_the_webhooks_scopes(
    wh_app: Starlette, wh_ctx: ServiceContext, workspace: Workspace, receiver: Receiver
) -> None:
    _, reader = await create_key(wh_ctx, workspace.id, "reader", ["webhooks:read"])
    async with client_for(wh_app, reader) as api:
        refused = await api.post("/webhooks", json={"url": receiver.url("s"), "events": ["link.created"]})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "ACTION_NOT_ALLOWED"
        assert (await api.get("/webhooks")).status_code == 200
    _, links_only = await create_key(wh_ctx, workspace.id, "links", ["links:write"])
    async with client_for(wh_app, links_only) as api:
        assert (await api.get("/webhooks")).json()["error"]["code"] == "ACTION_NOT_ALLOWED"


async def test_a_plan_without_webhooks_gets_feature_not_available(
    api: httpx.AsyncClient, wh_ctx: ServiceContext, workspace: Workspace, receiver: Receiver
) -> None:
    await set_plan(wh_ctx, workspace.id, "free")
    answer = await api.post("/webhooks", json={"url": receiver.url("f"), "events": ["link.created"]})
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "FEATURE_NOT_AVAILABLE"
    assert (await api.get("/webhooks")).json()["total"] == 0


async def test_list_is_paginated_newest_first_and_patch_changes_only_given_fields(
    api: httpx.AsyncClient, receiver: Receiver
) -> None:
    ids = []
    for i in range(3):
        body = {"url": receiver.url(f"p{i}"), "events": ["link.created"], "name": f"hook {i}"}
        ids.append((await api.post("/webhooks", json=body)).json()["id"])
    page = (await api.get("/webhooks", params={"limit": 2, "page": 0})).json()
    assert page["total"] == 3 and [w["id"] for w in page["data"]] == [ids[2], ids[1]]
    assert [w["id"] for w in (await api.get("/webhooks", params={"limit": 2, "page": 1})).json()["data"]] == [ids[0]]
    patched = (await api.patch(f"/webhooks/{ids[0]}", json={"events": ["link.clicked"], "includeBots": True})).json()
    assert patched["events"] == ["link.clicked"] and patched["includeBots"] and patched["name"] == "hook 0"
    bad = await api.patch(f"/webhooks/{ids[0]}", json={"url": "javascript:alert(1)"})
    assert bad.status_code == 400 and bad.json()["error"]["details"][0]["path"] == "url"
    assert (await api.delete(f"/webhooks/{ids[0]}")).json() == {"id": ids[0]}
    assert (await api.get(f"/webhooks/{ids[0]}")).json()["error"]["code"] == "NOT_FOUND"


async def test_every_event_payload_is_documented_with_an_example(api: httpx.AsyncClient) -> None:
    doc = (await api.get("/doc")).json()
    paths = {"/webhooks", "/webhooks/{id}", "/webhooks/{id}/rotate-secret", "/webhooks/{id}/test",
             "/webhooks/{id}/deliveries", "/webhooks/{id}/deliveries/{deliveryId}/retry"}  # fmt: skip
    assert paths <= set(doc["paths"])
    schemas = doc["components"]["schemas"]
    assert {"LinkEvent", "LinkClickedEvent", "DomainVerifiedEvent", "PingEvent", "Click"} <= set(schemas)
    examples = (await api.get("/webhooks/events")).json()
    assert set(examples) == {"link.created", "link.updated", "link.deleted", "link.clicked", "domain.verified", "ping"}
    assert examples["link.clicked"]["data"]["click"]["country"] == "DE"
    assert all(e["type"] == name for name, e in examples.items())
