"""Two API processes behind one address behave as one: the rate limit lives in Redis, not in a process.

Also: an API process's ``/metrics`` is served on its own port (``H0P_API_METRICS_PORT``),
never on the public API port.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from h0p_settings import Settings
from tests.e2e.test_cli import H0P, env_for, h0p
from tests.services import free_port, wait_for_port


@asynccontextmanager
async def api_process(env: dict[str, str]) -> AsyncIterator[str]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        str(H0P), "api", env={**env, "H0P_API_PORT": str(port)},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await asyncio.to_thread(wait_for_port, port, 30.0)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), timeout=30) in (0, -signal.SIGTERM)


async def _minute_has_room(seconds: float) -> None:
    # The limit below is per minute: start early in a minute so that the window cannot turn over
    # between the first request and the last (it would forget the count and the test would lie).
    into_minute = time.time() % 60
    if into_minute > 60 - seconds:
        await asyncio.sleep(60 - into_minute + 0.1)


async def test_two_api_processes_share_one_rate_limit(settings: Settings) -> None:
    env = env_for(
        settings, H0P_RATE_LIMIT_PER_SECOND="100", H0P_RATE_LIMIT_PER_MINUTE="4",
        H0P_WORKSPACE_RATE_LIMIT_PER_SECOND="100", H0P_WORKSPACE_RATE_LIMIT_PER_MINUTE="100",
    )  # fmt: skip
    made = await h0p("keys", "create", "--workspace", f"rl-{random.randrange(10**9)}", "--create-workspace", env=env)
    assert made.code == 0, made.stderr
    headers = {"x-api-key": made.stdout.strip()}
    async with api_process(env) as first, api_process(env) as second, httpx.AsyncClient(headers=headers) as client:
        await _minute_has_room(20)
        codes = []
        for base in (first, second, first, second, first, second):  # a load balancer's round robin
            codes.append((await client.get(f"{base}/links")).status_code)
    # Counted per process, each would allow all 3 of its requests; counted in Redis, 4 pass in all.
    assert codes == [200, 200, 200, 200, 429, 429]


async def test_api_metrics_are_served_on_their_own_port_not_the_public_one(settings: Settings) -> None:
    metrics_port = free_port()
    env = env_for(settings, H0P_API_METRICS_PORT=str(metrics_port), H0P_READ_DATABASE_URL=settings.database_url)
    async with api_process(env) as base, httpx.AsyncClient() as client:
        public = await client.get(f"{base}/metrics")
        await asyncio.to_thread(wait_for_port, metrics_port, 10.0)
        private = await client.get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert public.status_code == 404
    assert private.status_code == 200
    assert "h0p_read_replica_up 1.0" in private.text
    assert "h0p_read_replica_standby 0.0" in private.text  # this "replica" is the primary itself, and says so
