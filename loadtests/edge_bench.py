"""Edge benchmark: the redirect edge against nginx returning a static 302, on this machine.

    python -m loadtests.edge_bench [--duration 15] [--connections 64] [--links 100000] [--only nginx]

Everything is its own: a Postgres database (h0p_bench_edge_<pid>, dropped afterwards), a Redis
db index whose keys live under a domain no one else uses (removed afterwards), a Tansu broker on a
free port and one topic per scenario. The server under test (nginx or `h0p redirect`) is
pinned to core 0; wrk and the broker to core 1 (in production the broker is another machine,
so it must not take the edge's core); Postgres and Redis float. A wrk Lua script walks
the slugs in order, so a run touches as many different links as it sends requests, and reports
p50/p99 from ``done()``. Prints a markdown section on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition

from api import db
from loadtests import wrk
from loadtests.wrk import DONE_LUA, WrkResult
from redirect.record import LINK_QUERY, encode, link_key, link_record_from_row
from tests.services import Broker, free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
PG_BASE = os.environ.get("H0P_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
REDIS_BASE = os.environ.get("H0P_BENCH_REDIS", "redis://127.0.0.1:6379")
RUN_ID = os.getpid()
SERVER_CORE = "0"
CLIENT_CORE = "1"

WRK_SCRIPT = (
    r"""
-- Walk the slugs in order from BENCH_OFFSET: n requests touch n different links.
-- Requests are formatted once in init(): wrk's own cost must stay small next to the server's.
local n = tonumber(os.getenv("BENCH_SLUGS"))
local offset = tonumber(os.getenv("BENCH_OFFSET") or "0")
local host = os.getenv("BENCH_HOST")
local reqs = {}
local i = 0

function init(args)
  if host and host ~= "" then wrk.headers["Host"] = host end
  for k = 0, n - 1 do
    reqs[k] = wrk.format("GET", string.format("/k%06d", k))
  end
  i = offset
end

function request()
  local r = reqs[i % n]
  i = i + 1
  return r
end
"""
    + DONE_LUA
)

# The reference run: one fixed request, no Lua per request. wrk's request() hook costs about
# as much as nginx itself here, so the walk script would cap nginx and flatter every ratio.
WRK_STATIC_SCRIPT = 'wrk.path = "/k000000"\nwrk.headers["Host"] = os.getenv("BENCH_HOST")\n' + DONE_LUA

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    # The edge never closes a keep-alive connection; nginx must not either (its default is 1000).
    keepalive_requests 10000000;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 302 https://example.com/landing; }}
    }}
}}
"""


