"""Live clicks benchmark (a section of ``make bench``): from a redirect sent to the edge to its row in the browser.

    python -m loadtests.live_bench [--clicks 200] [--rate 10] [--load-clicks 100] [--load-seconds 14]

The whole path, each part a real process on 127.0.0.1 with production settings (no shortened
lingers): ``h0p redirect`` → a Tansu broker → ``h0p ingest`` → Redis (its own redis-server) → the
API's ``/app/analytics/live`` → headless Debian chromium (Playwright), signed into the dashboard
with the Analytics page and the link's page open. Each measured click is a redirect carrying a
marker (``Referer: https://m<n>.example.org/``, ``utm_content=<n>``); a MutationObserver in each
page stamps every new live row with ``performance.timeOrigin + performance.now()`` (wall clock;
the browser and this process share the machine's clock). Latency = row stamped - request sent.
A plain SSE client of ``GET /analytics/live`` (API key) reads the same clicks, for comparison.

Two runs: clicks paced at ``--rate`` on an idle stack, then the same under background redirects
(wrk, as fast as the edge goes, to another workspace's link: the pipeline is busy, the page only
shows its own workspace's clicks). Its own database (dropped afterwards), broker, redis-server;
bounded in time (about a minute), stops by itself. Markdown on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from playwright.sync_api import Page, sync_playwright

from api import db
from loadtests.wrk import DONE_LUA, WrkResult, run_wrk
from tests.redis_server import RedisServer
from tests.services import Broker, free_port, wait_for_port

DB_URL = os.environ.get(
    "H0P_BENCH_LIVE_DATABASE_URL", f"postgresql://postgres@127.0.0.1:5432/h0p_bench_livepage_{os.getpid()}"
)
CHROMIUM = os.environ.get("H0P_TEST_CHROMIUM", "/usr/bin/chromium")
PASSWORD = secrets.token_urlsafe(16)
TARGET_MS = 2000  # issue 16: a click shows in the live view within 2 s
DRAIN_S = 15.0  # after the last click is sent, how long its row may take before it counts as lost
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)
_SERVE = "from {0} import serve; from h0p_settings import load_settings_or_exit as s; serve(s())"
# Stamps each live row as it is inserted: (the row's referer cell, wall-clock ms). Evaluated through
# the DevTools protocol, so the page's CSP (no inline script) does not apply.
OBSERVE_JS = """() => {
  window.__rows = [];
  const body = document.querySelector('#live-clicks tbody');
  new MutationObserver((records) => {
    const t = performance.timeOrigin + performance.now();
    for (const r of records) for (const n of r.addedNodes)
      if (n.nodeName === 'TR' && n.cells.length > 5) window.__rows.push([n.cells[5].textContent, t]);
  }).observe(body, {childList: true});
}"""


def log(message: str) -> None:
    print(f"live_bench: {message}", file=sys.stderr, flush=True)


@dataclass
class Stack:
    env: dict[str, str]
    api: str
    edge: str
    edge_port: int
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def cli(self, *args: str) -> str:
        run = subprocess.run([sys.executable, "-m", "api.cli", *args], env={**self.env, "H0P_USER_PASSWORD": PASSWORD},
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        if run.returncode:
            raise RuntimeError(f"h0p {' '.join(args[:2])}: {run.stderr.strip()}")
        return run.stdout.strip()

    def workspace(self, name: str) -> tuple[str, str, dict[str, str]]:
        """An owner (email), an API key and a link of a new workspace."""
        email = f"{name}@example.com"
        self.cli("users", "create", email, "--workspace", name, "--role", "owner", "--create-workspace")
        key = self.cli("keys", "create", "--workspace", name)
        r = httpx.post(f"{self.api}/links", headers={"x-api-key": key}, timeout=30,
                       json={"url": "https://example.com/landing", "slug": f"{name}-link"})  # fmt: skip
        r.raise_for_status()
        return email, key, r.json()


@contextlib.contextmanager
def stack() -> Iterator[Stack]:
    broker, redis = Broker().start(), RedisServer().start()
    files = tempfile.mkdtemp(prefix="h0p-live-bench-")
    api_port, edge_port, metrics_port = free_port(), free_port(), free_port()
    env = {**os.environ, "H0P_DATABASE_URL": DB_URL, "H0P_REDIS_URL": redis.url,
           "H0P_KAFKA_BOOTSTRAP": broker.bootstrap, "H0P_KAFKA_TOPIC": "live-bench",
           "H0P_KAFKA_DEAD_LETTER_TOPIC": "live-bench-dlq",
           "H0P_KAFKA_GROUP": "live-bench", "H0P_API_PORT": str(api_port), "H0P_REDIRECT_PORT": str(edge_port),
           "H0P_INGEST_METRICS_PORT": str(metrics_port), "H0P_EDGE_METRICS_PORT": "0", "H0P_BIND_HOST": "127.0.0.1",
           "H0P_TRUSTED_PROXIES": "127.0.0.1/32", "H0P_FILES_DIR": f"{files}/files", "H0P_SPOOL_DIR": f"{files}/spool",
           "H0P_RATE_LIMITS_ENABLED": "false", "H0P_LOG_LEVEL": "warning"}  # fmt: skip
    env.pop("H0P_USER_PASSWORD", None)
    s = Stack(env, f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{edge_port}", edge_port)
    try:
        asyncio.run(db.drop_database(DB_URL))
        asyncio.run(db.migrate(DB_URL))
        for module, port in (("api.app", api_port), ("redirect.app", edge_port), ("ingest.consumer", metrics_port)):
            s.procs.append(subprocess.Popen([sys.executable, "-c", _SERVE.format(module)], env=env))
            wait_for_port(port, timeout=60)
        yield s
    finally:
        for p in s.procs:
            p.terminate()
        for p in s.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        broker.stop()
        redis.stop()
        asyncio.run(db.drop_database(DB_URL))
        shutil.rmtree(files, ignore_errors=True)


class SseClient:
    """``GET /analytics/live`` with an API key, in a thread: wall-clock arrival per utm_content marker."""

    def __init__(self, api: str, key: str) -> None:
        self.arrived: dict[str, float] = {}
        self.client = httpx.Client(base_url=api, headers={"x-api-key": key}, timeout=httpx.Timeout(30, read=None))
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        if not self.ready.wait(30):
            raise RuntimeError("GET /analytics/live did not answer")

    def _read(self) -> None:
        with contextlib.suppress(httpx.HTTPError, RuntimeError), self.client.stream("GET", "/analytics/live") as r:
            r.raise_for_status()
            self.ready.set()
            for line in r.iter_lines():
                if line.startswith("data: "):
                    now = time.time()
                    for click in json.loads(line[6:]):
                        self.arrived.setdefault(click.get("utm_content") or "", now)

    def close(self) -> None:
        self.client.close()


def send(edge: httpx.Client, slug: str, marker: str) -> float:
    """One marked redirect; returns the wall-clock time it was sent."""
    sent = time.time()
    r = edge.get(
        f"/{slug}?utm_content={marker}", headers={"user-agent": CHROME, "referer": f"https://{marker}.example.org/"}
    )
    if r.status_code != 302:
        raise RuntimeError(f"the edge answered {r.status_code} to /{slug}")
    return sent


def rows(page: Page) -> dict[str, float]:
    """First stamp of each marker's row on the page."""
    seen: dict[str, float] = {}
    for text, t in page.evaluate("() => window.__rows"):
        seen.setdefault(text.split(".", 1)[0], t / 1000)
    return seen


