"""End-to-end benchmark: from a redirect sent to the edge to its row visible in ``clicks``, under load.

    python -m loadtests.e2e_bench [--duration 30] [--connections 64] [--links 100000]

The edge bench's setup (one ``h0p redirect`` worker pinned to core 0, wrk -t1 on core 1 walking
every cached link, click events on) plus one ``h0p ingest`` process, unpinned. While wrk runs, a
probe sends ``GET /probe?utm_content=<n>`` every 50 ms on its own keep-alive connection and a
poller looks for each probe's row in Postgres every 25 ms: latency = first seen - sent.

Everything is its own: a database (h0p_bench_e2e_<pid>, dropped afterwards), a Redis db index with
keys under its own domain (removed afterwards), a Tansu broker on a free port, its own topic and
consumer group. Prints a markdown section on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

from api import db
from loadtests.edge_bench import (
    CLIENT_CORE,
    RUN_ID,
    SERVER_CORE,
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
from loadtests.ingest_bench import STORED_SQL
from loadtests.wrk import WrkResult
from tests.services import Broker, free_port

SITE = Site("e2e")  # not edge_bench's database and domain: a run of each at once must not collide
TOPIC = f"bench-e2e-clicks-{RUN_ID}"
PROBE_SLUG = "probe"
PROBE_LINK_ID = "link_E2EPROBE000000000000000000"
PROBE_EVERY_S = 0.05
POLL_EVERY_S = 0.025
PROBE_DELAY_S = 0.5  # wrk formats its requests in init(): probes start once the load has
DRAIN_LIMIT_S = 120.0
TARGET_P99_S = 2.0
WINDOW_S = 5.0
EVENTS_METRIC = re.compile(r'^h0p_edge_events_total\{state="(\w+)"\} (\S+)$', re.MULTILINE)


def log(message: str) -> None:
    print(f"e2e_bench: {message}", file=sys.stderr, flush=True)


@dataclass
class Probe:
    n: int
    sent: float  # time.monotonic() just before the request is written
    status: int = 0  # 0: the request failed
    seen: float | None = None  # time.monotonic() when a poll returned its row

    @property
    def latency(self) -> float | None:
        return None if self.seen is None else self.seen - self.sent


@dataclass
class Run:
    result: WrkResult
    probes: list[Probe]
    started: float  # monotonic, wrk launched
    stopped: float  # monotonic, wrk returned
    stored: list[tuple[float, int]]  # (monotonic, rows stored): before wrk, every second, after wrk
    events: int | None = None  # events the broker acknowledged to the edge, once it has flushed
    drained: float | None = None  # monotonic, rows stored reached ``events``
    rows: int = 0  # count(*) of clicks at the end: a check of the rollup-based counts
    notes: list[str] = field(default_factory=list)


@contextmanager
def ingest(env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log_path.open("wb") as out:
        proc = subprocess.Popen(h0p_command("ingest"), env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            stop_process(proc, timeout=60)


async def edge_events(client: httpx.AsyncClient) -> tuple[int, int]:
    """(click events the broker acknowledged, events spooled or dropped) from the edge's /metrics."""
    # Not the topic's end offsets: Tansu's undercount the records by up to a batch (measured).
    text = (await client.get("/metrics")).text
    counts = {m.group(1): float(m.group(2)) for m in EVENTS_METRIC.finditer(text)}
    return int(counts.get("sent", 0) + counts.get("replayed", 0)), int(
        counts.get("spooled", 0) + counts.get("dropped", 0)
    )


async def settled_events(client: httpx.AsyncClient) -> int:
    """Events acknowledged once two readings 0.5 s apart agree: the edge has flushed what it answered."""
    last = -1
    while (sent := (await edge_events(client))[0]) != last:
        last = sent
        await asyncio.sleep(0.5)
    return last


async def wait_drained(
    edge_client: httpx.AsyncClient, conn: asyncpg.Connection, limit_s: float
) -> tuple[int | None, float | None]:
    """(events the edge sent, monotonic time the rows stored first reached that number, or None)."""
    # Rows are sampled from the start, while the edge flushes: the drain time is not inflated by it.
    sizing = asyncio.create_task(settled_events(edge_client))
    samples: list[tuple[float, int]] = []
    deadline = time.monotonic() + limit_s
    try:
        while time.monotonic() < deadline:
            stored = int(await conn.fetchval(STORED_SQL))
            samples.append((time.monotonic(), stored))
            if sizing.done():
                events = sizing.result()
                reached = [t for t, n in samples if n >= events]
                if reached:
                    return events, reached[0]
            await asyncio.sleep(0.1)
        return (sizing.result() if sizing.done() else None), None
    finally:
        sizing.cancel()


