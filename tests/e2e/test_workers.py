"""`h0p redirect --workers N` and `h0p api --workers N`: real processes sharing a loopback port.

Which worker answered is read from the supervisor's /metrics (each sample labelled with its
worker), the workers' pids from /proc: nothing in the edge exists for these tests.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from h0p_settings import Settings, SettingsError, load_settings
from redirect.record import LINK_QUERY, encode, link_key, link_record_from_row
from tests.redirect.conftest import read_events, unique, write_link
from tests.services import Broker, free_port

H0P = Path(sys.executable).parent / "h0p"

pytestmark = pytest.mark.slow


class Service:
    """``h0p redirect|api --workers N`` in a subprocess, its stderr collected as it comes."""

    def __init__(self, service: str, workers: int, env: dict[str, str]) -> None:
        self.stderr: list[str] = []
        self.proc = subprocess.Popen(
            [str(H0P), service, "--workers", str(workers)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.reader = threading.Thread(target=self._collect, daemon=True)
        self.reader.start()

    def _collect(self) -> None:
        assert self.proc.stderr is not None
        with self.proc.stderr as stream:
            for line in stream:
                self.stderr.append(line)

    def workers(self) -> dict[int, int]:
        """Worker index to pid, from /proc: the supervisor's children and their ``--worker-index``."""
        found: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                argv = [a.decode() for a in (entry / "cmdline").read_bytes().split(b"\0") if a]
            except (OSError, IndexError, ValueError):
                continue
            if ppid == self.proc.pid and "--worker-index" in argv:
                found[int(argv[argv.index("--worker-index") + 1])] = int(entry.name)
        return found

    @staticmethod
    def worker_dir(pid: int) -> Path:
        """The supervisor's private directory, as given to a worker."""
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        return Path(argv[argv.index("--worker-dir") + 1])

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.reader.join(timeout=5)

    def kill(self) -> None:
        """Last resort after a failed test: the supervisor and whatever workers are left."""
        pids = self.workers()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in pids.values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Edge:
    """Requests to the edge's port, each on a connection of its own, and its /metrics."""

    def __init__(self, service: Service, port: int, metrics_port: int, topic: str) -> None:
        self.service = service
        self.topic = topic
        self.url = f"http://127.0.0.1:{port}"
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"

    async def get(self, path: str) -> httpx.Response:
        # A client per request: a new connection, which the kernel hands to either worker.
        async with httpx.AsyncClient(base_url=self.url) as client:
            return await client.get(path, headers={"host": "localhost"})

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        async with httpx.AsyncClient() as client:
            answer = await client.get(self.metrics_url)
        assert answer.status_code == 200, answer.text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.text)
            for s in family.samples
        }

    async def redirects(self) -> dict[str, float]:
        """Redirects answered so far, by worker index."""
        return {
            dict(labels)["worker"]: value
            for (name, labels), value in (await self.metrics()).items()
            if name == "h0p_edge_requests_total" and ("outcome", "redirect") in labels
        }

    async def sample(self, name: str, **labels: str) -> float:
        return (await self.metrics()).get((name, tuple(sorted(labels.items()))), 0.0)

    async def workers_up(self) -> float:
        return (await self.metrics()).get(("h0p_edge_workers_up", ()), 0.0)

    async def ready(self, workers: int = 2) -> None:
        async def up() -> bool:
            try:
                return await self.workers_up() == workers
            except httpx.HTTPError:
                return False

        await wait_until(up, what=f"{workers} workers answering the supervisor's scrape")

    async def clicks_on_every_worker(self, slug: str, workers: int = 2, most: int = 200) -> int:
        """Redirects on new connections until each worker answered one more than before the call (at most
        ``most``); how many sent."""
        start = await self.redirects()
        for sent in range(1, most + 1):
            answer = await self.get(f"/{slug}")
            assert answer.status_code == 302, answer.text
            if sent % 5 == 0:
                counts = await self.redirects()
                if len(counts) == workers and all(n > start.get(w, 0) for w, n in counts.items()):
                    return sent
        raise AssertionError(f"{most} connections did not reach all {workers} workers: {await self.redirects()}")


