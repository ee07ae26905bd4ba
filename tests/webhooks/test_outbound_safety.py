"""Where deliveries may go: http(s) to public addresses only, checked at creation and again at connect."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from dnslib import AAAA, QTYPE, RR, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer
from starlette.applications import Starlette

from api.app import create_app
from api.services.context import ServiceContext
from api.services.keys import create_key
from api.services.workspaces import get_or_create_workspace
from h0p_settings import Settings
from tests.api.conftest import client_for, running
from tests.services import free_port
from tests.webhooks.receiver import Receiver


class RebindingZone(BaseResolver):  # type: ignore[misc]
    """A records per name, answered in turn: the last answer repeats (a rebinding attacker's zone)."""

    def __init__(self) -> None:
        self.answers: dict[str, list[str]] = {}
        self.queries: dict[str, int] = {}

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        answers = self.answers.get(name)
        if answers and request.q.qtype == QTYPE.A:
            n = self.queries.get(name, 0)
            self.queries[name] = n + 1
            address = answers[min(n, len(answers) - 1)]
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(address), ttl=0))
        elif answers and request.q.qtype == QTYPE.AAAA and name.startswith("v6"):
            reply.add_answer(RR(request.q.qname, QTYPE.AAAA, rdata=AAAA("::1"), ttl=0))
        return reply


@pytest.fixture(scope="module")
def zone() -> Iterator[tuple[RebindingZone, str]]:
    zone = RebindingZone()
    port = free_port()
    server = DNSServer(
        zone,
        address="127.0.0.1",
        port=port,
        logger=DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data", False),
    )
    server.start_thread()
    yield zone, f"127.0.0.1:{port}"
    server.stop()
    server.server.server_close()


@pytest.fixture(scope="module")
def strict_settings(settings: Settings, zone: tuple[RebindingZone, str]) -> Settings:
    """Private targets NOT allowed (the production default), DNS from the stub resolver."""
    return dataclasses.replace(
        settings, allow_private_targets=False, dns_resolver=zone[1], rate_limits_enabled=False,
        webhooks_per_workspace=3, webhook_timeout_s=3.0,
    )  # fmt: skip


@pytest.fixture(scope="module")
async def strict_app(strict_settings: Settings) -> AsyncIterator[Starlette]:
    async with running(create_app(strict_settings)) as app:
        yield app


@pytest.fixture
async def strict_api(strict_app: Starlette, wh_ctx: ServiceContext) -> AsyncIterator[httpx.AsyncClient]:
    workspace = await get_or_create_workspace(wh_ctx, f"strict-{uuid.uuid4().hex[:10]}")
    _, secret = await create_key(wh_ctx, workspace.id, "test", None)
    async with client_for(strict_app, secret) as client:
        yield client


def _refused(answer: httpx.Response, path: str) -> str:
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["details"][0]["path"] == path
    return str(error["message"])


async def test_a_name_resolving_first_public_then_to_loopback_is_refused_at_connect(
    strict_api: httpx.AsyncClient, receiver: Receiver, zone: tuple[RebindingZone, str]
) -> None:
    zone[0].answers["rebind.example.com"] = ["93.184.216.34", "127.0.0.1"]
    created = await strict_api.post(
        "/webhooks", json={"url": receiver.url("internal", host="rebind.example.com"), "events": ["link.created"]}
    )
    assert created.status_code == 201, created.text  # at creation the name was public
    delivery = (await strict_api.post(f"/webhooks/{created.json()['id']}/test")).json()
    attempt = delivery["attempts"][0]
    assert attempt["status"] is None
    assert "127.0.0.1" in attempt["error"] and "not a public" in attempt["error"]
    assert receiver.endpoint("internal").arrivals == 0  # the internal service never saw a request
    assert zone[0].queries["rebind.example.com"] >= 2  # resolved again at connect


async def test_a_name_with_any_private_address_is_refused_at_creation(
    strict_api: httpx.AsyncClient, zone: tuple[RebindingZone, str]
) -> None:
    zone[0].answers["v6-internal.example.com"] = ["93.184.216.34"]  # A public, AAAA ::1
    body = {"url": "https://v6-internal.example.com/h", "events": ["link.created"]}
    assert "::1" in _refused(await strict_api.post("/webhooks", json=body), "url")


async def test_ping_and_unknown_events_cannot_be_subscribed(strict_api: httpx.AsyncClient) -> None:
    for events in (["ping"], ["link.exploded"], []):
        body = {"url": "https://93.184.216.34/h", "events": events}
        _refused(await strict_api.post("/webhooks", json=body), "events[0]" if events else "events")


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8000/x", "http://localhost/x", "http://10.0.0.8/x", "ftp://example.com/x",
     "http://[::1]/x", "http://user:pw@example.com/x", "http://2130706433/x"],
)  # fmt: skip
async def test_private_or_non_http_targets_are_a_validation_error_at_creation(
    strict_api: httpx.AsyncClient, url: str
) -> None:
    _refused(await strict_api.post("/webhooks", json={"url": url, "events": ["link.created"]}), "url")
    assert (await strict_api.get("/webhooks")).json()["total"] == 0


async def test_redirects_are_not_followed(api: httpx.AsyncClient, receiver: Receiver) -> None:
    hook = (await api.post("/webhooks", json={"url": receiver.url("moved"), "events": ["link.created"]})).json()
    receiver.endpoint("moved").status = 307
    delivery = (await api.post(f"/webhooks/{hook['id']}/test")).json()
    assert delivery["attempts"][0]["status"] == 307 and delivery["state"] == "pending"
    assert receiver.endpoint("moved").arrivals == 1


async def test_a_workspace_has_at_most_the_configured_number_of_webhooks(strict_api: httpx.AsyncClient) -> None:
    body = {"url": "https://93.184.216.34/h", "events": ["link.created"]}
    for _ in range(3):
        assert (await strict_api.post("/webhooks", json=body)).status_code == 201
    answer = await strict_api.post("/webhooks", json=body)
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "PLAN_LIMIT_REACHED"


async def test_an_address_literal_is_checked_at_delivery_too(
    api: httpx.AsyncClient, receiver: Receiver, wh_ctx: ServiceContext, strict_settings: Settings
) -> None:
    from api.services import webhooks as webhooks_service

    hook = (await api.post("/webhooks", json={"url": receiver.url("literal"), "events": ["link.created"]})).json()
    workspace_id = await wh_ctx.pool.fetchval("SELECT workspace_id FROM webhooks WHERE id = $1", hook["id"])
    # the operator turns private targets off after the endpoint was created
    strict = dataclasses.replace(wh_ctx, settings=strict_settings)
    delivery = await webhooks_service.test_webhook(strict, workspace_id, hook["id"])
    assert delivery.attempts[0].status is None
    assert delivery.attempts[0].error is not None and "not a public" in delivery.attempts[0].error
    assert receiver.endpoint("literal").arrivals == 0
