"""Webhooks benchmark: deliveries per second of one ``h0p webhooks``, and link.clicked latency under edge load.

    python -m loadtests.webhooks_bench [--deliveries 20000] [--endpoints 20] [--duration 30] [--links 100000]
                                       [--only throughput|latency]

Throughput: a database of its own with ``--endpoints`` webhooks (paths of one local receiver) and
``--deliveries`` pending deliveries (1 KiB bodies), then one ``h0p webhooks`` process; deliveries/s
= deliveries / (last one recorded delivered - process start). The receiver answers 204 without
verifying (the tests verify with ``standardwebhooks``); it runs in a thread of this process.

Latency: the e2e bench's setup (one ``h0p redirect`` worker pinned to core 0, wrk -t1 on core 1
walking every cached link, one ``h0p ingest``) plus one webhook subscribed to ``link.clicked`` of
the probe link (in the same workspace as the load's links, so ingest writes an event for every
click and fan-out reads past them) and one ``h0p webhooks`` process. A probe sends
``GET /probe?utm_content=<n>`` every 50 ms; latency = arrival of the delivery whose click carries
``n`` at the receiver - moment the request was sent. Prints a markdown section on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import orjson

from api import db
from api.ids import new_id
from loadtests.e2e_bench import PROBE_DELAY_S, PROBE_LINK_ID, PROBE_SLUG, SITE, Probe, drain_warm_up, send_probes
from loadtests.edge_bench import (
    RUN_ID,
    WRK_SCRIPT,
    Site,
    base_env,
    edge,
    h0p_command,
    load_links,
    pick_redis_db,
    remove_redis_keys,
    run_wrk,
    stop_process,
)  # fmt: skip
from loadtests.wrk import WrkResult
from tests.services import Broker, free_port
from webhooks.signing import new_secret

# The latency part uses the e2e bench's site (its probe and drain helpers address it); the run id
# (this process's pid) keeps it apart from a concurrent e2e bench.
TOPIC = f"bench-wh-clicks-{RUN_ID}"
TARGET_RATE = 2000.0
TARGET_P99_S = 3.0
DRAIN_LIMIT_S = 120.0
_RESPONSE = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n"


def log(message: str) -> None:
    print(f"webhooks_bench: {message}", file=sys.stderr, flush=True)


class _ReceiverProtocol(asyncio.Protocol):
    """Minimal HTTP/1.1 keep-alive server: reads requests (Content-Length bodies), answers 204."""

    def __init__(self, on_body: Callable[[bytes], None]) -> None:
        self.on_body = on_body
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            for line in bytes(self.buffer[:end]).split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            self.on_body(body)
            assert self.transport is not None
            self.transport.write(_RESPONSE)


@dataclass
class Receiver:
    """The receiver, on its own event loop in a thread: counts deliveries, calls ``on_body``."""

    on_body: Callable[[bytes], None] = lambda body: None
    port: int = field(default_factory=free_port)
    received: int = 0

    @contextmanager
    def running(self) -> Iterator[Receiver]:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def count(body: bytes) -> None:
            self.received += 1
            self.on_body(body)

        async def serve() -> asyncio.Server:
            return await loop.create_server(lambda: _ReceiverProtocol(count), "127.0.0.1", self.port, backlog=1024)

        def run() -> None:
            asyncio.set_event_loop(loop)
            server = loop.run_until_complete(serve())
            ready.set()
            loop.run_forever()
            server.close()
            loop.run_until_complete(server.wait_closed())
            loop.close()

        thread = threading.Thread(target=run, name="bench-receiver", daemon=True)
        thread.start()
        ready.wait(10)
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)


@contextmanager
def delivery_process(env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log_path.open("wb") as out:
        proc = subprocess.Popen(h0p_command("webhooks"), env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            stop_process(proc, timeout=30)


def webhook_env(site: Site, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("H0P_")}
    env.update(
        H0P_DATABASE_URL=site.database_url,
        H0P_ALLOW_PRIVATE_TARGETS="true",
        H0P_WEBHOOK_METRICS_PORT="0",
        H0P_LOG_LEVEL="warning",
        **extra,
    )
    return env


async def insert_webhooks(
    conn: asyncpg.Connection, workspace_id: str, urls: list[str], link_ids: list[str] | None = None
) -> list[str]:
    # includeBots: the probes come from a script (httpx's user agent), which ingest flags as a bot
    rows = [(new_id("wh"), workspace_id, url, ["link.clicked"], link_ids or [], new_secret()) for url in urls]
    await conn.executemany(
        "INSERT INTO webhooks (id, workspace_id, url, events, link_ids, secret, include_bots)"
        " VALUES ($1, $2, $3, $4, $5, $6, true)",
        rows,
    )
    return [r[0] for r in rows]


# --- throughput ----------------------------------------------------------------------------


@dataclass
class Throughput:
    deliveries: int
    endpoints: int
    seconds: float | None
    delivered: int
    received: int
    steady: float  # deliveries/s from the first one recorded to the last (start-up left out)
    cpu_s: float  # CPU seconds the delivery process used (start-up included)

    @property
    def per_cpu_second(self) -> float:
        return self.delivered / self.cpu_s if self.cpu_s else 0.0

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds if self.seconds else 0.0


async def prepare_deliveries(site: Site, receiver_port: int, deliveries: int, endpoints: int) -> None:
    await db.migrate(site.database_url)
    conn = await asyncpg.connect(site.database_url)
    try:
        await conn.execute("INSERT INTO workspaces (id, name) VALUES ($1, $2)", site.workspace_id, site.name)
        urls = [f"http://127.0.0.1:{receiver_port}/e{i}" for i in range(endpoints)]
        hooks = await insert_webhooks(conn, site.workspace_id, urls)
        body = orjson.dumps({"type": "link.clicked", "timestamp": "2030-01-31T12:00:00.000Z",
                             "data": {"pad": "x" * 900}}).decode()  # fmt: skip
        now = datetime.now(UTC)
        rows = [(new_id("msg"), hooks[i % endpoints], "link.clicked", body, now) for i in range(deliveries)]
        await conn.copy_records_to_table(
            "webhook_deliveries", records=rows, columns=("id", "webhook_id", "event_type", "body", "next_attempt_at")
        )
    finally:
        await conn.close()


async def wait_delivered(site: Site, total: int, started: float) -> tuple[int, float | None, float]:
    """(delivered, seconds from the process start to the last, steady deliveries/s after the first)."""
    conn = await asyncpg.connect(site.database_url)
    try:
        deadline = time.monotonic() + DRAIN_LIMIT_S
        delivered = 0
        first: tuple[float, int] | None = None
        while time.monotonic() < deadline:
            delivered = int(await conn.fetchval("SELECT count(*) FROM webhook_deliveries WHERE state = 'delivered'"))
            now = time.monotonic()
            if delivered and first is None:
                first = (now, delivered)
            if delivered >= total:
                steady = (delivered - first[1]) / (now - first[0]) if first and now > first[0] else 0.0
                return delivered, now - started, steady
            await asyncio.sleep(0.05)
        return delivered, None, 0.0
    finally:
        await conn.close()


def measure_throughput(args: argparse.Namespace, tmp: Path, stack: ExitStack) -> Throughput:
    site = Site("whrate")
    receiver = stack.enter_context(Receiver().running())
    stack.callback(lambda: asyncio.run(db.drop_database(site.database_url)))
    log(f"inserting {args.deliveries:,} deliveries for {args.endpoints} endpoints")
    asyncio.run(prepare_deliveries(site, receiver.port, args.deliveries, args.endpoints))
    started = time.monotonic()
    with delivery_process(webhook_env(site), tmp / "webhooks-rate.log") as proc:
        delivered, seconds, steady = asyncio.run(wait_delivered(site, args.deliveries, started))
        cpu_s = cpu_seconds(proc.pid)
        if proc.poll() is not None:
            log(f"h0p webhooks exited: {(tmp / 'webhooks-rate.log').read_text()[-2000:]}")
    return Throughput(args.deliveries, args.endpoints, seconds, delivered, receiver.received, steady, cpu_s)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process (/proc), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- latency -------------------------------------------------------------------------------


@dataclass
class Latency:
    result: WrkResult
    probes: list[Probe]
    arrivals: int = 0  # deliveries received (the probe's clicks only: the webhook is scoped to it)
    notes: list[str] = field(default_factory=list)


def measure_latency(args: argparse.Namespace, tmp: Path, stack: ExitStack) -> Latency:
    probes: list[Probe] = []

    def on_body(body: bytes) -> None:
        seen = time.monotonic()
        try:
            n = orjson.loads(body)["data"]["click"]["utm_content"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        if n.isdigit() and int(n) < len(probes) and probes[int(n)].seen is None:
            probes[int(n)].seen = seen

    receiver = stack.enter_context(Receiver(on_body=on_body).running())
    script = tmp / "walk.lua"
    script.write_text(WRK_SCRIPT)
    redis_db = asyncio.run(pick_redis_db())
    broker = Broker().start()
    stack.callback(broker.stop)
    assert broker.proc is not None
    subprocess.run(["taskset", "-apc", "1", str(broker.proc.pid)], check=True, stdout=subprocess.DEVNULL)
    stack.callback(lambda: asyncio.run(db.drop_database(SITE.database_url)))
    stack.callback(lambda: asyncio.run(remove_redis_keys(redis_db, SITE)))
    log(f"loading {args.links:,} links")
    asyncio.run(load_links(redis_db, args.links, SITE, extra=[(PROBE_LINK_ID, PROBE_SLUG, "https://example.com/p")]))

    async def subscribe() -> None:
        conn = await asyncpg.connect(SITE.database_url)
        try:
            url = f"http://127.0.0.1:{receiver.port}/probe"
            await insert_webhooks(conn, SITE.workspace_id, [url], link_ids=[PROBE_LINK_ID])
        finally:
            await conn.close()

    asyncio.run(subscribe())
    port = free_port()
    env = base_env(SITE, broker, redis_db, TOPIC, H0P_REDIRECT_PORT=str(port), H0P_SPOOL_DIR=str(tmp / "spool"),
                   H0P_CACHE_SIZE=str(max(100_000, args.links + 1000)))  # fmt: skip
    stack.enter_context(edge(env, port, SITE))
    ingest_env = base_env(SITE, broker, redis_db, TOPIC, H0P_KAFKA_GROUP=f"bench-wh-ingest-{RUN_ID}",
                          H0P_KAFKA_DEAD_LETTER_TOPIC=f"{TOPIC}-dead-letter", H0P_INGEST_METRICS_PORT="0",
                          H0P_INGEST_SESSION_TIMEOUT_MS="6000")  # fmt: skip
    log_path = tmp / "ingest.log"
    out = stack.enter_context(log_path.open("wb"))
    ingest_proc = subprocess.Popen(h0p_command("ingest"), env=ingest_env, stdout=out, stderr=subprocess.STDOUT)
    stack.callback(lambda: stop_process(ingest_proc, timeout=60))
    sender = stack.enter_context(delivery_process(webhook_env(SITE), tmp / "webhooks.log"))
    sent = 0
    while sent < args.links:
        sent += run_wrk(script, port, 3, args.connections, args.links, offset=sent, site=SITE).requests
    log("warm-up done; waiting for ingest to store it")
    asyncio.run(drain_warm_up(port))
    log(f"measuring {args.duration:g}s")

    async def run() -> WrkResult:
        started = time.monotonic()
        load = asyncio.to_thread(run_wrk, script, port, args.duration, args.connections, args.links, 0, SITE)
        sending = asyncio.create_task(send_probes(port, probes, started + PROBE_DELAY_S, started + args.duration))
        result = await load
        await sending
        deadline = time.monotonic() + DRAIN_LIMIT_S
        while time.monotonic() < deadline:  # polled: arrivals are marked by the receiver's thread
            if all(p.seen is not None for p in probes):
                break
            await asyncio.sleep(0.1)
        return result

    result = asyncio.run(run())
    run_latency = Latency(result, probes, receiver.received)

    async def leftovers() -> str:
        conn = await asyncpg.connect(SITE.database_url)
        try:
            events = await conn.fetchval("SELECT count(*) FROM webhook_events")
            states = await conn.fetch("SELECT state, count(*) FROM webhook_deliveries GROUP BY 1")
            probe_clicks = await conn.fetchval("SELECT count(*) FROM clicks WHERE link_id = $1", PROBE_LINK_ID)
            return (
                f"outbox events left: {events}; deliveries: {dict((r[0], r[1]) for r in states)}; "
                f"probe clicks stored: {probe_clicks}"
            )
        finally:
            await conn.close()

    run_latency.notes.append(f"\nDeliveries received: {receiver.received:,}; {asyncio.run(leftovers())}.")
    for name, proc in (("ingest", ingest_proc), ("webhooks", sender)):
        if proc.poll() is not None:
            run_latency.notes.append(f"\n**{name} exited during the run** (exit code {proc.returncode}).")
    return run_latency


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def markdown(throughput: Throughput | None, latency: Latency | None, args: argparse.Namespace) -> str:
    lines = ["## Webhooks", ""]
    if throughput is not None:
        t = throughput
        met = t.seconds is not None and t.steady >= TARGET_RATE
        seconds = "not within the limit" if t.seconds is None else f"{t.seconds:.1f} s"
        lines += [
            f"Throughput: one `h0p webhooks` process (unpinned; H0P_WEBHOOK_ENDPOINT_CONCURRENCY default 10, "
            f"{t.endpoints} endpoints on one local receiver answering 204) sends {t.deliveries:,} pending "
            "deliveries (1 KiB bodies, signed); time from the process start to the last one recorded delivered.",
            "",
            "| deliveries | time | deliveries/s (from start / steady) | per CPU-second of the process | received |",
            "|---:|---:|---:|---:|---:|",
            f"| {t.delivered:,} / {t.deliveries:,} | {seconds} | {t.rate:,.0f} / {t.steady:,.0f} | "
            f"{t.per_cpu_second:,.0f} | {t.received:,} |",
            "",
            f"Target ≥ {TARGET_RATE:,.0f}/s: **{'met ✅' if met else 'not met ❌'}**.",
            "",
        ]
    if latency is not None:
        seen = [p.latency for p in latency.probes if p.latency is not None]
        missing = len(latency.probes) - len(seen)
        r = latency.result
        lines += [
            f"link.clicked latency: the e2e bench's load ({args.links:,} links, one `h0p redirect` worker on core 0, "
            f"wrk -t1 -c{args.connections} on core 1, {args.duration:g} s) with one `h0p ingest` and one "
            "`h0p webhooks`; one webhook subscribed to `link.clicked` of the probe link (bots included: the probe is a "
            "script), in the load's workspace "
            "(ingest writes an event for every click; fan-out skips those out of scope). Latency = arrival at the "
            "receiver - the probe's redirect request sent.",
            "",
            "| edge requests/s | probes | never arrived | p50 ms | p99 ms | max ms |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        if seen:
            p50, p99, top = percentile(seen, 50) * 1000, percentile(seen, 99) * 1000, max(seen) * 1000
            lines.append(f"| {r.rps:,.0f} | {len(latency.probes)} | {missing} | {p50:,.0f} | {p99:,.0f} | {top:,.0f} |")
            met = not missing and p99 / 1000 < TARGET_P99_S
            lines += ["", f"Target p99 < {TARGET_P99_S:g} s: **{'met ✅' if met else 'not met ❌'}**."]
        else:
            lines.append(f"| {r.rps:,.0f} | {len(latency.probes)} | {missing} | - | - | - |")
        lines += latency.notes
    lines += [f"\n1-minute load average when the run ended: {os.getloadavg()[0]:.1f}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deliveries", type=int, default=20_000)
    parser.add_argument("--endpoints", type=int, default=20)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of edge load (latency)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--links", type=int, default=100_000)
    parser.add_argument("--only", choices=("throughput", "latency"))
    args = parser.parse_args(argv)
    throughput = latency = None
    with tempfile.TemporaryDirectory(prefix="h0p-webhooks-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if args.only != "latency":
            with ExitStack() as stack:
                throughput = measure_throughput(args, tmp, stack)
        if args.only != "throughput":
            for tool in ("wrk", "taskset"):
                if not shutil.which(tool):
                    log(f"{tool} is not installed: run `make bench` (it installs wrk)")
                    return 2
            with ExitStack() as stack:
                latency = measure_latency(args, tmp, stack)
    print(markdown(throughput, latency, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
