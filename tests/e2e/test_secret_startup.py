"""`h0p redirect|api|ingest` refuse to serve beyond loopback with the built-in development secret."""

from __future__ import annotations

import asyncio
import signal

import pytest

from h0p_settings import Settings
from tests.e2e.test_cli import H0P, env_for
from tests.services import free_port, wait_for_port


def _dev_secret_env(settings: Settings, bind_host: str, port: int) -> dict[str, str]:
    env = env_for(settings, H0P_BIND_HOST=bind_host, H0P_API_PORT=str(port), H0P_REDIRECT_PORT=str(port))
    env.pop("H0P_SECRET_KEY")  # the built-in development value
    env["H0P_INGEST_METRICS_PORT"] = str(port)
    return env


@pytest.mark.parametrize("service", ["redirect", "api", "ingest"])
async def test_the_development_secret_on_a_public_bind_host_exits_2_naming_the_setting(
    settings: Settings, service: str
) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(H0P), service, env=_dev_secret_env(settings, "0.0.0.0", free_port()),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"h0p {service} started with the development secret on 0.0.0.0")
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 2, err.decode()
    assert out == b""
    assert len(lines) == 1 and "H0P_SECRET_KEY" in lines[0]


@pytest.mark.parametrize("service", ["redirect", "api"])
async def test_the_development_secret_on_loopback_starts(settings: Settings, service: str) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        str(H0P), service, env=_dev_secret_env(settings, "127.0.0.1", port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await asyncio.to_thread(wait_for_port, port, 30.0)
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), timeout=30) in (0, -signal.SIGTERM)
