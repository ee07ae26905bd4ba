"""QR benchmark: codes drawn per second, with and without a logo, in-process on one core.

    python -m loadtests.qr_bench [--seconds 3]

Calls the QR service's renderer directly (what the API runs in a worker thread for each
``GET /qr``): encoding with segno, drawing with Pillow, PNG compression, and for logo rows
decoding and scaling the logo too. Every scenario's output is decoded once with zxing-cpp
first, so the figures are for codes that scan. Needs no database. Prints a markdown section
on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from dataclasses import dataclass

import zxingcpp
from PIL import Image, ImageDraw

from api.services.qr import QrJob, QrOptions, qr_options, render_qr

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per scenario")
    args = parser.parse_args(argv)
    rows = []
    for s in scenarios():
        _check_scans(s)
        print(f"qr_bench: {s.name} …", file=sys.stderr, flush=True)
        rate, p50, size = measure(s, args.seconds)
        rows.append(f"| {s.name} | {rate:,.0f} | {p50:.2f} | {size:,} |")
    print("## QR codes (in-process, one core)\n")
    print("Renderer called directly (segno + Pillow), single thread; every PNG row decoded by zxing-cpp first.\n")
    print("| scenario | codes/s | p50 ms | bytes |")
    print("|---|---:|---:|---:|")
    print("\n".join(rows))
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
