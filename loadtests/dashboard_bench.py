"""Dashboard benchmark: server time of the main pages on a 100,000-link workspace, the size of
the JavaScript and CSS a browser downloads, and how long headless Chromium takes to show Links.

    python -m loadtests.dashboard_bench [--links 100000] [--requests 200]

One `api.app.serve` process (uvicorn + uvloop) on its own database (h0p_bench_dashboard,
dropped afterwards) and Redis db 14 (only its own keys removed); the links are loaded with
COPY. Pages are requested one at a time over loopback with a signed-in session (the time
includes the loopback round trip, so it is an upper bound of the server time). The page load
is Playwright driving Debian's chromium (``/usr/bin/chromium``): navigation start to the load
event of /app/links, signed in. Targets: p95 < 100 ms per page, JS + CSS < 250 KB gzipped,
Links shown in < 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import re
import statistics
import sys
import time
from pathlib import Path

import httpx
import redis.asyncio as aioredis

from api import db
from api.services import folders, tags, users
from api.services.keys import create_key
from loadtests.api_bench import api_process, loaded_workspace
from tests.services import free_port

PG_BASE = os.environ.get("H0P_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
REDIS_BASE = os.environ.get("H0P_BENCH_REDIS", "redis://127.0.0.1:6379")
DATABASE_URL = f"{PG_BASE}/h0p_bench_dashboard"
REDIS_URL = f"{REDIS_BASE}/14"
DOMAIN = "bench-dash.h0p.test"
EMAIL, PASSWORD = "bench@example.com", "bench password 123"
CHROMIUM = "/usr/bin/chromium"
STATIC = Path(__file__).resolve().parent.parent / "api" / "dashboard" / "static"
ASSETS = ("vendor/htmx.min.js", "app.js", "app.css")


def log(message: str) -> None:
    print(f"dashboard_bench: {message}", file=sys.stderr, flush=True)


async def prepare(links: int) -> None:
    """A fresh database; a workspace with ``links`` links (COPY), folders, tags, keys and its owner."""
    async with loaded_workspace(DATABASE_URL, REDIS_URL, DOMAIN, links) as (ctx, ws_id):
        await users.create_user(ctx, EMAIL, PASSWORD, ws_id, "owner")
        from api.schemas import FolderWrite, TagCreate

        for i in range(20):
            await folders.create_folder(ctx, ws_id, FolderWrite(name=f"Folder {i}"))
            await tags.create_tag(ctx, ws_id, TagCreate(name=f"tag-{i}"))
        for i in range(10):
            await create_key(ctx, ws_id, f"key {i}", None)


async def remove_keys() -> None:
    r = aioredis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        batch = [key async for key in r.scan_iter(match="h0p:dash:*", count=1000)]
        if batch:
            await r.unlink(*batch)
    finally:
        await r.aclose()


def sign_in(client: httpx.Client) -> None:
    form = client.get("/app/signin")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None
    r = client.post("/app/signin", data={"csrf": token.group(1), "email": EMAIL, "password": PASSWORD, "next": ""})
    if r.status_code != 303:
        raise SystemExit(f"dashboard_bench: sign-in answered {r.status_code}")


def page_times(client: httpx.Client, path: str, requests: int) -> tuple[float, float, int]:
    """(p50 ms, p95 ms, bytes) of ``requests`` sequential GETs after 10 warm-up ones."""
    for _ in range(10):
        client.get(path)
    durations = []
    size = 0
    for _ in range(requests):
        t0 = time.perf_counter()
        r = client.get(path)
        durations.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:
            raise SystemExit(f"dashboard_bench: GET {path} answered {r.status_code}")
        size = len(r.content)
    durations.sort()
    return statistics.median(durations), durations[int(len(durations) * 0.95) - 1], size


def asset_sizes() -> list[tuple[str, int, int]]:
    return [
        (name, len(data), len(gzip.compress(data, 9))) for name in ASSETS for data in [(STATIC / name).read_bytes()]
    ]


def browser_load(base: str, runs: int) -> list[float]:
    """Navigation start → load event of /app/links in headless Chromium, signed in (ms per run)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            context = browser.new_context(base_url=base)
            page = context.new_page()
            page.goto("/app/signin")
            page.get_by_label("Email").fill(EMAIL)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url("**/app/links")
            times = []
            for _ in range(runs):
                page.goto("/app/links", wait_until="load")
                times.append(page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd"))
            return times
        finally:
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--links", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--browser-runs", type=int, default=10)
    args = parser.parse_args()
    log(f"loading {args.links:,} links into h0p_bench_dashboard (COPY)")
    asyncio.run(prepare(args.links))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    pages = [
        ("Links, first page (newest)", "/app/links"),
        ("Links, search", "/app/links?search=Bench+link+9999"),
        ("Links, sorted by clicks, page 100", "/app/links?sort=clicks&page=100"),
        ("Create link form", "/app/links/new"),
        ("API Keys", "/app/keys"),
    ]
    rows = []
    try:
        settings = {
            "H0P_DATABASE_URL": DATABASE_URL,
            "H0P_REDIS_URL": REDIS_URL,
            "H0P_LOG_LEVEL": "warning",
            "H0P_SECRET_KEY": "dashboard-bench-secret-0123456789abcdef",
        }
        with api_process(port, settings), httpx.Client(base_url=base, timeout=30) as client:
            sign_in(client)
            for name, path in pages:
                log(f"GET {path} × {args.requests}")
                p50, p95, size = page_times(client, path, args.requests)
                rows.append(f"| {name} | `{path}` | {p50:.1f} | {p95:.1f} | {'yes' if p95 < 100 else '**no**'} | "
                            f"{size / 1024:.0f} KB |")  # fmt: skip
            log("headless Chromium: /app/links")
            loads = browser_load(base, args.browser_runs) if Path(CHROMIUM).exists() else []
    finally:
        asyncio.run(remove_keys())
        asyncio.run(db.drop_database(DATABASE_URL))
    assets = asset_sizes()
    total_gz = sum(gz for _, _, gz in assets)
    lines = [
        "## Dashboard",
        "",
        f"One `api.app.serve` process; a workspace of {args.links:,} links (COPY), 20 folders, 20 tags, 10 keys. "
        f"{args.requests} sequential GETs per page over loopback with a signed-in session, after 10 warm-up ones "
        "(client-measured: an upper bound of the server time).",
        "",
        "| Page | Path | p50 ms | p95 ms | p95 < 100 ms | HTML |",
        "|---|---|---:|---:|:---:|---:|",
        *rows,
        "",
        "| Asset | Bytes | Gzipped |",
        "|---|---:|---:|",
        *(f"| `{name}` | {raw:,} | {gz:,} |" for name, raw, gz in assets),
        f"| **JS + CSS** | {sum(r for _, r, _ in assets):,} | **{total_gz:,}** "
        f"({'< 250 KB: met' if total_gz < 250 * 1024 else '**not met**'}) |",
        "",
    ]
    if loads:
        median = statistics.median(loads)
        lines.append(
            f"Headless Chromium ({CHROMIUM}), /app/links signed in, navigation start to load event over "
            f"{len(loads)} loads: median {median:.0f} ms, worst {max(loads):.0f} ms "
            f"({'< 1 s: met' if max(loads) < 1000 else '**not met**'})."
        )
    else:
        lines.append(f"Headless Chromium: not measured ({CHROMIUM} is missing).")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