@pytest.fixture
async def workspace(pool: asyncpg.Pool) -> str:
    wid = unique("ws_")
    await pool.execute("INSERT INTO workspaces (id, name) VALUES ($1, $2)", wid, wid)
    return wid


def edge_env(settings: Settings, tmp_path: Path, broker: Broker, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("H0P_")}
    env.update(
        H0P_DATABASE_URL=settings.database_url,
        H0P_REDIS_URL=settings.redis_url,
        H0P_KAFKA_BOOTSTRAP=broker.bootstrap,
        H0P_KAFKA_TOPIC=unique("clicks-workers-"),
        H0P_SPOOL_DIR=str(tmp_path / "spool"),
        H0P_SECRET_KEY=settings.secret_key,
        H0P_REDIRECT_PORT=str(free_port()),
        H0P_EDGE_METRICS_PORT=str(free_port()),
        H0P_EVENT_LINGER_MS="5",
        H0P_LOG_LEVEL="warning",
    )
    env.update(extra)
    return env


@contextmanager
def running(service: str, workers: int, env: dict[str, str]) -> Iterator[Service]:
    started = Service(service, workers, env)
    try:
        yield started
    finally:
        if started.proc.poll() is None:
            started.kill()


@pytest.fixture
async def served_edge(
    settings: Settings, broker: Broker, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Edge]]]:
    """Starts ``h0p redirect --workers 2`` with the given settings; stopped (or killed) afterwards."""
    services: list[Service] = []

    async def start(on: Broker = broker, **extra: str) -> Edge:
        env = edge_env(settings, tmp_path, on, **extra)
        service = Service("redirect", 2, env)
        services.append(service)
        edge = Edge(service, int(env["H0P_REDIRECT_PORT"]), int(env["H0P_EDGE_METRICS_PORT"]), env["H0P_KAFKA_TOPIC"])
        await edge.ready()
        return edge

    yield start
    for service in services:
        if service.proc.poll() is None:
            service.kill()


async def test_two_workers_both_answer_and_a_change_reaches_every_workers_cache(
    served_edge: Callable[..., Awaitable[Edge]],
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    workspace: str,
    settings: Settings,
) -> None:
    # Only an invalidation can make a cached record change within the test: the cache keeps it an hour.
    edge = await served_edge(H0P_CACHE_TTL_S="3600")
    slug = unique("w")
    await write_link(pool, redis, workspace, domain="localhost", slug=slug, url="https://example.com/before")
    assert len(edge.service.workers()) == 2

    await edge.clicks_on_every_worker(slug)  # both workers now hold the record in their own cache

    # What the API does on an update: the row, then the record in Redis, then the invalidation.
    await pool.execute("UPDATE links SET url = 'https://example.com/after' WHERE slug = $1", slug)
    record = link_record_from_row(await pool.fetchrow(LINK_QUERY, "localhost", slug))
    await redis.set(link_key("localhost", slug), encode(record))
    await redis.publish(settings.invalidation_channel, link_key("localhost", slug))

    async def every_worker_forgot() -> bool:
        answers = [await edge.get(f"/{slug}") for _ in range(20)]
        return all(a.headers["location"] == "https://example.com/after" for a in answers)

    await wait_until(every_worker_forgot, what="20 new connections all redirected to the changed URL")
    assert edge.service.stop() == 0


async def replaced(edge: Edge, index: int, old_pid: int) -> int:
    """The pid of the worker started in place of ``old_pid``, once it answers the supervisor's scrape."""

    async def back() -> bool:
        pid = edge.service.workers().get(index)
        return pid is not None and pid != old_pid and await edge.workers_up() == 2

    await wait_until(back, what=f"worker {index} replaced and answering")
    return edge.service.workers()[index]


