"""Capacity drill: the whole local stack under load, one ingest process killed mid-run, CPU per unit of work.

    python -m loadtests.capacity_bench [--duration 50] [--links 10000] [--kill-at 10] [--restart-after 5]
                                       [--api-writes 20] [--hooked 0.05]

Started as subprocesses on 127.0.0.1, everything its own (a database, a Redis db index with keys
under its own domain, a Tansu broker, a topic of ``PARTITIONS`` partitions created as ``h0p migrate``
creates them): ``h0p redirect --workers 2``, two ``h0p ingest`` in one consumer group,
``h0p api --workers 2`` and one ``h0p webhooks`` with one webhook (a local receiver) subscribed to
``link.clicked`` of a second workspace holding ``--hooked`` of the links. wrk walks every link
(each worker's in-process cache warmed first) while a trickle of API writes (creates and updates,
HTTP with a key) runs; ``--kill-at`` s in, one ingest process gets SIGKILL and is started again
``--restart-after`` s later. Afterwards (bounded) until the rows stop growing, then:

- exactly once: events the edge had acknowledged by the broker (its /metrics, summed over the
  workers) = ``count(*)`` = ``count(DISTINCT event_id)`` of ``clicks``;
- lag recovery: lag = events acknowledged - rows stored, sampled every ``SAMPLE_S``;
- CPU per unit from /proc (utime + stime): each process tree (the supervisors' workers too), and
  the Postgres backends of this database by ``application_name`` (ingest names its connections;
  the API's and the deliverer's are named through their database URL) - not Postgres's shared
  background processes (WAL writer, checkpointer, autovacuum), which serve every database here;
- row writes per click from ``pg_stat_user_tables`` of this database (clicks, rollup increments,
  link counters, webhook outbox);
- the projection to 10k, 100k and 1M redirects/s (assumptions printed beside it).

Prints a markdown section on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import signal
import statistics
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
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from api import db
from api.services.context import close_context, open_context
from api.services.keys import create_key
from api.topics import ensure_topics
from h0p_settings import load_settings
from loadtests.edge_bench import (
    REDIS_BASE,
    RUN_ID,
    WRK_SCRIPT,
    Site,
    base_env,
    check_redirect,
    h0p_command,
    load_links,
    pick_redis_db,
    remove_redis_keys,
    run_wrk,
    stop_process,
)  # fmt: skip
from loadtests.ingest_bench import STORED_SQL, cpu_s
from loadtests.webhooks_bench import Receiver, insert_webhooks
from loadtests.wrk import WrkResult
from redirect.record import LINK_QUERY, encode, link_key, link_record_from_row
from tests.services import Broker, free_port, wait_for_port

SITE = Site("cap")
TOPIC = f"bench-cap-clicks-{RUN_ID}"
HOOKED_WORKSPACE = "ws_CAPHOOKED".ljust(28, "0")
PARTITIONS = 4  # two ingest processes, and room for two more without moving keys
WORKERS = 2
SAMPLE_S = 0.5
DRAIN_LIMIT_S = 90.0
TARGET_UTILISATION = 0.6  # cores provisioned = busy cores / this (room for peaks and a lost machine)
RATES = (10_000, 100_000, 1_000_000)
API_WRITES_PER_REDIRECT = 0.001  # assumed: one link created or updated per 1,000 redirects
HOOKED_SHARE = 0.10  # assumed: 10 % of clicks have a subscribed link.clicked webhook
INGEST_PROCESS_CORES = 0.7  # what one (single-threaded) ingest process is planned to use at most
# Webhook work not done yet: outbox events not fanned out, deliveries not yet delivered (or failed).
SETTLED_SQL = (
    "SELECT (SELECT count(*) FROM webhook_events) + (SELECT count(*) FROM webhook_deliveries WHERE state = 'pending')"
)
APP_NAMES = {"ingest": "h0p-ingest", "api": "h0p-cap-api", "webhooks": "h0p-cap-webhooks"}


def log(message: str) -> None:
    print(f"capacity_bench: {message}", file=sys.stderr, flush=True)


# --- CPU from /proc ------------------------------------------------------------------------------


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process, its live children (a supervisor's workers) and its exited, reaped ones."""
    total = 0.0
    try:
        total = cpu_s(pid, with_exited_children=True)
    except OSError:
        return 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                total += tree_cpu_s(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return total


class PostgresBackends:
    """CPU seconds of this database's backends by role (``application_name``), sampled as they come and go.

    A backend is read from its own /proc entry; one that exits between two samples loses at most a
    sample's worth (its time then goes to the postmaster, shared with every other database here).
    """

    def __init__(self) -> None:
        self.first: dict[int, tuple[str, float]] = {}
        self.last: dict[int, float] = {}
        self.baseline = True  # the first sample: what backends used before the start is not counted

    async def sample(self, conn: asyncpg.Connection) -> None:
        rows = await conn.fetch(
            "SELECT pid, application_name FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        )
        for row in rows:
            pid = int(row["pid"])
            try:
                now = cpu_s(pid)
            except OSError:
                continue
            if pid not in self.first:
                # A backend first seen after the start began after it (or sat idle before): counted whole.
                self.first[pid] = (row["application_name"] or "", now if self.baseline else 0.0)
            self.last[pid] = now

    def used(self, prefix: str) -> float:
        return sum(self.last[pid] - first for pid, (name, first) in self.first.items() if name.startswith(prefix))


# --- the stack -----------------------------------------------------------------------------------


@contextmanager
def service(argv: list[str], env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log_path.open("ab") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            stop_process(proc, timeout=60)


def named(url: str, app: str) -> str:
    """The database URL with an ``application_name`` (asyncpg passes unknown query keys as settings)."""
    return f"{url}?application_name={app}"


async def prepare(redis_db: int, links: int, hooked: int, receiver_port: int, broker: Broker) -> str:
    """Links in Postgres and Redis, the first ``hooked`` moved to a subscribed workspace; topics; an API key."""
    await load_links(redis_db, links, SITE)
    conn = await asyncpg.connect(SITE.database_url)
    r = aioredis.Redis.from_url(f"{REDIS_BASE}/{redis_db}", socket_timeout=30)
    try:
        await conn.execute("INSERT INTO workspaces (id, name) VALUES ($1, 'cap-hooked')", HOOKED_WORKSPACE)
        await conn.execute("UPDATE links SET workspace_id = $1 WHERE domain = $2 AND slug < $3", HOOKED_WORKSPACE,
                           SITE.domain, f"k{hooked:06d}")  # fmt: skip
        # The edge's records carry the workspace (the click event does): rewritten as load_links writes them.
        query = LINK_QUERY.replace(" AND slug = $2", "").replace("SELECT id,", "SELECT slug AS bench_slug, id,")
        moved = {
            link_key(SITE.domain, row["bench_slug"]): encode(link_record_from_row(row))
            for row in await conn.fetch(query, SITE.domain)
            if row["bench_slug"] < f"k{hooked:06d}"
        }
        if moved:
            await r.mset(moved)
        await insert_webhooks(conn, HOOKED_WORKSPACE, [f"http://127.0.0.1:{receiver_port}/hook"])
    finally:
        await conn.close()
        await r.aclose()
    settings = load_settings(
        {
            "H0P_DATABASE_URL": SITE.database_url,
            "H0P_REDIS_URL": f"{REDIS_BASE}/{redis_db}",
            "H0P_KAFKA_BOOTSTRAP": broker.bootstrap,
            "H0P_KAFKA_TOPIC": TOPIC,
            "H0P_KAFKA_DEAD_LETTER_TOPIC": f"{TOPIC}-dead-letter",
            "H0P_KAFKA_PARTITIONS": str(PARTITIONS),
            "H0P_KAFKA_REPLICATION": "1",
        }
    )
    await ensure_topics(settings)
    ctx = await open_context(settings)
    try:
        _, secret = await create_key(ctx, SITE.workspace_id, "capacity-bench", None)
    finally:
        await close_context(ctx)
    return secret


async def edge_counters(client: httpx.AsyncClient) -> dict[str, float]:
    """The edge's counters summed over its workers: redirects, events by state, cache, Redis and Postgres lookups."""
    text = (await client.get("/metrics")).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "h0p_edge_requests_total" and s.labels.get("outcome") == "redirect":
                key = "redirects"
            elif s.name == "h0p_edge_events_total":
                key = f"events_{s.labels.get('state')}"
            elif s.name == "h0p_edge_cache_lookups_total":
                key = f"cache_{s.labels.get('result')}"
            elif s.name == "h0p_edge_redis_lookups_total":
                key = f"redis_{s.labels.get('result')}"
            elif s.name == "h0p_edge_postgres_lookups_total":
                key = "postgres_lookups"
            else:
                continue
            out[key] = out.get(key, 0.0) + s.value
    return out


def acked(counters: dict[str, float]) -> int:
    return int(counters.get("events_sent", 0) + counters.get("events_replayed", 0))


async def row_writes(conn: asyncpg.Connection) -> dict[str, int]:
    """Rows inserted, updated and deleted so far in this database, by table (a partitioned table as one)."""
    # Not ingest's temporary staging table: no WAL, not a row anyone reads.
    rows = await conn.fetch("SELECT relname, n_tup_ins + n_tup_upd + n_tup_del AS n FROM pg_stat_user_tables"
                            " WHERE schemaname NOT LIKE 'pg_temp%'")  # fmt: skip
    out: dict[str, int] = {}
    for row in rows:
        name = "clicks" if row["relname"].startswith("clicks") else row["relname"]
        out[name] = out.get(name, 0) + int(row["n"])
    link_updates = await conn.fetchval("SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'links'")
    out["links (updates)"] = int(link_updates or 0)
    return out


# --- the drill -----------------------------------------------------------------------------------


@dataclass
class Snapshot:
    at: float
    cpu: dict[str, float]  # process trees
    counters: dict[str, float]
    stored: int
    delivered: int
    writes: int


@dataclass
class Drill:
    result: WrkResult | None = None
    start: Snapshot | None = None
    load_end: Snapshot | None = None
    end: Snapshot | None = None
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (monotonic, acked, stored)
    killed_at: float = 0.0
    restarted_at: float = 0.0
    killed_cpu: float = 0.0  # CPU of the killed ingest process up to its kill
    pg: PostgresBackends = field(default_factory=PostgresBackends)
    pg_load: dict[str, float] = field(default_factory=dict)  # Postgres CPU by role at the end of the load
    idle: dict[str, float] = field(default_factory=dict)  # CPU s/s of each role with no load, before the start
    writes_failed: int = 0
    updates: int = 0  # of the API writes, link updates (the rest created links)
    rows: int = 0
    distinct: int = 0
    row_writes: dict[str, int] = field(default_factory=dict)
    load_avg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    notes: list[str] = field(default_factory=list)


class Stack:
    def __init__(self, tmp: Path, env: dict[str, str], api_env: dict[str, str], wh_env: dict[str, str],
                 broker: Broker) -> None:  # fmt: skip
        self.tmp = tmp
        self.broker = broker
        self.env = env
        self.api_env = api_env
        self.wh_env = wh_env
        self.edge: subprocess.Popen[bytes] | None = None
        self.api: subprocess.Popen[bytes] | None = None
        self.webhooks: subprocess.Popen[bytes] | None = None
        self.ingest: list[subprocess.Popen[bytes]] = []

    def start_ingest(self, stack: ExitStack, n: int) -> subprocess.Popen[bytes]:
        proc = stack.enter_context(service(h0p_command("ingest"), self.env, self.tmp / f"ingest-{n}.log"))
        return proc

    def cpu(self, killed_cpu: float) -> dict[str, float]:
        assert self.edge and self.api and self.webhooks
        return {
            "edge": tree_cpu_s(self.edge.pid),
            "ingest": sum(tree_cpu_s(p.pid) for p in self.ingest) + killed_cpu,
            "api": tree_cpu_s(self.api.pid),
            "webhooks": tree_cpu_s(self.webhooks.pid),
            "broker": tree_cpu_s(self.broker.proc.pid) if self.broker.proc else 0.0,
        }


async def api_writes(port: int, key: str, per_s: float, until: float, counts: dict[str, int]) -> None:
    """Creates and updates through HTTP on a schedule: even n creates a link, odd n updates the last one."""
    headers = {"x-api-key": key, "content-type": "application/json"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10.0) as client:
        start, n, last = time.monotonic(), 0, ""
        while (at := start + n / per_s) < until:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            try:
                if n % 2 == 0 or not last:
                    answer = await client.post("/links", json={"url": f"https://example.com/api/{RUN_ID}/{n}"})
                    last = answer.json().get("id", "") if answer.status_code == 201 else last
                else:
                    answer = await client.patch(f"/links/{last}", json={"url": f"https://example.com/api/u/{n}"})
                ok = answer.status_code in (200, 201)
                counts["ok" if ok else "failed"] += 1
                counts["updates"] += ok and n % 2 == 1
            except httpx.HTTPError:
                counts["failed"] += 1
            n += 1


async def drill(stack: ExitStack, st: Stack, ports: dict[str, int], key: str, script: Path,
                receiver: Receiver, args: argparse.Namespace) -> Drill:  # fmt: skip
    d = Drill()
    metrics = httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['metrics']}", timeout=5.0)
    conn = await asyncpg.connect(named(SITE.database_url, "h0p-cap-bench"), command_timeout=60)
    # its own connection: the sampler runs while the main task queries
    sample_conn = await asyncpg.connect(named(SITE.database_url, "h0p-cap-bench"), command_timeout=60)
    counts = {"ok": 0, "failed": 0, "updates": 0}

    async def snapshot() -> Snapshot:
        delivered = int(await conn.fetchval("SELECT count(*) FROM webhook_deliveries WHERE state = 'delivered'"))
        return Snapshot(time.monotonic(), st.cpu(d.killed_cpu), await edge_counters(metrics),
                        int(await conn.fetchval(STORED_SQL)), delivered, counts["ok"])  # fmt: skip

    async def sampler() -> None:
        while True:
            try:
                events = acked(await edge_counters(metrics))
                d.samples.append((time.monotonic(), events, int(await sample_conn.fetchval(STORED_SQL))))
                await d.pg.sample(sample_conn)
            except (httpx.HTTPError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                log(f"sample failed: {exc!r}")
            await asyncio.sleep(SAMPLE_S)

    async def chaos(started: float) -> None:
        await asyncio.sleep(max(0.0, started + args.kill_at - time.monotonic()))
        victim = st.ingest[0]
        d.killed_cpu = tree_cpu_s(victim.pid)
        victim.send_signal(signal.SIGKILL)
        d.killed_at = time.monotonic()
        log(f"ingest pid {victim.pid} killed (SIGKILL)")
        victim.wait()
        st.ingest.remove(victim)
        await asyncio.sleep(args.restart_after)
        st.ingest.insert(0, st.start_ingest(stack, 3))
        d.restarted_at = time.monotonic()
        log(f"ingest restarted (pid {st.ingest[0].pid})")

    # Backends report their table statistics at most every 10 s when idle (PGSTAT_IDLE_INTERVAL): the
    # warm-up's row writes are all counted before the start.
    quiet = st.cpu(0.0), time.monotonic()
    await asyncio.sleep(11)
    before = await row_writes(conn)
    d.idle = {role: (cpu - quiet[0][role]) / (time.monotonic() - quiet[1]) for role, cpu in st.cpu(0.0).items()}
    await d.pg.sample(conn)
    d.pg.baseline = False
    try:
        d.start = await snapshot()
        started = time.monotonic()
        until = started + args.duration
        sampling = asyncio.create_task(sampler())
        tasks = [
            asyncio.create_task(chaos(started)),
            asyncio.create_task(api_writes(ports["api"], key, args.api_writes, until, counts)),
        ]
        d.result = await asyncio.to_thread(run_wrk, script, ports["edge"], args.duration, args.connections,
                                           args.links, 0, SITE)  # fmt: skip
        await asyncio.gather(*tasks)
        d.writes_failed, d.updates = counts["failed"], counts["updates"]
        d.load_end = await snapshot()
        await d.pg.sample(conn)
        d.pg_load = {role: d.pg.used(app) for role, app in APP_NAMES.items()}
        log(f"wrk done ({d.result.rps:,.0f} requests/s); waiting for ingest and the deliveries to settle")
        deadline = time.monotonic() + DRAIN_LIMIT_S
        last: tuple[int, int, int] | None = None
        while time.monotonic() < deadline:
            await asyncio.sleep(2.0)
            now = (acked(await edge_counters(metrics)), int(await conn.fetchval(STORED_SQL)), receiver.received)
            if now == last and now[0] == now[1] and await conn.fetchval(SETTLED_SQL) == 0:
                break
            last = now
        else:
            d.notes.append(f"\n**Not settled within {DRAIN_LIMIT_S:g} s** (events acked, rows, deliveries: {last}).")
        sampling.cancel()
        await asyncio.gather(sampling, return_exceptions=True)
        await d.pg.sample(conn)
        d.end = await snapshot()
        d.load_avg = os.getloadavg()
        d.rows = int(await conn.fetchval("SELECT count(*) FROM clicks"))
        d.distinct = int(await conn.fetchval("SELECT count(DISTINCT event_id) FROM clicks"))
        await asyncio.sleep(11)  # the last statistics reported, as before the start
        after = await row_writes(conn)
        d.row_writes = {name: n - before.get(name, 0) for name, n in after.items() if n > before.get(name, 0)}
    finally:
        await metrics.aclose()
        await conn.close()
        await sample_conn.close()
    return d


# --- the report ----------------------------------------------------------------------------------


@dataclass
class Figures:
    redirect_us: float
    ingest_us: float
    ingest_pg_us: float
    api_us: float
    api_pg_us: float
    webhook_us: float
    webhook_pg_us: float
    broker_us: float
    net_us: dict[str, float]  # process µs per unit less what the process uses idle (its background loops)
    rows_per_click: float  # the click pipeline: clicks, rollup increments, link counters
    rows_per_write: float  # the API's row writes (links and whatever else it writes)
    rows_per_delivery: float  # the webhook outbox and deliveries


def figures(d: Drill) -> tuple[Figures, dict[str, float]]:
    assert d.start and d.load_end and d.end
    s, m, e = d.start, d.load_end, d.end
    redirects = m.counters.get("redirects", 0) - s.counters.get("redirects", 0)
    rows = e.stored - s.stored
    writes = m.writes - s.writes
    deliveries = e.delivered - s.delivered
    units = {"redirects": redirects, "rows": rows, "writes": writes, "deliveries": deliveries}

    def per(cpu: float, n: float) -> float:
        return cpu / n * 1e6 if n else math.nan

    w = dict(d.row_writes)
    link_updates = w.pop("links (updates)", 0)
    pipeline = sum(n for name, n in w.items() if name.startswith("click")) + link_updates - d.updates
    hooks = sum(n for name, n in w.items() if name.startswith("webhook"))
    api = sum(w.values()) - pipeline - hooks
    span = {"edge": m.at - s.at, "api": m.at - s.at, "ingest": e.at - s.at, "webhooks": e.at - s.at,
            "broker": e.at - s.at}  # fmt: skip
    ends = {"edge": m, "api": m, "ingest": e, "webhooks": e, "broker": e}
    per_role = {"edge": redirects, "api": writes, "ingest": rows, "webhooks": deliveries, "broker": rows}
    net = {
        role: per(ends[role].cpu[role] - s.cpu[role] - d.idle.get(role, 0.0) * span[role], n)
        for role, n in per_role.items()
    }
    f = Figures(
        net_us=net,
        broker_us=per(e.cpu["broker"] - s.cpu["broker"], rows),
        redirect_us=per(m.cpu["edge"] - s.cpu["edge"], redirects),
        ingest_us=per(e.cpu["ingest"] - s.cpu["ingest"], rows),
        ingest_pg_us=per(d.pg.used(APP_NAMES["ingest"]), rows),
        api_us=per(m.cpu["api"] - s.cpu["api"], writes),
        api_pg_us=per(d.pg_load.get("api", 0.0), writes),
        webhook_us=per(e.cpu["webhooks"] - s.cpu["webhooks"], deliveries),
        webhook_pg_us=per(d.pg.used(APP_NAMES["webhooks"]), deliveries),
        rows_per_click=pipeline / rows if rows else math.nan,
        rows_per_write=api / writes if writes else math.nan,
        rows_per_delivery=hooks / deliveries if deliveries else math.nan,
    )
    return f, units


def lag_recovery(d: Drill, rate: float) -> tuple[float, float, float | None]:
    """(median lag before the kill, peak lag after it, seconds from the restart until the lag is back).

    Back = two samples in a row at most twice the lag before the kill or half a second of the edge's rate,
    whichever is more: events are always in flight (edge and ingest batches), so under load it is never 0.
    """
    before = [a - s for t, a, s in d.samples if d.samples[0][0] + 3 < t < d.killed_at]
    after = [(t, a - s) for t, a, s in d.samples if t >= d.killed_at]
    base = statistics.median(before) if before else 0.0
    peak = max((lag for _, lag in after), default=0)
    bound = max(2 * base, 0.5 * rate)
    # Two samples in a row: a batch committed can dip the lag for a moment in the middle of a backlog.
    pairs = zip(after, after[1:], strict=False)
    back = next((t - d.restarted_at for (t, lag), (_, nxt) in pairs if t >= d.restarted_at and max(lag, nxt) <= bound),
                None)  # fmt: skip
    return base, float(peak), back


def timeline(d: Drill) -> str:
    out: list[str] = []
    next_at = d.killed_at
    marked = False
    for t, a, stored in d.samples:
        if t < next_at:
            continue
        mark = "k " if not out else ("r " if not marked and t >= d.restarted_at else "")
        marked = marked or mark == "r "
        out.append(f"{mark}{a - stored:,}")
        next_at += 2.0
    return ", ".join(out)


def projection(f: Figures) -> list[str]:
    def cores(us: float, per_s: float) -> str:
        busy = us * per_s / 1e6
        return f"{busy:,.1f} ({math.ceil(busy / TARGET_UTILISATION):,})"

    rows = []
    for rate in RATES:
        ingest_busy = f.net_us["ingest"] * rate / 1e6
        processes = max(1, math.ceil(ingest_busy / INGEST_PROCESS_CORES))
        partitions = max(12, 2 ** math.ceil(math.log2(2 * processes)))
        pg_busy = (f.ingest_pg_us * rate + f.api_pg_us * rate * API_WRITES_PER_REDIRECT
                   + f.webhook_pg_us * rate * HOOKED_SHARE) / 1e6  # fmt: skip
        pg_provisioned = math.ceil(pg_busy / TARGET_UTILISATION)
        pg_rows = rate * (f.rows_per_click + API_WRITES_PER_REDIRECT * f.rows_per_write
                          + HOOKED_SHARE * f.rows_per_delivery)  # fmt: skip
        rows.append(
            f"| {rate:,} | {cores(f.net_us['edge'], rate)} | {cores(f.net_us['ingest'], rate)} | {processes:,} | "
            f"{partitions:,} | {cores(f.net_us['api'], rate * API_WRITES_PER_REDIRECT)} | "
            f"{cores(f.net_us['webhooks'], rate * HOOKED_SHARE)} | {pg_busy:,.1f} ({pg_provisioned:,}) | "
            f"{pg_rows:,.0f} |"
        )
    return rows


def markdown(d: Drill, args: argparse.Namespace) -> str:
    assert d.result and d.start and d.end and d.load_end
    r = d.result
    e = d.end
    events = acked(e.counters)
    lost = int(e.counters.get("events_spooled", 0) + e.counters.get("events_dropped", 0))
    redirects = int(e.counters.get("redirects", 0))
    once = redirects == events == d.rows == d.distinct and not lost
    f, units = figures(d)
    rate = units["redirects"] / args.duration
    base, peak, back = lag_recovery(d, rate)

    def delta(name: str) -> float:
        assert d.start
        return e.counters.get(name, 0.0) - d.start.counters.get(name, 0.0)

    hits, misses = delta("cache_hit"), delta("cache_miss")
    hit_ratio = hits / (hits + misses) if hits + misses else math.nan
    load_left = args.duration - args.kill_at - args.restart_after
    recovered = "not within the run" if back is None else f"{back:.1f} s after the restart"
    if back is not None:
        recovered += " (under load)" if back <= load_left else f" (after the load stopped, {load_left:g} s after it)"
    writes = ", ".join(f"{name} {n:,}" for name, n in sorted(d.row_writes.items(), key=lambda kv: -kv[1]))
    la = d.load_avg
    lines = [
        "## Capacity drill and CPU per unit of work",
        "",
        f"On this machine, all on 127.0.0.1: `h0p redirect --workers {WORKERS}`, two `h0p ingest` in one consumer "
        f"group, `h0p api --workers {WORKERS}`, one `h0p webhooks` (one webhook subscribed to `link.clicked` of a "
        f"second workspace holding {args.hooked:.0%} of the links, delivering to a local receiver), a Tansu broker, "
        f"a topic of {PARTITIONS} partitions; nothing pinned but wrk (-t1 -c{args.connections}). wrk walks "
        f"{args.links:,} cached links (each worker's in-process cache warmed first, click events on) for "
        f"{args.duration:g} s while the API gets {args.api_writes:g} writes/s (creates and updates, HTTP, an API "
        f"key). {args.kill_at:g} s in, one ingest process gets SIGKILL; it is started again {args.restart_after:g} s "
        "later. Then the drill waits (bounded) until rows stop growing.",
        "",
        "| drill | value |",
        "|---|---:|",
        f"| edge requests/s under wrk (p50 / p99 ms, errors) | {r.rps:,.0f} ({r.p50_ms:.2f} / {r.p99_ms:.2f}, "
        f"{r.errors}) |",
        f"| in-process cache hit ratio during the load (the misses: Redis hits / Redis misses / Postgres reads) "
        f"| {hit_ratio:.1%} ({delta('redis_hit'):,.0f} / {delta('redis_miss'):,.0f} / "
        f"{delta('postgres_lookups'):,.0f}) |",
        f"| redirects answered by the edge (both workers, warm-up included) | {redirects:,} |",
        f"| their click events acknowledged by the broker | {events:,} |",
        f"| events spooled or dropped by the edge | {lost:,} |",
        f"| rows in `clicks`: count / distinct event_id | {d.rows:,} / {d.distinct:,} |",
        f"| lag (events acked - rows stored) before the kill, median | {base:,.0f} |",
        f"| lag peak after the kill | {peak:,.0f} |",
        f"| lag back to ≤ max(2 × before, ½ s of load) | {recovered} |",
        f"| API writes ok / failed | {units['writes']:,} / {d.writes_failed:,} |",
        f"| webhook deliveries | {units['deliveries']:,} |",
        f"| load average at the end (1 / 5 / 15 min; 2 cores) | {la[0]:.1f} / {la[1]:.1f} / {la[2]:.1f} |",
        "",
        f"Every click stored exactly once: {'**yes** ✅' if once else '**no** ❌'} (redirects = events acknowledged "
        "= rows = distinct event ids, none spooled or dropped).",
        "",
        "CPU per unit of work, from /proc (user + system; process trees, supervisors and workers; Postgres = this "
        "database's backends serving that role, named by `application_name`; Postgres's shared background "
        "processes not counted):",
        "",
        "| unit | units | process µs | less idle µs | idle (cores) | Postgres µs |",
        "|---|---:|---:|---:|---:|---:|",
        f"| redirect (cache hit, with its click event) | {units['redirects']:,.0f} | {f.redirect_us:,.0f} | "
        f"{f.net_us['edge']:,.0f} | {d.idle.get('edge', 0):.3f} | - |",
        f"| stored event (ingest; incl. the kill and restart) | {units['rows']:,.0f} | {f.ingest_us:,.0f} | "
        f"{f.net_us['ingest']:,.0f} | {d.idle.get('ingest', 0):.3f} | {f.ingest_pg_us:,.0f} |",
        f"| API write (create or update, HTTP) | {units['writes']:,.0f} | {f.api_us:,.0f} | "
        f"{f.net_us['api']:,.0f} | {d.idle.get('api', 0):.3f} | {f.api_pg_us:,.0f} |",
        f"| webhook delivery (fan-out, signing, POST) | {units['deliveries']:,.0f} | {f.webhook_us:,.0f} | "
        f"{f.net_us['webhooks']:,.0f} | {d.idle.get('webhooks', 0):.3f} | {f.webhook_pg_us:,.0f} |",
        f"| (the broker, Tansu, per stored event: produce and fetch; not Kafka, not projected) | "
        f"{units['rows']:,.0f} | {f.broker_us:,.0f} | {f.net_us['broker']:,.0f} | {d.idle.get('broker', 0):.3f} | - |",
        "",
        "Idle = CPU of the process tree per second over 11 quiet seconds before the load (its background loops); "
        "'less idle' subtracts that for the time measured: the cost of one more unit, which the projection uses.",
        "",
        f"Row writes (inserts + updates + deletes, `pg_stat_user_tables` of this database during the drill: "
        f"{writes}): {f.rows_per_click:.2f} per stored click (clicks, rollup increments, link counters), "
        f"{f.rows_per_write:.2f} per API write, {f.rows_per_delivery:.2f} per webhook delivery (outbox event, "
        "delivery row and its state).",
        "",
        "Projection (busy cores = rate × CPU per unit; in brackets the cores to provision at "
        f"{TARGET_UTILISATION:.0%} utilisation). Assumed: API writes = {API_WRITES_PER_REDIRECT:.1%} of redirects, "
        f"webhook deliveries = {HOOKED_SHARE:.0%} of clicks; ingest processes = busy cores / "
        f"{INGEST_PROCESS_CORES:g} (one process is one thread); partitions = max(12, power of two ≥ 2 × ingest "
        "processes) so consumers can double without re-partitioning; Postgres = the ingest, API and webhooks "
        "backends' CPU, WAL writer and replication not included.",
        "",
        "| redirects/s | edge cores | ingest cores | ingest processes | Kafka partitions | API cores | webhooks cores "
        "| Postgres cores | Postgres row writes/s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *projection(f),
        "",
        f"Lag (events acked - rows stored) every 2 s from the kill (k = kill, r = restart): {timeline(d)}.",
        *d.notes,
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=50.0, help="seconds of load (default 50)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--links", type=int, default=10_000)
    parser.add_argument("--kill-at", type=float, default=10.0)
    parser.add_argument("--restart-after", type=float, default=5.0)
    parser.add_argument("--api-writes", type=float, default=20.0, help="API writes per second")
    parser.add_argument("--hooked", type=float, default=0.05, help="share of the links with a webhook")
    args = parser.parse_args(argv)
    if args.kill_at + args.restart_after >= args.duration - 5:
        parser.error("the restart must come at least 5 s before the end of the load")
    if not shutil.which("wrk"):
        log("wrk is not installed: run `make bench` (it installs wrk)")
        return 2

    with tempfile.TemporaryDirectory(prefix="h0p-capacity-bench-") as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        script = tmp / "walk.lua"
        script.write_text(WRK_SCRIPT)
        receiver = stack.enter_context(Receiver().running())
        redis_db = asyncio.run(pick_redis_db())
        broker = Broker().start()
        stack.callback(broker.stop)
        stack.callback(lambda: asyncio.run(db.drop_database(SITE.database_url)))
        stack.callback(lambda: asyncio.run(remove_redis_keys(redis_db, SITE)))
        log(f"loading {args.links:,} links ({SITE.database_url.rsplit('/', 1)[1]}, Redis db {redis_db})")
        key = asyncio.run(prepare(redis_db, args.links, int(args.links * args.hooked), receiver.port, broker))

        ports = {"edge": free_port(), "metrics": free_port(), "api": free_port()}
        env = base_env(
            SITE, broker, redis_db, TOPIC,
            H0P_REDIRECT_PORT=str(ports["edge"]), H0P_EDGE_METRICS_PORT=str(ports["metrics"]),
            H0P_EDGE_WORKERS=str(WORKERS), H0P_SPOOL_DIR=str(tmp / "spool"),
            H0P_CACHE_SIZE=str(max(100_000, args.links + 1000)),
            H0P_KAFKA_GROUP=f"bench-cap-ingest-{RUN_ID}", H0P_KAFKA_DEAD_LETTER_TOPIC=f"{TOPIC}-dead-letter",
            H0P_INGEST_METRICS_PORT="0", H0P_INGEST_SESSION_TIMEOUT_MS="6000",
            H0P_API_PORT=str(ports["api"]), H0P_API_WORKERS=str(WORKERS), H0P_RATE_LIMITS_ENABLED="false",
            H0P_WEBHOOK_METRICS_PORT="0", H0P_ALLOW_PRIVATE_TARGETS="true",
        )  # fmt: skip
        api_env = {**env, "H0P_DATABASE_URL": named(SITE.database_url, APP_NAMES["api"])}
        wh_env = {**env, "H0P_DATABASE_URL": named(SITE.database_url, APP_NAMES["webhooks"])}
        st = Stack(tmp, env, api_env, wh_env, broker)
        st.edge = stack.enter_context(service(h0p_command("redirect"), env, tmp / "edge.log"))
        st.api = stack.enter_context(service(h0p_command("api"), api_env, tmp / "api.log"))
        st.webhooks = stack.enter_context(service(h0p_command("webhooks"), wh_env, tmp / "webhooks.log"))
        st.ingest = [st.start_ingest(stack, 1), st.start_ingest(stack, 2)]
        wait_for_port(ports["edge"], timeout=60)
        wait_for_port(ports["api"], timeout=60)
        check_redirect(ports["edge"], "k000000", SITE)

        # Several passes: each worker must see every slug (the kernel splits the connections between them).
        log("warming both workers' caches")
        run_wrk(script, ports["edge"], 8, args.connections, args.links, 0, SITE)

        async def settle() -> None:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['metrics']}", timeout=5.0) as client:
                conn = await asyncpg.connect(SITE.database_url)
                try:
                    deadline = time.monotonic() + DRAIN_LIMIT_S
                    while time.monotonic() < deadline:
                        stored = acked(await edge_counters(client)) == int(await conn.fetchval(STORED_SQL))
                        outbox = await conn.fetchval(SETTLED_SQL)
                        if stored and outbox == 0:
                            return
                        await asyncio.sleep(0.5)
                    raise RuntimeError("ingest did not store the warm-up's events in time")
                finally:
                    await conn.close()

        asyncio.run(settle())
        for proc in (st.edge, st.api, st.webhooks, *st.ingest):
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}; logs in {tmp}")
        log(f"measuring {args.duration:g}s")
        result = asyncio.run(drill(stack, st, ports, key, script, receiver, args))
        for name, proc in (("edge", st.edge), ("api", st.api), ("webhooks", st.webhooks)):
            if proc.poll() is not None:
                result.notes.append(f"\n**{name} exited during the run** (exit code {proc.returncode}).")
        text = markdown(result, args)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