def edge_client(port: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers={"host": SITE.domain}, timeout=5.0)


async def drain_warm_up(port: int) -> None:
    conn = await asyncpg.connect(SITE.database_url, command_timeout=10)
    try:
        async with edge_client(port) as client:
            if (await wait_drained(client, conn, DRAIN_LIMIT_S))[1] is None:
                raise RuntimeError(f"ingest did not store the warm-up's events within {DRAIN_LIMIT_S:g}s")
    finally:
        await conn.close()


async def send_probes(port: int, probes: list[Probe], start: float, until: float) -> None:
    """GET /probe?utm_content=<n> on a schedule (not sleep-after-send: a slow answer must not thin it)."""
    async with edge_client(port) as client:  # one connection: requests are sent one at a time
        n = 0
        while (at := start + n * PROBE_EVERY_S) < until:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            probe = Probe(n=n, sent=time.monotonic())
            probes.append(probe)
            try:
                probe.status = (await client.get(f"/{PROBE_SLUG}", params={"utm_content": str(n)})).status_code
            except httpx.HTTPError as exc:
                log(f"probe {n} failed: {exc!r}")
            n += 1


async def poll_probes(conn: asyncpg.Connection, probes: list[Probe], sending: asyncio.Task[None]) -> None:
    """Mark each probe's first sighting; returns once the sender is done and every probe is seen."""
    # Wall clock for the ts bound (the edge stamps events with time.time()), monotonic for latencies.
    wall_offset = time.time() - time.monotonic()
    while True:
        unseen = {p.n: p for p in probes if p.seen is None}
        if not unseen and sending.done():
            return
        if unseen:
            # Only rows at most 2 s older than the oldest unseen probe: an index range scan on (link_id, ts).
            since = min(p.sent for p in unseen.values()) + wall_offset - 2.0
            rows = await conn.fetch("SELECT utm_content FROM clicks WHERE link_id = $1 AND ts >= to_timestamp($2)",
                                    PROBE_LINK_ID, since)  # fmt: skip
            now = time.monotonic()  # the poll's end: an upper bound of when the row became visible
            for row in rows:
                value = row["utm_content"]
                if value.isdigit() and (probe := unseen.get(int(value))) is not None:
                    probe.seen = now
        await asyncio.sleep(POLL_EVERY_S)


async def sample_stored(conn: asyncpg.Connection, samples: list[tuple[float, int]]) -> None:
    while True:
        await asyncio.sleep(1.0)
        samples.append((time.monotonic(), int(await conn.fetchval(STORED_SQL))))


async def measure(port: int, metrics_port: int, script: Path, args: argparse.Namespace) -> Run:
    probes: list[Probe] = []
    metrics = edge_client(metrics_port)  # the edge's /metrics is on its own port
    poll_conn = await asyncpg.connect(SITE.database_url, command_timeout=10)
    count_conn = await asyncpg.connect(SITE.database_url, command_timeout=60)
    sample_conn = await asyncpg.connect(SITE.database_url, command_timeout=10)
    tasks: list[asyncio.Task[None]] = []
    try:
        stored = [(time.monotonic(), int(await count_conn.fetchval(STORED_SQL)))]
        started = time.monotonic()
        # A thread (wrk blocks) that is not cancelled on failure: wrk ends by itself after --duration.
        load = asyncio.to_thread(run_wrk, script, port, args.duration, args.connections, args.links, 0, SITE)
        sending = asyncio.create_task(send_probes(port, probes, started + PROBE_DELAY_S, started + args.duration))
        polling = asyncio.create_task(poll_probes(poll_conn, probes, sending))
        sampling = asyncio.create_task(sample_stored(sample_conn, stored))
        tasks += [sending, polling, sampling]
        result = await load
        stopped = time.monotonic()
        sampling.cancel()
        stored.append((time.monotonic(), int(await count_conn.fetchval(STORED_SQL))))
        await sending
        run = Run(result=result, probes=probes, started=started, stopped=stopped, stored=stored)
        log(f"wrk done ({result.rps:,.0f} requests/s); waiting for the backlog and the probes")
        run.events, run.drained = await wait_drained(metrics, count_conn, DRAIN_LIMIT_S)
        if lost := (await edge_events(metrics))[1]:
            run.notes.append(f"\n**The edge spooled or dropped {lost:,} events** (broker too slow or unreachable).")
        await asyncio.wait([polling], timeout=max(0.0, stopped + DRAIN_LIMIT_S - time.monotonic()))
        run.rows = int(await count_conn.fetchval("SELECT count(*) FROM clicks"))
        return run
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await poll_conn.close()
        await count_conn.close()
        await sample_conn.close()
        await metrics.aclose()