async def test_a_killed_worker_is_replaced_and_every_click_answered_around_it_arrives(
    served_edge: Callable[..., Awaitable[Edge]], pool: asyncpg.Pool, redis: aioredis.Redis, workspace: str,
    broker: Broker,
) -> None:  # fmt: skip
    edge = await served_edge()
    slug = unique("k")
    await write_link(pool, redis, workspace, domain="localhost", slug=slug, url="https://example.com/k")
    before = await edge.clicks_on_every_worker(slug)
    # Delivered before the kill: a SIGKILL can only lose what a worker still holds in memory.
    assert len(await read_events(broker.bootstrap, edge.topic, before, settle=0.5)) == before

    victim = edge.service.workers()[0]
    os.kill(victim, signal.SIGKILL)
    await wait_until(lambda: asyncio.sleep(0, not alive(victim)), what="the killed worker gone")
    # Its socket went with it: new connections go to the other worker while it is replaced.
    during = [await edge.get(f"/{slug}") for _ in range(10)]
    assert [a.status_code for a in during] == [302] * 10
    await replaced(edge, 0, victim)
    after = [await edge.get(f"/{slug}") for _ in range(30)]
    assert [a.status_code for a in after] == [302] * 30
    assert await edge.sample("h0p_edge_worker_restarts_total", worker="0") == 1
    assert await edge.sample("h0p_edge_requests_total", outcome="redirect", worker="0") > 0, "the new worker serves"
    assert any("worker 0" in line and "SIGKILL" in line and "restarting" in line for line in edge.service.stderr)

    events = await read_events(broker.bootstrap, edge.topic, before + 40)
    assert len({e.id for e in events}) == before + 40
    assert edge.service.stop() == 0


async def test_a_sigterm_flushes_that_workers_events_and_stopping_the_supervisor_flushes_every_workers(
    served_edge: Callable[..., Awaitable[Edge]], pool: asyncpg.Pool, redis: aioredis.Redis, workspace: str,
    broker: Broker, tmp_path: Path,
) -> None:  # fmt: skip
    # Events wait a minute in each worker's memory: only a stop can send them within the test.
    edge = await served_edge(H0P_EVENT_LINGER_MS="60000")
    slug = unique("t")
    await write_link(pool, redis, workspace, domain="localhost", slug=slug, url="https://example.com/t")
    sent = await edge.clicks_on_every_worker(slug)
    answered = await edge.redirects()
    pids = edge.service.workers()

    os.kill(pids[1], signal.SIGTERM)
    flushed = await read_events(broker.bootstrap, edge.topic, int(answered["1"]), settle=2.0)
    assert len(flushed) == answered["1"], "worker 1's events, and only those: worker 0 still holds its own"
    new_pid = await replaced(edge, 1, pids[1])
    more = [await edge.get(f"/{slug}") for _ in range(10)]
    assert [a.status_code for a in more] == [302] * 10

    assert edge.service.stop() == 0
    events = await read_events(broker.bootstrap, edge.topic, sent + 10)
    assert len({e.id for e in events}) == len(events) == sent + 10
    assert not [pid for pid in (pids[0], new_pid) if alive(pid)]
    assert not list((tmp_path / "spool").glob("*.jsonl")), "the broker was up: nothing left in the spool"


async def test_workers_of_a_killed_supervisor_stop_and_flush_their_events(
    served_edge: Callable[..., Awaitable[Edge]], pool: asyncpg.Pool, redis: aioredis.Redis, workspace: str,
    broker: Broker,
) -> None:  # fmt: skip
    edge = await served_edge(H0P_EVENT_LINGER_MS="60000")  # the events wait in memory until a stop
    slug = unique("s")
    await write_link(pool, redis, workspace, domain="localhost", slug=slug, url="https://example.com/s")
    sent = await edge.clicks_on_every_worker(slug)
    pids = edge.service.workers()
    run_dir = edge.service.worker_dir(pids[0])

    edge.service.proc.kill()  # nobody left to forward a SIGTERM: the kernel sends it (PR_SET_PDEATHSIG)
    edge.service.proc.wait()
    try:
        await wait_until(lambda: asyncio.sleep(0, not any(alive(p) for p in pids.values())), what="workers gone")
    finally:
        for pid in pids.values():  # if they outlived it, this test must not leave them running
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(run_dir, ignore_errors=True)  # a killed supervisor cannot remove its directory
    events = await read_events(broker.bootstrap, edge.topic, sent)
    assert len({e.id for e in events}) == sent