@dataclass
class Run:
    name: str
    sent: dict[str, float]
    seen: dict[str, dict[str, float]]  # viewer → marker → wall-clock time
    load: WrkResult | None = None


def paced(edge: httpx.Client, slug: str, prefix: str, clicks: int, rate: float) -> dict[str, float]:
    sent: dict[str, float] = {}
    t0 = time.monotonic()
    for n in range(clicks):
        time.sleep(max(0.0, t0 + n / rate - time.monotonic()))
        marker = f"{prefix}{n}"
        sent[marker] = send(edge, slug, marker)
    return sent


def wait_seen(viewers: dict[str, Page | SseClient], sent: dict[str, float]) -> dict[str, dict[str, float]]:
    deadline = time.monotonic() + DRAIN_S
    while True:
        seen = {name: rows(v) if isinstance(v, Page) else dict(v.arrived) for name, v in viewers.items()}
        if all(set(sent) <= set(s) for s in seen.values()) or time.monotonic() > deadline:
            return seen
        time.sleep(0.25)


def measure(args: argparse.Namespace) -> list[Run]:
    runs: list[Run] = []
    with stack() as s, sync_playwright() as p, httpx.Client(base_url=s.edge, timeout=30) as edge:
        email, key, link = s.workspace(f"live-{secrets.token_hex(3)}")
        _, _, other = s.workspace(f"busy-{secrets.token_hex(3)}")
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            context = browser.new_context(base_url=s.api)
            page = context.new_page()
            page.set_default_timeout(30_000)
            page.goto("/app/signin")
            page.get_by_label("Email").fill(email)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url("**/app/links")
            detail = context.new_page()
            detail.set_default_timeout(30_000)
            page.goto("/app/analytics")
            detail.goto(f"/app/links/{link['id']}")
            for pg in (page, detail):
                pg.wait_for_function("() => document.getElementById('live-status').textContent === 'Live'")
                pg.evaluate(OBSERVE_JS)
            sse = SseClient(s.api, key)
            viewers: dict[str, Page | SseClient] = {"Analytics page": page, "link's page": detail, "SSE client": sse}
            try:
                # the consumer group joins and the first batch flows before anything is measured
                warm = {"w0": send(edge, link["slug"], "w0")}
                deadline = time.monotonic() + 60
                while any("w0" not in seen for seen in wait_seen(viewers, warm).values()):
                    if time.monotonic() > deadline:
                        raise RuntimeError("the warm-up click never reached every viewer")
                log("warm-up click seen by every viewer; paced run")
                sent = paced(edge, link["slug"], "p", args.clicks, args.rate)
                runs.append(Run(f"{args.clicks} clicks at {args.rate:g}/s, idle", sent, wait_seen(viewers, sent)))
                log(f"paced run done; run under wrk for {args.load_seconds:g} s")
                script = Path(tempfile.mkdtemp(prefix="h0p-live-wrk-")) / "busy.lua"
                script.write_text(f'wrk.headers["User-Agent"] = "{CHROME}"\n{DONE_LUA}')
                result: list[WrkResult] = []
                wrk = threading.Thread(target=lambda: result.append(
                    run_wrk(script, f"{s.edge}/{other['slug']}", args.load_seconds, 32, "0-1", {})))  # fmt: skip
                wrk.start()
                time.sleep(2)  # the load is on before the first marked click
                rate = args.load_clicks / (args.load_seconds - 4)
                sent = paced(edge, link["slug"], "b", args.load_clicks, rate)
                wrk.join()
                shutil.rmtree(script.parent, ignore_errors=True)
                runs.append(Run(f"{args.load_clicks} clicks at {rate:.0f}/s under wrk", sent,
                                wait_seen(viewers, sent), result[0] if result else None))  # fmt: skip
            finally:
                sse.close()
        finally:
            browser.close()
    return runs


def quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def markdown(runs: list[Run], args: argparse.Namespace) -> str:
    lines = [
        "## Live clicks: redirect → browser (live_bench)",
        "",
        "Each click is a real redirect sent to the edge (`h0p redirect`, its default one worker per core) and"
        " goes through the broker (Tansu), one `h0p ingest` process, the workspace's Redis Stream and the "
        "API's `/app/analytics/live` to headless Debian chromium, signed into the dashboard with the "
        "Analytics page and the link's page open; production settings (edge linger 20 ms, ingest linger 200 "
        "ms). Latency = the click's row inserted in the page (a MutationObserver's `performance.timeOrigin + "
        "performance.now()`) - the redirect request sent (same machine, same clock). The SSE client row: a "
        "plain `GET /analytics/live` client (API key) reading the same clicks. Lost = not seen within "
        f"{DRAIN_S:g} s after the last click was sent. The second run adds wrk -t1 -c32 redirecting as fast as"
        " it can to another workspace's link (the pipeline busy; the page shows only its workspace's clicks)."
        " Every process shares the machine's 2 cores with other work.",
        "",
        "| run | viewer | clicks | lost | p50 ms | p95 ms | p99 ms | max ms | p50 ms first → last tenth | target |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for run in runs:
        for viewer, seen in run.seen.items():
            lat = sorted((seen[m] - t) * 1000 for m, t in run.sent.items() if m in seen)
            lost = len(run.sent) - len(lat)
            if not lat:
                lines.append(f"| {run.name} | {viewer} | {len(run.sent)} | {lost} | - | - | - | - | - | ❌ |")
                continue
            met = lat[-1] <= TARGET_MS and not lost
            # in the order sent: a growing latency means a backlog building up somewhere on the path
            ordered = [(seen[m] - t) * 1000 for m, t in run.sent.items() if m in seen]
            tenth = max(1, len(ordered) // 10)
            trend = f"{statistics.median(ordered[:tenth]):.0f} → {statistics.median(ordered[-tenth:]):.0f}"
            lines.append(
                f"| {run.name} | {viewer} | {len(run.sent)} | {lost} | {quantile(lat, 0.5):.0f} |"
                f" {quantile(lat, 0.95):.0f} | {quantile(lat, 0.99):.0f} | {lat[-1]:.0f} | {trend} |"
                f" within {TARGET_MS / 1000:g} s {'✅' if met else '❌'} |"
            )
    for run in runs:
        if run.load:
            r = run.load
            lines += ["", f"Background load: {r.requests:,} redirects in {r.duration_s:.0f} s ({r.rps:,.0f}/s,"
                          f" p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms, {r.errors} errors)."]  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clicks", type=int, default=200, help="marked clicks of the paced run")
    parser.add_argument("--rate", type=float, default=10.0, help="marked clicks per second of the paced run")
    parser.add_argument("--load-clicks", type=int, default=100, help="marked clicks of the run under wrk")
    parser.add_argument("--load-seconds", type=float, default=14.0, help="wrk's duration (> 4)")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists() or not shutil.which("wrk"):
        log(f"{CHROMIUM} and wrk are needed (`make bench` installs wrk; apt-get install chromium)")
        return 1
    t0 = time.monotonic()
    runs = measure(args)
    log(f"done in {time.monotonic() - t0:.0f} s")
    print(markdown(runs, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