def percentile(values: list[float], pct: float) -> float:
    """Nearest rank: the smallest value with at least ``pct`` % of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def rate(samples: list[tuple[float, int]]) -> float:
    """Rows per second between the first and the last sample."""
    if len(samples) < 2 or samples[-1][0] <= samples[0][0]:
        return 0.0
    return (samples[-1][1] - samples[0][1]) / (samples[-1][0] - samples[0][0])


def latency_row(name: str, probes: list[Probe]) -> str:
    seen = [p.latency for p in probes if p.latency is not None]
    missing = len(probes) - len(seen)
    if not seen:
        return f"| {name} | {len(probes)} | {missing} | - | - | - |"
    p50, p99, top = (percentile(seen, 50) * 1000, percentile(seen, 99) * 1000, max(seen) * 1000)
    return f"| {name} | {len(probes)} | {missing} | {p50:,.0f} | {p99:,.0f} | {top:,.0f} |"


def markdown(run: Run, args: argparse.Namespace) -> str:
    r = run.result
    probes = run.probes
    first_at = run.started + PROBE_DELAY_S
    last_at = run.started + args.duration
    seen = [p.latency for p in probes if p.latency is not None]
    missing = len(probes) - len(seen)
    p99 = percentile(seen, 99) if seen else math.inf
    met = bool(seen) and not missing and p99 < TARGET_P99_S
    stored_rate = rate(run.stored)
    # The second half alone: rows lag the edge by the pipeline's delay, which the whole window's rate
    # counts as a shortfall; a steady rate below the edge's is a backlog that grows.
    late_rate = rate([(t, n) for t, n in run.stored if t >= run.started + args.duration / 2])
    events = "-" if run.events is None else f"{run.events:,}"
    backlog = "-" if run.events is None else f"{run.events - run.stored[-1][1]:,}"
    drain = "not within the limit" if run.drained is None else f"{max(0.0, run.drained - run.stopped):.1f} s"
    lines = [
        "## End-to-end latency (redirect to row visible)",
        "",
        f"The edge bench's load: {args.links:,} links cached in Redis, the edge's in-process cache (room for every "
        f"link and the probe) warmed by walking every slug once, one `h0p redirect` worker pinned to core "
        f"{SERVER_CORE}, wrk -t1 -c{args.connections} and the broker (Tansu) on core {CLIENT_CORE}, click events "
        f"on, for {args.duration:g} s; one `h0p ingest` process, Postgres and Redis unpinned. The warm-up's rows "
        "are all stored before the measured run starts. "
        f"During the run a probe sends `GET /{PROBE_SLUG}?utm_content=<n>` every {PROBE_EVERY_S * 1000:.0f} ms on "
        f"its own keep-alive connection, and a poller queries `clicks` for the probe link's rows every "
        f"{POLL_EVERY_S * 1000:.0f} ms (by link_id and a ts lower bound; n comes back in `utm_content`). Latency = "
        "end of the first poll that returns the row - moment the request was sent (an upper bound, by at most a "
        f"poll). After wrk stops, polling goes on until every probe is seen or {DRAIN_LIMIT_S:g} s pass. Rows "
        "stored are counted from the hourly rollup's count rows (written in the same transaction as the rows).",
        "",
        "| probes sent during | probes | never seen | p50 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|",
        latency_row("whole run", probes),
        latency_row(f"first {WINDOW_S:g} s", [p for p in probes if p.sent < first_at + WINDOW_S]),
        latency_row(f"last {WINDOW_S:g} s", [p for p in probes if p.sent >= last_at - WINDOW_S]),
        "",
        "| load and ingest | value |",
        "|---|---:|",
        f"| edge requests/s under wrk (p50 / p99 ms, errors) | {r.rps:,.0f} ({r.p50_ms:.2f} / {r.p99_ms:.2f}, "
        f"{r.errors}) |",
        f"| rows stored by ingest per second during the load (whole run / second half) | {stored_rate:,.0f} / "
        f"{late_rate:,.0f} |",
        f"| backlog when wrk stopped (events sent by the edge, not yet stored) | {backlog} |",
        f"| last row stored after wrk stopped (backlog drain) | {drain} |",
        f"| events sent by the edge / rows in `clicks` at the end | {events} / {run.rows:,} |",
        "",
    ]
    if met:
        lines.append(f"Target p99 < {TARGET_P99_S:g} s: **met** ✅ (p99 {p99:.2f} s, every probe seen).")
    else:
        why = [f"p99 {p99:.2f} s" if seen else "no probe seen"] + ([f"{missing} probes never seen"] if missing else [])
        lines.append(f"Target p99 < {TARGET_P99_S:g} s: **not met** ❌ ({', '.join(why)}).")
    if late_rate < 0.95 * r.rps:
        lines += [
            "",
            f"In the second half of the run ingest stored {late_rate:,.0f} rows/s while the edge answered "
            f"{r.rps:,.0f} requests/s: it does not keep up at this load, so the backlog (and with it the latency) "
            "grows for as long as the load lasts; compare the first and last windows.",
        ]
    else:
        lines += [
            "",
            f"Ingest kept up in the second half of the run ({late_rate:,.0f} rows/s for {r.rps:,.0f} requests/s): "
            "the latency is the pipeline's delay (edge batches, broker, ingest batches, the write), not a growing "
            "backlog.",
        ]
    if failed := [p for p in probes if p.status != 302]:
        lines += ["", f"**{len(failed)} probe requests failed or did not answer 302** (counted as sent)."]
    lines += [*run.notes, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load (default 30)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--links", type=int, default=100_000)
    args = parser.parse_args(argv)
    if args.duration <= WINDOW_S + PROBE_DELAY_S:
        parser.error(f"--duration must be more than {WINDOW_S + PROBE_DELAY_S:g}")
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            log(f"{tool} is not installed: run `make bench` (it installs wrk)")
            return 2

    with tempfile.TemporaryDirectory(prefix="h0p-e2e-bench-") as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        script = tmp / "walk.lua"
        script.write_text(WRK_SCRIPT)
        redis_db = asyncio.run(pick_redis_db())
        broker = Broker().start()
        stack.callback(broker.stop)
        assert broker.proc is not None
        # every thread of the broker onto the client's core, as in edge_bench: it stands for another machine
        subprocess.run(["taskset", "-apc", CLIENT_CORE, str(broker.proc.pid)], check=True, stdout=subprocess.DEVNULL)
        # Registered before loading: a failure half-way still drops the database and the keys.
        stack.callback(lambda: asyncio.run(db.drop_database(SITE.database_url)))
        stack.callback(lambda: asyncio.run(remove_redis_keys(redis_db, SITE)))
        log(f"loading {args.links:,} links ({SITE.database_url.rsplit('/', 1)[1]}, Redis db {redis_db})")
        probe = (PROBE_LINK_ID, PROBE_SLUG, "https://example.com/probe")
        asyncio.run(load_links(redis_db, args.links, SITE, extra=[probe]))

        port, metrics_port = free_port(), free_port()
        edge_env = base_env(
            SITE,
            broker,
            redis_db,
            TOPIC,
            H0P_REDIRECT_PORT=str(port),
            H0P_EDGE_METRICS_PORT=str(metrics_port),
            H0P_SPOOL_DIR=str(tmp / "spool"),
            # Room for the probe link: an LRU one entry short of a sequential walk misses on every request.
            H0P_CACHE_SIZE=str(max(100_000, args.links + 1000)),
        )
        stack.enter_context(edge(edge_env, port, SITE))
        ingest_env = base_env(
            SITE,
            broker,
            redis_db,
            TOPIC,
            H0P_KAFKA_GROUP=f"bench-e2e-ingest-{RUN_ID}",
            H0P_KAFKA_DEAD_LETTER_TOPIC=f"{TOPIC}-dead-letter",
            H0P_INGEST_METRICS_PORT="0",  # the default port may be taken by a stack or another bench
            H0P_INGEST_SESSION_TIMEOUT_MS="6000",  # Tansu answers a group join after half of it
        )
        ingest_proc = stack.enter_context(ingest(ingest_env, tmp / "ingest.log"))

        # Walk every slug once so the measured run hits a warm in-process cache, as in edge_bench.
        sent = 0
        while sent < args.links:
            sent += run_wrk(script, port, 3, args.connections, args.links, offset=sent, site=SITE).requests
        log(f"warm-up done ({sent:,} requests); waiting for ingest to store them")
        asyncio.run(drain_warm_up(port))
        if ingest_proc.poll() is not None:
            raise RuntimeError(
                f"ingest exited with {ingest_proc.returncode}: {(tmp / 'ingest.log').read_text()[-2000:]}"
            )
        log(f"measuring {args.duration:g}s")
        run = asyncio.run(measure(port, metrics_port, script, args))
        if ingest_proc.poll() is not None:
            run.notes.append(f"\n**ingest exited during the run** (exit code {ingest_proc.returncode}).")
        load = os.getloadavg()[0]
        run.notes.append(f"\n1-minute load average when the run ended: {load:.1f} (2 cores).")
    print(markdown(run, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