async def test_clicks_spooled_by_a_worker_killed_during_a_broker_outage_are_replayed(
    served_edge: Callable[..., Awaitable[Edge]], pool: asyncpg.Pool, redis: aioredis.Redis, workspace: str,
) -> None:  # fmt: skip
    own = Broker().start()  # paused below: the session's broker serves other tests
    try:
        edge = await served_edge(own)
        slug = unique("o")
        await write_link(pool, redis, workspace, domain="localhost", slug=slug, url="https://example.com/o")
        before = await edge.clicks_on_every_worker(slug)
        assert len(await read_events(own.bootstrap, edge.topic, before, settle=0.5)) == before

        own.pause()
        answered_before = await edge.redirects()
        during = await edge.clicks_on_every_worker(slug)  # until each worker has answered one more
        answered = await edge.redirects()
        assert all(answered[w] > answered_before[w] for w in ("0", "1"))

        async def spooled() -> bool:
            total = sum([await edge.sample("h0p_edge_events_total", state="spooled", worker=w) for w in ("0", "1")])
            return total == during

        await wait_until(spooled, what="every click of the outage in the spool")
        victim = edge.service.workers()[0]
        os.kill(victim, signal.SIGKILL)  # its spool file is on disk: the other worker or its successor replays it
        await wait_until(lambda: asyncio.sleep(0, not alive(victim)), what="the killed worker gone")
        own.resume()

        events = await read_events(own.bootstrap, edge.topic, before + during, timeout=60)
        assert len({e.id for e in events}) == before + during
        assert edge.service.stop() == 0
    finally:
        own.stop()


def test_the_edge_refuses_a_port_already_served_instead_of_sharing_it(
    settings: Settings, broker: Broker, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # what a running group of workers has
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = edge_env(settings, tmp_path, broker, H0P_REDIRECT_PORT=str(port))
        with running("redirect", 2, env) as service:
            code = service.proc.wait(timeout=60)
            service.reader.join(timeout=5)
            assert not service.workers()
    assert code == 1
    assert any(f"cannot listen on 127.0.0.1:{port}" in line for line in service.stderr), service.stderr


def test_api_workers_share_the_port_and_stop_cleanly(settings: Settings, broker: Broker, tmp_path: Path) -> None:
    port = free_port()
    env = edge_env(settings, tmp_path, broker, H0P_API_PORT=str(port))
    with running("api", 2, env) as service:
        deadline = time.monotonic() + 60
        while len(service.workers()) < 2 or not _answers(f"http://127.0.0.1:{port}/healthz"):
            assert time.monotonic() < deadline, "".join(service.stderr)
            time.sleep(0.2)
        pids = service.workers()
        assert [httpx.get(f"http://127.0.0.1:{port}/healthz").status_code for _ in range(10)] == [200] * 10
        assert service.stop() == 0, "".join(service.stderr)
    assert not [pid for pid in pids.values() if alive(pid)]


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_workers_must_be_a_positive_number(settings: Settings, broker: Broker, tmp_path: Path) -> None:
    env = edge_env(settings, tmp_path, broker)
    result = subprocess.run([str(H0P), "redirect", "--workers", "0"], env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert "--workers: '0': expected a number from 1 to 1024" in result.stderr
    with pytest.raises(SettingsError, match="H0P_EDGE_WORKERS='0'"):
        load_settings({"H0P_EDGE_WORKERS": "0"})
    assert load_settings({}).edge_workers == len(os.sched_getaffinity(0))  # no cgroup CPU quota here
    assert load_settings({}).api_workers == 1
