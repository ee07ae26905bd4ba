"""QR benchmark: codes drawn per second, with and without a logo, in-process on one core.

    python -m loadtests.qr_bench [--seconds 3] [--no-http]

First table: the QR service's renderer called directly (what the API runs in a worker thread
for each ``GET /qr``): encoding with segno, drawing with Pillow, PNG compression, and for logo
rows decoding and scaling the logo too. Every PNG scenario is decoded once with zxing-cpp
first, so the figures are for codes that scan.

Second table: ``GET /qr`` through the real app in-process (httpx's ASGI transport, no sockets),
one request at a time, with key authentication and the database read of the logo; rate limits
off. It uses its own Postgres database (h0p_bench_qr, dropped afterwards) and a temporary files
directory. Prints a markdown section on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass

import httpx
import zxingcpp
from PIL import Image, ImageDraw

from api import db
from api.app import create_app
from api.services import files
from api.services.keys import create_key
from api.services.qr import QrJob, QrOptions, qr_options, render_qr
from api.services.workspaces import get_or_create_workspace
from h0p_settings import load_settings

PG_BASE = os.environ.get("H0P_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")

SHORT = "https://h0p.example/spring26?qr=1"
FILE = "file_bench"  # the renderer only needs to know there is a logo; its bytes are passed in
LONG = "https://shop.example.com/campaigns/spring-2026/landing?utm_source=poster&utm_medium=print&utm_campaign=s26"


@dataclass(frozen=True)
class Scenario:
    name: str
    options: QrOptions
    logo: bytes | None = None


def _logo() -> bytes:
    im = Image.new("RGBA", (400, 400), (200, 30, 30, 255))
    ImageDraw.Draw(im).ellipse((50, 50, 350, 350), fill=(0, 0, 0, 255))
    out = io.BytesIO()
    im.save(out, format="PNG")
    return out.getvalue()


def scenarios() -> list[Scenario]:
    logo = _logo()
    return [
        Scenario("PNG 512 px, no logo (level M)", qr_options(SHORT, size=512)),
        Scenario("PNG 512 px, long URL, no logo (level M)", qr_options(LONG, size=512)),
        Scenario("PNG 1024 px, no logo (level M)", qr_options(SHORT, size=1024)),
        Scenario("PNG 512 px, logo 20% (level H)", qr_options(SHORT, size=512, logo=FILE, logo_size=20), logo),
        Scenario("PNG 1024 px, logo 25% (level H)", qr_options(SHORT, size=1024, logo=FILE, logo_size=25), logo),
        Scenario("SVG, no logo (level M)", qr_options(SHORT, format="svg")),
        Scenario("SVG, logo 20% (level H)", qr_options(SHORT, format="svg", logo=FILE), logo),
    ]


def _check_scans(s: Scenario) -> None:
    image = render_qr(QrJob(s.options, s.logo, "0" * 64 if s.logo else None))
    if s.options.format != "png":
        return  # the SVG rows are checked by the test suite (cairo rendering is not the thing timed here)
    found = [b.text for b in zxingcpp.read_barcodes(Image.open(io.BytesIO(image.content)))]
    if found != [s.options.data]:
        raise SystemExit(f"qr_bench: {s.name} does not scan: {found}")


def measure(s: Scenario, seconds: float) -> tuple[float, float, int]:
    """(codes per second, p50 ms) over ``seconds`` of back-to-back renders, and the output size."""
    job = QrJob(s.options, s.logo, "0" * 64 if s.logo else None)
    size = len(render_qr(job).content)  # warm-up
    durations: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        render_qr(job)
        durations.append(time.perf_counter() - t0)
    return len(durations) / sum(durations), statistics.median(durations) * 1000, size


async def _timed_requests(
    client: httpx.AsyncClient, params: dict[str, str], headers: dict[str, str], seconds: float, status: int
) -> tuple[float, float]:
    durations: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        r = await client.get("/qr", params=params, headers=headers)
        durations.append(time.perf_counter() - t0)
        if r.status_code != status:
            raise SystemExit(f"qr_bench: GET /qr {params} answered {r.status_code}: {r.text[:200]}")
    durations.sort()
    return len(durations) / sum(durations), durations[int(len(durations) * 0.99)] * 1000


async def http_rows(seconds: float) -> list[str]:
    """GET /qr through the app in-process: with and without a logo, and a 304 revalidation."""
    database_url = f"{PG_BASE}/h0p_bench_qr"
    await db.drop_database(database_url)
    await db.migrate(database_url)
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="h0p-qr-bench-") as tmp:
            settings = dataclasses.replace(
                load_settings(), database_url=database_url, files_dir=tmp, rate_limits_enabled=False
            )
            app = create_app(settings)
            async with app.router.lifespan_context(app):
                ctx = app.state.ctx
                ws = await get_or_create_workspace(ctx, "qr-bench")
                _, secret = await create_key(ctx, ws.id, "bench", None)
                logo = await files.upload_file(ctx, ws.id, _logo())
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(
                    transport=transport, base_url="http://bench", headers={"x-api-key": secret}
                ) as client:
                    plain = {"url": SHORT, "size": "512"}
                    etag = (await client.get("/qr", params=plain)).headers["etag"]
                    cases = [
                        ("GET /qr PNG 512 px, no logo", plain, {}, 200),
                        ("GET /qr PNG 512 px, logo 20%", {**plain, "logo": logo.id}, {}, 200),
                        ("GET /qr revalidation (If-None-Match → 304)", plain, {"if-none-match": etag}, 304),
                    ]
                    for name, params, headers, status in cases:
                        print(f"qr_bench: {name} …", file=sys.stderr, flush=True)
                        rate, p99 = await _timed_requests(client, params, headers, seconds, status)
                        rows.append(f"| {name} | {rate:,.0f} | {p99:.2f} |")
    finally:
        await db.drop_database(database_url)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per scenario")
    parser.add_argument("--no-http", action="store_true", help="skip the GET /qr table (needs Postgres and Redis)")
    args = parser.parse_args(argv)
    rows = []
    for s in scenarios():
        _check_scans(s)
        print(f"qr_bench: {s.name} …", file=sys.stderr, flush=True)
        rate, p50, size = measure(s, args.seconds)
        rows.append(f"| {s.name} | {rate:,.0f} | {p50:.2f} | {size:,} |")
    http = [] if args.no_http else asyncio.run(http_rows(args.seconds))
    print("## QR codes\n")
    print("Renderer called directly (segno + Pillow), one thread; every PNG row decoded by zxing-cpp first.\n")
    print("| scenario | codes/s | p50 ms | bytes |")
    print("|---|---:|---:|---:|")
    print("\n".join(rows))
    print()
    if http:
        print("Through the API app in-process (ASGI, no sockets), one request at a time, key auth, no rate limits.\n")
        print("| request | requests/s | p99 ms |")
        print("|---|---:|---:|")
        print("\n".join(http))
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