def log(message: str) -> None:
    print(f"edge_bench: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Site:
    """Where one bench run's links live: its own database and a domain no test or stack uses.

    Per run (the pid): two runs at once (several engineers share this machine) must not drop
    each other's database or delete each other's Redis keys, which are removed by the domain's
    prefix at the end (never FLUSHDB: a test session may share the db index).
    """

    name: str  # the bench: "edge", "e2e"

    @property
    def database_url(self) -> str:
        return f"{PG_BASE}/h0p_bench_{self.name}_{RUN_ID}"

    @property
    def domain(self) -> str:
        return f"{self.name}-bench-{RUN_ID}.localhost"

    @property
    def workspace_id(self) -> str:
        return f"ws_{self.name.upper()}BENCH".ljust(28, "0")

    def link_id(self, i: int) -> str:
        return f"link_{self.name.upper()}BENCH".ljust(14, "0") + f"{i:016d}"


SITE = Site("edge")


def h0p_command(name: str) -> list[str]:
    """``h0p <name>`` from the project's venv (or PATH)."""
    h0p = ROOT / ".venv" / "bin" / "h0p"
    return [str(h0p) if h0p.exists() else shutil.which("h0p") or "h0p", name]


@dataclass
class Row:
    name: str
    result: WrkResult
    events: int | None = None  # events in the broker for this scenario
    sent: int = 0  # requests wrk completed in this scenario, warm-up included
    target: str = ""
    target_met: bool | None = None
    count_failed: bool = False
    reference: WrkResult | None = None  # nginx measured just before this scenario
    load: float = 0.0  # 1-minute load average when the measured run ended


def run_wrk(
    script: Path, port: int, seconds: float, connections: int, links: int, offset: int = 0, site: Site = SITE
) -> WrkResult:
    env = {"BENCH_SLUGS": str(links), "BENCH_OFFSET": str(offset), "BENCH_HOST": site.domain}
    return wrk.run_wrk(script, f"http://127.0.0.1:{port}", seconds, connections, CLIENT_CORE, env)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def nginx(tmp: Path) -> Iterator[int]:
    port = free_port()
    conf_dir = tmp / "nginx"
    conf_dir.mkdir()
    conf = conf_dir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=conf_dir, port=port))
    proc = subprocess.Popen(
        ["taskset", "-c", SERVER_CORE, "nginx", "-c", str(conf), "-p", str(conf_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield port
    finally:
        # SIGQUIT: nginx's graceful stop; SIGTERM would be its fast stop, either is fine here.
        stop_process(proc)


def base_env(site: Site, broker: Broker, redis_db: int, topic: str, **extra: str) -> dict[str, str]:
    """The environment of an ``h0p`` process of this run (no H0P_* variable of the caller's leaks in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("H0P_")}
    env["H0P_EDGE_METRICS_PORT"] = "0"  # several edges on one host: the default port fits one (``extra`` may set one)
    env["H0P_EDGE_WORKERS"] = "1"  # one process pinned to one core, as in every figure so far (not one per core)
    env.update(
        H0P_DATABASE_URL=site.database_url,
        H0P_REDIS_URL=f"{REDIS_BASE}/{redis_db}",
        H0P_KAFKA_BOOTSTRAP=broker.bootstrap,
        H0P_KAFKA_TOPIC=topic,
        H0P_DEFAULT_DOMAIN=site.domain,
        H0P_LOG_LEVEL="warning",
        **extra,
    )
    return env


def edge_env(broker: Broker, redis_db: int, port: int, topic: str, spool: Path, **extra: str) -> dict[str, str]:
    return base_env(SITE, broker, redis_db, topic, H0P_REDIRECT_PORT=str(port), H0P_SPOOL_DIR=str(spool), **extra)


def check_redirect(port: int, slug: str, site: Site = SITE) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", f"/{slug}", headers={"Host": site.domain})
        response = conn.getresponse()
        response.read()
        if response.status != 302:
            raise RuntimeError(f"/{slug} answered {response.status}, expected 302")
        return response.getheader("Location") or ""
    finally:
        conn.close()


@contextmanager
def edge(env: dict[str, str], port: int, site: Site = SITE) -> Iterator[subprocess.Popen[bytes]]:
    """``h0p redirect`` pinned to the server core; its first redirect checked (it also creates the topic)."""
    proc = subprocess.Popen(["taskset", "-c", SERVER_CORE, *h0p_command("redirect")], env=env,
                            stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for_port(port, timeout=30)
        location = check_redirect(port, "k000000", site)
        if location != "https://example.com/landing/0":
            raise RuntimeError(f"the edge redirected /k000000 to {location!r}")
        yield proc
    finally:
        # SIGTERM: the edge drains and flushes its event queue before it exits.
        stop_process(proc)


async def load_links(redis_db: int, count: int, site: Site = SITE, extra: Sequence[tuple[str, str, str]] = ()) -> None:
    """A fresh database with ``count`` links (``k000000``...) and ``extra`` (id, slug, url) ones, in Redis too."""
    domain, workspace_id = site.domain, site.workspace_id
    await db.migrate(site.database_url)
    conn = await asyncpg.connect(site.database_url)
    r = aioredis.Redis.from_url(f"{REDIS_BASE}/{redis_db}", socket_timeout=30)
    try:
        await conn.copy_records_to_table("workspaces", records=[(workspace_id, site.name)], columns=["id", "name"])
        rows = [
            (site.link_id(i), workspace_id, domain, f"k{i:06d}", f"https://example.com/landing/{i}")
            for i in range(count)
        ]
        rows += [(link_id, workspace_id, domain, slug, url) for link_id, slug, url in extra]
        await conn.copy_records_to_table("links", records=rows, columns=["id", "workspace_id", "domain", "slug", "url"])
        # The edge's own fallback query, minus the slug: the records are exactly what it would build.
        query = LINK_QUERY.replace(" AND slug = $2", "").replace("SELECT id,", "SELECT slug AS bench_slug, id,")
        async with conn.transaction():
            batch: list[tuple[str, bytes]] = []
            async for row in conn.cursor(query, domain, prefetch=5000):
                batch.append((link_key(domain, row["bench_slug"]), encode(link_record_from_row(row))))
                if len(batch) == 5000:
                    await r.mset(dict(batch))
                    batch.clear()
            if batch:
                await r.mset(dict(batch))
    finally:
        await conn.close()
        await r.aclose()


async def remove_redis_keys(redis_db: int, site: Site = SITE) -> None:
    r = aioredis.Redis.from_url(f"{REDIS_BASE}/{redis_db}", socket_timeout=30)
    try:
        batch = []
        async for key in r.scan_iter(match=f"h0p:*{site.domain}*", count=5000):
            batch.append(key)
            if len(batch) == 5000:
                await r.unlink(*batch)
                batch.clear()
        if batch:
            await r.unlink(*batch)
    finally:
        await r.aclose()


async def pick_redis_db() -> int:
    """The highest-numbered empty db index (tests pick theirs at random; prefer an idle one)."""
    r = aioredis.Redis.from_url(f"{REDIS_BASE}/0", socket_timeout=5)
    try:
        keyspace = await r.info("keyspace")
    finally:
        await r.aclose()
    used = {int(name.removeprefix("db")) for name in keyspace}
    free = [i for i in range(15, 0, -1) if i not in used]
    return free[0] if free else 15


async def count_events(bootstrap: str, topic: str) -> int:
    """Read the topic from the start to its end offsets and count the records."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=30000)
    await consumer.start()
    try:
        await consumer.topics()  # fetches the cluster's metadata, this topic's partitions included
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in partitions]
        if not tps:
            return 0
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        count = 0
        done = {tp for tp in tps if end[tp] == 0}
        deadline = time.monotonic() + 120
        while len(done) < len(tps) and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=1000, max_records=50_000)
            for tp, records in batches.items():
                count += len(records)
                if records and records[-1].offset + 1 >= end[tp]:
                    done.add(tp)
        return count
    finally:
        await consumer.stop()


def measure_edge(
    name: str,
    script: Path,
    tmp: Path,
    broker: Broker,
    redis_db: int,
    args: argparse.Namespace,
    reference: Callable[[], WrkResult],
    **extra: str,
) -> Row:
    port = free_port()
    key = "".join(c if c.isalnum() else "-" for c in name)
    topic = f"bench-clicks-{key}-{os.getpid()}"
    spool = tmp / f"spool-{key}"
    env = edge_env(broker, redis_db, port, topic, spool, **extra)
    sent = 0
    # The machine is shared: nginx is measured right before each scenario, so a ratio compares
    # two runs under the same background load, not runs minutes apart.
    ref = reference()
    with edge(env, port):
        sent += 1  # check_redirect's request
        if extra.get("H0P_CACHE_SIZE") == "0":
            warm = run_wrk(script, port, 3, args.connections, args.links)
            sent += warm.requests
        else:
            # Walk every slug once (in order) so the measured run hits a warm in-process cache.
            while sent < args.links:
                warm = run_wrk(script, port, 10, args.connections, args.links, offset=sent)
                sent += warm.requests
        log(f"{name}: warm-up done ({sent} requests), measuring {args.duration}s")
        result = run_wrk(script, port, args.duration, args.connections, args.links)
        sent += result.requests
        load = os.getloadavg()[0]
    row = Row(name=name, result=result, sent=sent, reference=ref, load=load)
    if extra.get("H0P_CLICK_EVENTS") != "false":
        try:
            row.events = asyncio.run(count_events(broker.bootstrap, topic))
        except Exception as exc:  # keep the other measurements; the table says the count is missing
            log(f"{name}: counting the events failed: {exc!r}")
            row.count_failed = True
    leftover = sum(p.stat().st_size for p in spool.glob("**/*") if p.is_file())
    if leftover:
        log(f"{name}: {leftover} bytes left in the spool after shutdown")
    return row


def markdown(rows: list[Row], args: argparse.Namespace) -> str:
    lines = [
        "## Redirect edge",
        "",
        f"{args.links:,} links; wrk -t1 -c{args.connections}, {args.duration:g}s per measured run; "
        f"server pinned to core {SERVER_CORE} (one worker), wrk and the broker (Tansu) to core {CLIENT_CORE}; "
        "Postgres and Redis unpinned. The edge's in-process cache is warmed by walking every "
        "slug once first. Edge requests walk the slugs in order (a wrk Lua `request()`); the nginx reference is "
        "one fixed request without per-request Lua (that hook costs wrk time; the slug-walk row shows nginx "
        "with the edge's client). nginx is measured again right before each edge scenario and each ratio is to "
        "that run, because the machine is shared and its background load moves; the load column is the 1-minute "
        "load average at the end of the run (2 cores: above ~1 means the run competed for CPU).",
        "",
        "| scenario | requests/s | p50 ms | p99 ms | nginx requests/s (run just before) | vs nginx | errors "
        "| events in broker / requests sent | load | target |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        r = row.result
        ref = row.reference.rps if row.reference else 0.0
        ratio = f"{r.rps / ref:.0%}" if ref else "-"
        if row.count_failed:
            events = "count failed"
        elif row.events is None:
            events = "-" if row.name.startswith("nginx") else "- (events off)"
        else:
            events = f"{row.events:,} / {row.sent:,}"
        verdict = "" if row.target_met is None else (" ✅" if row.target_met else " ❌")
        lines.append(
            f"| {row.name} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {ref:,.0f} | {ratio} | {r.errors} "
            f"| {events} | {row.load:.1f} | {row.target}{verdict} |"
        )
    lines += [
        "",
        "Events: every request the edge answered (warm-up included) should be one record in the topic; "
        f"wrk does not count up to {args.connections} requests in flight when each run ends, so the broker "
        "may hold slightly more than wrk reports, never fewer.",
        "",
    ]
    return "\n".join(lines)


def judge(rows: list[Row], connections: int) -> None:
    targets = {
        "edge, cache hits, events": (0.25, 5.0, True),
        "edge, cache hits, no events": (0.30, None, False),
        "edge, no in-process cache, events": (0.15, None, True),
    }
    for row in rows:
        if row.name not in targets or row.reference is None:
            continue
        reference = row.reference.rps
        ratio, p99, events = targets[row.name]
        parts = [f"≥{ratio:.0%}"] + ([f"p99<{p99:g}ms"] if p99 else []) + (["all events"] if events else [])
        row.target = ", ".join(parts)
        ok = row.result.rps >= ratio * reference and row.result.errors == 0
        if p99 is not None:
            ok = ok and row.result.p99_ms < p99
        if events:
            # Up to `connections` in-flight requests per wrk run are answered but not counted by wrk.
            ok = ok and row.events is not None and row.sent <= row.events <= row.sent + 8 * connections
        row.target_met = ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per measured run (default 15)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--links", type=int, default=100_000)
    parser.add_argument("--only", choices=["nginx"], help="measure nginx alone (to check the harness)")
    args = parser.parse_args(argv)
    for tool in ("wrk", "nginx", "taskset"):
        if not shutil.which(tool):
            log(f"{tool} is not installed: run `make bench` (it installs wrk and nginx)")
            return 2

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="h0p-edge-bench-") as tmp_name:
        tmp = Path(tmp_name)
        script = tmp / "walk.lua"
        script.write_text(WRK_SCRIPT)
        static = tmp / "static.lua"
        static.write_text(WRK_STATIC_SCRIPT)
        redis_db = asyncio.run(pick_redis_db())
        with nginx(tmp) as nginx_port:

            def reference() -> WrkResult:
                log(f"nginx: measuring {args.duration:g}s")
                return run_wrk(static, nginx_port, args.duration, args.connections, args.links)

            run_wrk(static, nginx_port, 3, args.connections, args.links)
            first = reference()
            rows.append(Row(name="nginx", result=first, reference=first, load=os.getloadavg()[0]))
            walk = run_wrk(script, nginx_port, args.duration, args.connections, args.links)
            rows.append(Row(name="nginx, slug-walk client", result=walk, reference=first, load=os.getloadavg()[0]))
            if args.only != "nginx":
                broker = Broker().start()
                assert broker.proc is not None
                # every thread of the broker onto the client's core: it stands for another machine
                subprocess.run(["taskset", "-apc", CLIENT_CORE, str(broker.proc.pid)], check=True,
                               stdout=subprocess.DEVNULL)  # fmt: skip
                try:
                    log(f"loading {args.links:,} links ({SITE.database_url.rsplit('/', 1)[1]}, Redis db {redis_db})")
                    asyncio.run(load_links(redis_db, args.links))
                    scenarios: list[tuple[str, dict[str, str]]] = [
                        ("edge, cache hits, events", {}),
                        ("edge, cache hits, no events", {"H0P_CLICK_EVENTS": "false"}),
                        ("edge, no in-process cache, events", {"H0P_CACHE_SIZE": "0"}),
                    ]
                    for name, extra in scenarios:
                        rows.append(measure_edge(name, script, tmp, broker, redis_db, args, reference, **extra))
                finally:
                    broker.stop()
                    asyncio.run(remove_redis_keys(redis_db))
                    asyncio.run(db.drop_database(SITE.database_url))
    judge(rows, args.connections)
    print(markdown(rows, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
