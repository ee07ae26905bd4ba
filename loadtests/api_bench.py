"""API benchmark: link creation through the API, and GET /links on a workspace of 100,000 links.

    python -m loadtests.api_bench [--duration 10] [--connections 16] [--links 100000]

Everything is its own: a Postgres database (h0p_bench_api, dropped afterwards), a Redis db
index whose link keys live under a domain no one else uses (removed afterwards). One API
process (`api.app.serve`, uvicorn + uvloop) runs with rate limits off (H0P_RATE_LIMITS_ENABLED
=false) but with a real API key, so each request pays for its authentication; it is pinned to
core 0 and wrk to core 1; Postgres and Redis float. The 100,000 links are loaded with COPY.
Prints a markdown section on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

from api import db
from api.ids import new_id
from api.services.context import ServiceContext, close_context, open_context
from api.services.keys import create_key
from api.services.workspaces import get_or_create_workspace
from h0p_settings import load_settings
from loadtests import wrk
from loadtests.wrk import DONE_LUA, WrkResult, pinned
from tests.services import free_port, wait_for_port

PG_BASE = os.environ.get("H0P_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
REDIS_BASE = os.environ.get("H0P_BENCH_REDIS", "redis://127.0.0.1:6379")
DATABASE_URL = f"{PG_BASE}/h0p_bench_api"
DOMAIN = "bench-api.h0p.test"
SERVER_CORE, CLIENT_CORE = "0", "1"
WRK_SCRIPT = (
    """
wrk.method = os.getenv("BENCH_METHOD")
wrk.path = os.getenv("BENCH_PATH")
local body = os.getenv("BENCH_BODY")
if body ~= nil and body ~= "" then wrk.body = body end
wrk.headers["x-api-key"] = os.getenv("BENCH_KEY")
wrk.headers["content-type"] = "application/json"
"""
    + DONE_LUA
)


def log(message: str) -> None:
    print(f"api_bench: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Result:
    name: str
    run: WrkResult


def run_wrk(
    name: str, script: Path, port: int, key: str, method: str, path: str, body: str, args: argparse.Namespace
) -> Result:
    env = {"BENCH_METHOD": method, "BENCH_PATH": path, "BENCH_BODY": body, "BENCH_KEY": key}
    url = f"http://127.0.0.1:{port}"
    return Result(name, wrk.run_wrk(script, url, args.duration, args.connections, CLIENT_CORE, env))


async def copy_links(database_url: str, workspace_id: str, domain: str, links: int) -> None:
    """``links`` bench links of the workspace, loaded with COPY (a year of creation times, varied clicks)."""
    start = datetime.now(UTC) - timedelta(days=365)
    records = [
        (new_id("link"), workspace_id, domain, f"b{i:07d}", f"https://example.com/page/{i}?ref=bench",
         f"Bench link {i}", start + timedelta(seconds=i * 300), (i * 7919) % 10_000)
        for i in range(links)
    ]  # fmt: skip
    conn: asyncpg.Connection = await asyncpg.connect(database_url)
    try:
        await conn.copy_records_to_table(
            "links",
            records=records,
            columns=["id", "workspace_id", "domain", "slug", "url", "title", "created_at", "clicks"],
        )
        # what autovacuum does on its own after a bulk insert: visibility map (index-only counts) and stats
        await conn.execute("VACUUM ANALYZE links")
    finally:
        await conn.close()


@asynccontextmanager
async def loaded_workspace(
    database_url: str, redis_url: str, domain: str, links: int
) -> AsyncIterator[tuple[ServiceContext, str]]:
    """A fresh database whose workspace bench-100k has ``links`` links (COPY), and a service context
    on it for the rest of a bench's setup: (context, workspace id)."""
    await db.drop_database(database_url)
    await db.migrate(database_url)
    settings = load_settings(
        {"H0P_DATABASE_URL": database_url, "H0P_REDIS_URL": redis_url, "H0P_DEFAULT_DOMAIN": domain}
    )
    ctx = await open_context(settings)
    try:
        workspace = await get_or_create_workspace(ctx, "bench-100k")
        await copy_links(database_url, workspace.id, domain, links)
        yield ctx, workspace.id
    finally:
        await close_context(ctx)


