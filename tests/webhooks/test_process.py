"""`h0p webhooks` as an operator runs it: killed mid-delivery and restarted, nothing is lost; /metrics; two at once."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from h0p_settings import Settings
from tests.e2e.test_cli import H0P, env_for
from tests.services import free_port, wait_for_port
from tests.webhooks.conftest import create_webhook
from tests.webhooks.receiver import Receiver, wait_until


@asynccontextmanager
async def delivery_process(settings: Settings, metrics_port: int = 0) -> AsyncIterator[asyncio.subprocess.Process]:
    env = env_for(
        settings,
        H0P_ALLOW_PRIVATE_TARGETS="true",
        H0P_WEBHOOK_TIMEOUT_S="1",
        H0P_WEBHOOK_RETRY_SCHEDULE_S="0.2,0.2,0.5,0.5,1,1,1",
        H0P_WEBHOOK_METRICS_PORT=str(metrics_port),
        H0P_LOG_LEVEL="warning",
    )
    proc = await asyncio.create_subprocess_exec(str(H0P), "webhooks", env=env)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)


@pytest.mark.slow
@pytest.mark.chaos
async def test_a_delivery_process_killed_mid_delivery_loses_nothing_once_restarted(
    api: httpx.AsyncClient, receiver: Receiver, wh_settings: Settings
) -> None:
    await create_webhook(api, receiver, "crash", events=["link.created"])
    ep = receiver.endpoint("crash")
    ep.hold = asyncio.Event()  # requests hang: deliveries are in flight when the process dies
    created = {(await api.post("/links", json={"url": f"https://example.com/k{i}"})).json()["id"] for i in range(5)}
    async with delivery_process(wh_settings) as first:
        await asyncio.wait_for(ep.entered.wait(), 30)
        first.send_signal(signal.SIGKILL)
        await first.wait()
    held = ep.hold
    ep.hold, ep.held_status = None, 503
    held.set()  # the killed process's requests end unrecorded (their sender is gone)
    port = free_port()
    async with delivery_process(wh_settings, metrics_port=port):
        await wait_until(
            lambda: {r.payload["data"]["id"] for r in ep.received} == created, 60, "every event after the restart"
        )
        wait_for_port(port)
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    assert len(ep.ids()) == 5  # each event once after dedupe by webhook-id
    sent = next(line for line in metrics.splitlines() if line.startswith("h0p_webhook_deliveries_sent_total"))
    assert float(sent.split()[-1]) >= 5
    assert "h0p_webhook_oldest_pending_seconds" in metrics and "h0p_webhook_deliveries_pending" in metrics


@pytest.mark.slow
async def test_two_delivery_processes_share_the_work_without_sending_a_delivery_twice_at_once(
    api: httpx.AsyncClient, receiver: Receiver, wh_settings: Settings
) -> None:
    await create_webhook(api, receiver, "shared", events=["link.created"])
    ep = receiver.endpoint("shared")
    created = set()
    for i in range(0, 200, 50):
        answer = await api.post("/links/bulk", json=[{"url": f"https://example.com/s{i + j}"} for j in range(50)])
        created |= {link["id"] for link in answer.json()}
    async with delivery_process(wh_settings), delivery_process(wh_settings):
        await wait_until(lambda: {r.payload["data"]["id"] for r in ep.received} == created, 60, "every event")
    assert len(ep.received) == len(ep.ids()) == 200  # no delivery was sent twice


@pytest.mark.chaos
async def test_a_postgres_outage_under_the_delivery_process_loses_no_event(
    api: httpx.AsyncClient, receiver: Receiver, wh_settings: Settings
) -> None:
    import dataclasses
    from urllib.parse import urlsplit, urlunsplit

    from tests.ingest.proxy import TcpProxy
    from tests.webhooks.conftest import dispatching

    await create_webhook(api, receiver, "outage", events=["link.created"])
    ep = receiver.endpoint("outage")
    parts = urlsplit(wh_settings.database_url)
    proxy = await TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432).start()
    via_proxy = dataclasses.replace(
        wh_settings, database_url=urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
    )
    created: set[str] = set()
    try:
        async with dispatching(via_proxy):
            for i in range(10):
                created.add((await api.post("/links", json={"url": f"https://example.com/o{i}"})).json()["id"])
            await wait_until(lambda: len(ep.received) >= 3, 30, "the first deliveries")
            await proxy.cut()  # mid-stream: claims, fan-out and recording all fail for a while
            for i in range(10, 20):  # written by the API (its own connections) during the outage
                created.add((await api.post("/links", json={"url": f"https://example.com/o{i}"})).json()["id"])
            await asyncio.sleep(1.0)
            await proxy.restore()
            await wait_until(
                lambda: {r.payload["data"]["id"] for r in ep.received} == created, 60, "every event after the outage"
            )
    finally:
        await proxy.close()
    assert len(ep.ids()) == 20
