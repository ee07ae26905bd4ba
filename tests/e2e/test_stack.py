"""`make run`'s orchestrator (deploy/stack.py) as an operator uses it: start, use, Ctrl-C.

Each test runs a whole stack of its own (database, Redis db index, ports, broker port), the way
two stacks run side by side on one machine.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest
import redis.asyncio as aioredis

from api import db
from tests.conftest import PG_BASE
from tests.redis_server import RedisServer
from tests.services import free_port

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "deploy" / "stack.py"
H0P = Path(sys.executable).parent / "h0p"

pytestmark = pytest.mark.slow


class RunningStack:
    """deploy/stack.py in a subprocess, with its stdout and stderr collected as they come."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, str(STACK), "run"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.readers = [
            threading.Thread(target=self._collect, args=(stream, sink), daemon=True)
            for stream, sink in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr))
        ]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _collect(stream: IO[str], sink: list[str]) -> None:
        with stream:
            for line in stream:
                sink.append(line)

    def wait_for(self, text: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.stderr):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not seen; stderr:\n{''.join(self.stderr)}")

    def children(self) -> dict[str, int]:
        """Processes this stack started, by name (broker, redirect, api, ingest, webhooks)."""
        found: dict[str, int] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except (OSError, IndexError, ValueError):
                continue
            if ppid != self.proc.pid:
                continue
            words = [a.decode() for a in argv if a]
            name = "broker" if any(w.endswith("/tansu") for w in words) else words[-1]
            found[name] = int(entry.name)
        return found

    def wait(self, timeout: float = 60.0) -> int:
        """The exit code, once all the output has been collected."""
        code = self.proc.wait(timeout=timeout)
        for reader in self.readers:
            reader.join(timeout=5)
        return code

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait(timeout)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def stack_env(tmp_path: Path, redis_server: RedisServer) -> Iterator[dict[str, str]]:
    """Settings for one stack of its own: nothing shared with the test session or `make run`."""
    suffix = f"{os.getpid()}_{random.randrange(10**6)}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("H0P_")}
    env.update(
        H0P_DATABASE_URL=f"{PG_BASE}/h0p_test_stack_{suffix}",
        # db 1 of the session's own redis-server: the session's settings use db 0
        H0P_REDIS_URL=redis_server.url.rsplit("/", 1)[0] + "/1",
        H0P_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
        H0P_KAFKA_TOPIC=f"clicks-stack-{suffix}",
        H0P_KAFKA_GROUP=f"ingest-stack-{suffix}",
        H0P_REDIRECT_PORT=str(free_port()),
        H0P_API_PORT=str(free_port()),
        H0P_INGEST_METRICS_PORT=str(free_port()),
        H0P_EDGE_METRICS_PORT=str(free_port()),
        H0P_WEBHOOK_METRICS_PORT=str(free_port()),
        H0P_SPOOL_DIR=str(tmp_path / "spool"),
        H0P_FILES_DIR=str(tmp_path / "files"),
        H0P_DEFAULT_DOMAIN="localhost",
    )
    # db 1 is emptied after the test: it must be the stack's alone, found empty (nothing else uses it)
    assert asyncio.run(_keys(env["H0P_REDIS_URL"])) == 0
    yield env
    asyncio.run(db.drop_database(env["H0P_DATABASE_URL"]))
    asyncio.run(_empty(env["H0P_REDIS_URL"]))


async def _keys(url: str) -> int:
    r = aioredis.Redis.from_url(url)
    try:
        return int(await r.dbsize())
    finally:
        await r.aclose()


async def _empty(url: str) -> None:
    # a db of the session's own redis-server, so the next stack starts with nothing cached
    r = aioredis.Redis.from_url(url)
    await r.flushdb()
    await r.aclose()


def test_stack_runs_the_services_prints_the_demo_key_once_and_ctrl_c_stops_all_it_started(
    stack_env: dict[str, str],
) -> None:
    redirect_port, api_port = int(stack_env["H0P_REDIRECT_PORT"]), int(stack_env["H0P_API_PORT"])
    broker_port = int(stack_env["H0P_KAFKA_BOOTSTRAP"].rsplit(":", 1)[1])

    first = RunningStack(stack_env)
    try:
        first.wait_for("running; Ctrl-C stops everything")
        keys = [line.strip() for line in first.stdout if line.strip().startswith("h0p_")]
        assert len(keys) == 1, "".join(first.stdout)
        children = first.children()
        assert set(children) == {"broker", "redirect", "api", "ingest", "webhooks"}

        assert httpx.get(f"http://127.0.0.1:{redirect_port}/healthz").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{api_port}/healthz").status_code == 200
        made = subprocess.run(
            [str(H0P), "links", "create", "https://example.com/stack", "--slug", "stack-test"],
            env=stack_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert made.returncode == 0, made.stderr
        followed = httpx.get(made.stdout.strip(), follow_redirects=False)
        assert followed.status_code == 302
        assert followed.headers["location"] == "https://example.com/stack"
    finally:
        code = first.stop(signal.SIGINT)

    assert code == 0, "".join(first.stderr)
    assert not [name for name, pid in children.items() if alive(pid)]
    assert not [port for port in (redirect_port, api_port, broker_port) if listening(port)]

    second = RunningStack(stack_env)
    try:
        second.wait_for("running; Ctrl-C stops everything")
    finally:
        code = second.stop(signal.SIGTERM)
    assert code == 0
    assert not [line for line in second.stdout if "h0p_" in line], "a key must be printed only once"
    assert any("demo workspace exists" in line for line in second.stderr)


def test_stack_stops_everything_with_a_clear_message_when_a_service_dies(stack_env: dict[str, str]) -> None:
    stack = RunningStack(stack_env)
    try:
        stack.wait_for("running; Ctrl-C stops everything")
        children = stack.children()
        os.kill(children["ingest"], signal.SIGKILL)
        code = stack.wait()
    finally:
        stack.stop()

    assert code == 1
    assert any("ingest exited with code -9: stopping the stack" in line for line in stack.stderr)
    assert not [name for name, pid in children.items() if alive(pid)]


def test_stack_refuses_a_port_in_use_and_starts_nothing(stack_env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {**stack_env, "H0P_REDIRECT_PORT": str(taken.getsockname()[1])}
        stack = RunningStack(env)
        code = stack.wait()

    assert code == 1
    assert any("H0P_REDIRECT_PORT" in line and "already in use" in line for line in stack.stderr)
    broker_port = int(env["H0P_KAFKA_BOOTSTRAP"].rsplit(":", 1)[1])
    assert not listening(broker_port)


def test_stack_with_a_bad_setting_says_so_in_one_line(stack_env: dict[str, str]) -> None:
    stack = RunningStack({**stack_env, "H0P_REDIS_URL": "http://nope"})
    code = stack.wait()

    assert code == 2
    assert [line for line in stack.stderr if line.strip()] == [
        "stack: configuration error: H0P_REDIS_URL='http://nope': expected a URL starting with "
        "redis:// or rediss:// or unix://\n"
    ]
