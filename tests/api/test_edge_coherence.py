"""Cache coherence end to end: what the API commits, a running edge serves within one second."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from h0p_settings import Settings
from tests.api.dns_server import LoopbackDns
from tests.services import free_port, wait_for_port

WITHIN_S = 1.0


@pytest.fixture(scope="module")
async def edge(api_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    """The redirect edge as its own process on the session's Postgres and Redis (click events off)."""
    port = free_port()
    env = {
        **os.environ,
        "H0P_DATABASE_URL": api_settings.database_url,
        "H0P_REDIS_URL": api_settings.redis_url,
        "H0P_REDIRECT_PORT": str(port),
        "H0P_BIND_HOST": "127.0.0.1",
        "H0P_DEFAULT_DOMAIN": api_settings.default_domain,
        "H0P_KAFKA_BOOTSTRAP": api_settings.kafka_bootstrap,
        "H0P_SPOOL_DIR": str(Path(tmp_path_factory.mktemp("edge")) / "spool"),
        "H0P_CLICK_EVENTS": "false",
        "H0P_EDGE_METRICS_PORT": "0",
        "H0P_LOG_LEVEL": "warning",
    }
    code = (
        "from redirect.app import serve; from h0p_settings import load_settings_or_exit; serve(load_settings_or_exit())"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)  # noqa: ASYNC220 - returns at once
    try:
        wait_for_port(port, timeout=30)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as client:
            yield client
    finally:
        proc.terminate()
        proc.wait(timeout=20)


async def served(edge: httpx.AsyncClient, host: str, slug: str, expect: str | None) -> float:
    """Seconds until the edge answers ``slug`` on ``host`` with Location ``expect`` (None: a 404)."""
    start = time.monotonic()
    while True:
        r = await edge.get(f"/{slug}", headers={"host": host})
        location = r.headers.get("location") if r.is_redirect else None
        if (expect is None and r.status_code == 404) or (expect is not None and location == expect):
            return time.monotonic() - start
        if time.monotonic() - start > 5:
            pytest.fail(f"edge still answers {r.status_code} {location!r} for {host}/{slug}, wanted {expect!r}")
        await asyncio.sleep(0.02)


async def test_created_updated_and_deleted_links_reach_a_running_edge_within_a_second(
    api: httpx.AsyncClient, edge: httpx.AsyncClient, api_settings: Settings
) -> None:
    host = api_settings.default_domain
    assert await served(edge, host, "coherent", None) < WITHIN_S  # now negative-cached at the edge
    link = (await api.post("/links", json={"url": "https://example.com/v1", "slug": "coherent"})).json()
    assert await served(edge, host, "coherent", "https://example.com/v1") < WITHIN_S
    for _ in range(3):  # now in the edge's in-process cache
        await edge.get("/coherent", headers={"host": host})
    await api.patch(f"/links/{link['id']}", json={"url": "https://example.com/v2"})
    assert await served(edge, host, "coherent", "https://example.com/v2") < WITHIN_S
    await api.delete(f"/links/{link['id']}")
    assert await served(edge, host, "coherent", None) < WITHIN_S


async def test_a_custom_domain_serves_its_links_only_once_verified(
    api: httpx.AsyncClient, edge: httpx.AsyncClient, dns_server: LoopbackDns
) -> None:
    host = f"brand-{os.getpid()}.example.com"
    domain = (await api.post("/domains", json={"domain": host})).json()
    await api.post("/links", json={"url": "https://example.com/brand", "slug": "promo", "domain": host})
    r = await edge.get("/promo", headers={"host": host})
    assert r.headers.get("location") != "https://example.com/brand"  # unverified: not served
    dns_server.zone.records[f"_h0p-challenge.{host}"] = [domain["records"][0]["value"]]
    assert (await api.post(f"/domains/{domain['id']}/verify")).json()["verified"] is True
    assert await served(edge, host, "promo", "https://example.com/brand") < WITHIN_S