async def prepare(redis_url: str, links: int) -> tuple[str, str, int]:
    """A fresh database, a workspace with ``links`` links (COPY) and an empty one; their keys."""
    async with loaded_workspace(DATABASE_URL, redis_url, DOMAIN, links) as (ctx, big_id):
        empty = await get_or_create_workspace(ctx, "bench-create")
        _, big_key = await create_key(ctx, big_id, "bench", None)
        _, create_key_secret = await create_key(ctx, empty.id, "bench", None)
        return big_key, create_key_secret, links


async def remove_keys(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        batch = [key async for key in r.scan_iter(match=f"h0p:l:{DOMAIN}/*", count=1000)]
        for i in range(0, len(batch), 1000):
            await r.unlink(*batch[i : i + 1000])
    finally:
        await r.aclose()


@contextmanager
def api_process(port: int, settings: dict[str, str], prefix: Sequence[str] = ()) -> Iterator[None]:
    """An `api.app.serve` process on ``port`` with these H0P_ settings only (none from this shell),
    started behind ``prefix`` (e.g. taskset) and ready; stopped on leaving."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("H0P_")}
    env.update(settings, H0P_API_PORT=str(port))
    code = "from api.app import serve; from h0p_settings import load_settings_or_exit; serve(load_settings_or_exit())"
    proc = subprocess.Popen([*prefix, sys.executable, "-c", code], env=env)
    try:
        wait_for_port(port, timeout=30)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def markdown(results: list[Result], args: argparse.Namespace, created: int) -> str:
    lines = [
        "## API (management API, one process)",
        "",
        f"One `api.app.serve` process (uvicorn + uvloop) pinned to core {SERVER_CORE}, wrk on core {CLIENT_CORE}, "
        f"{args.connections} connections, {args.duration} s per row. Rate limits off; every request authenticated "
        f"with a real API key. Link creation writes Postgres, the cache outbox and the Redis record, and publishes "
        f"the invalidation. The list rows read a workspace of {args.links:,} links (loaded with COPY).",
        "",
        "| scenario | requests/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r.name} | {r.run.rps:,.0f} | {r.run.p50_ms:.1f} | {r.run.p99_ms:.1f} | {r.run.errors} |")
    lines += ["", f"Links created through the API during the run: {created:,}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--links", type=int, default=100_000)
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        log("wrk is missing (make bench installs it)")
        return 2
    redis_url = f"{REDIS_BASE}/15"
    port = free_port()
    log(f"loading {args.links:,} links into h0p_bench_api (COPY)")
    t0 = time.monotonic()
    big_key, creator_key, _ = asyncio.run(prepare(redis_url, args.links))
    log(f"loaded in {time.monotonic() - t0:.1f} s")
    results: list[Result] = []
    try:
        settings = {
            "H0P_DATABASE_URL": DATABASE_URL,
            "H0P_REDIS_URL": redis_url,
            "H0P_DEFAULT_DOMAIN": DOMAIN,
            "H0P_RATE_LIMITS_ENABLED": "false",
            "H0P_LOG_LEVEL": "warning",
        }
        with tempfile.TemporaryDirectory() as tmp, api_process(port, settings, pinned(SERVER_CORE)):
            script = Path(tmp) / "api.lua"
            script.write_text(WRK_SCRIPT)
            body = json.dumps({"url": "https://example.com/bench-target?x=1", "title": "bench"})
            scenarios = [
                ("POST /links (create, generated slug)", creator_key, "POST", "/links", body),
                (f"GET /links (page 0 of {args.links:,}, newest first)", big_key, "GET", "/links", ""),
                ("GET /links?page=500&limit=50 (offset 25,000)", big_key, "GET", "/links?page=500&limit=50", ""),
                ("GET /links?sort=clicks", big_key, "GET", "/links?sort=clicks", ""),
                ("GET /links?search=page/4242", big_key, "GET", "/links?search=page/4242", ""),
            ]
            for name, key, method, path, payload in scenarios:
                log(f"running {name}")
                results.append(run_wrk(name, script, port, key, method, path, payload, args))
        created = asyncio.run(_count_created())
    finally:
        asyncio.run(remove_keys(redis_url))
        asyncio.run(db.drop_database(DATABASE_URL))
    print(markdown(results, args, created))
    return 0


async def _count_created() -> int:
    conn = await asyncpg.connect(DATABASE_URL)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM links l JOIN workspaces w ON w.id = l.workspace_id WHERE w.name = 'bench-create'"
        )
        return count
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(main())
