"""Ingest benchmark (a section of ``make bench``): prints a markdown section.

1. Preload a topic with N realistic click events (default 1,000,000: varied user agents, IPs,
   referrers, UTM queries, 1,000 links, some bots and QR scans), spread over the last hour in
   the order the edge stamps and sends them (a few seconds of disorder, as between edge processes).
2. One ingest process (``python -m ingest.consumer``): events/s from start to the last row committed.
3. The same topic, a new group, an emptied table: two processes.
The ``/analytics`` queries are measured by the analytics section (loadtests/analytics_bench.py).

Everything runs on 127.0.0.1 in its own database (h0p_bench_ingest) and its own broker; bounded in time.
Usage: python -m loadtests.ingest_bench [--events N] [--batch-size N] [--processes 1,2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from api import db
from api.ids import new_id
from h0p_settings import Settings, load_settings
from ingest.enrich.row import COLUMNS
from redirect.events import EVENT_VERSION, ClickEvent, decode, encode, new_event_id, partition_key
from tests.services import Broker

DB_URL = os.environ.get("H0P_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/h0p_bench_ingest")
TIME_LIMIT_S = 900
_VERDICT = {True: "**met** ✅", False: "**not met** ❌"}

_BASE_UAS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.{m} "
    "Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_{m} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.{m} Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; SM-S91{m}B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 "
    "Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 13; Pixel {m}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 "
    "Mobile Safari/537.36",
    "Mozilla/5.0 (iPad; CPU OS 17_{m} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.{m} "
    "Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 "
    "Safari/537.36 Edg/{v}.0.0.0",
]
_BOT_UAS = [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "curl/8.5.0",
    "python-requests/2.31.0",
]
_REFERERS = ["", "", "", "https://www.google.com/", "https://t.co/x1", "https://www.facebook.com/",
             "https://news.ycombinator.com/item?id=1", "https://www.linkedin.com/feed/", "https://duckduckgo.com/",
             "https://www.reddit.com/r/python/", "android-app://com.slack/"]  # fmt: skip
_QUERIES = ["", "", "", "utm_source=newsletter&utm_medium=email&utm_campaign=launch", "utm_source=twitter",
            "ref=abc", "utm_source=google&utm_medium=cpc&utm_term=shoes&utm_content=ad1"]  # fmt: skip


def agents(rng: random.Random, n: int = 2000) -> list[str]:
    out = [rng.choice(_BASE_UAS).format(v=rng.randrange(100, 125), m=rng.randrange(0, 9)) for _ in range(n)]
    return out + _BOT_UAS


def public_ips(rng: random.Random, n: int = 200_000) -> list[str]:
    ips: list[str] = []
    while len(ips) < n:
        first = rng.randrange(1, 224)
        if first in (10, 127, 172, 192):
            continue
        ips.append(f"{first}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}")
    return ips


async def setup_database(n_links: int, url: str = DB_URL) -> tuple[str, list[tuple[str, str]]]:
    await db.drop_database(url)
    await db.migrate(url)
    conn = await asyncpg.connect(url)
    try:
        ws = new_id("ws")
        await conn.execute("INSERT INTO workspaces (id, name) VALUES ($1, 'bench')", ws)
        links = [(new_id("link"), f"s{i}") for i in range(n_links)]
        await conn.copy_records_to_table(
            "links", columns=["id", "workspace_id", "domain", "slug", "url", "utm_source"],
            records=[(i, ws, "localhost", s, "https://example.com/p", "site" if k % 3 == 0 else None)
                     for k, (i, s) in enumerate(links)],
        )  # fmt: skip
        return ws, links
    finally:
        await conn.close()


async def preload(settings: Settings, ws: str, links: list[tuple[str, str]], n: int) -> float:
    rng = random.Random(42)
    uas, ips = agents(rng), public_ips(rng)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=20, max_batch_size=1_000_000,
                                max_request_size=8_000_000, request_timeout_ms=60_000)  # fmt: skip
    await producer.start()
    t0 = time.perf_counter()
    now = time.time()
    try:
        pending = []
        for i in range(n):
            link_id, slug = rng.choice(links)
            orphan = rng.random() < 0.01
            # clicks reach the topic as they happen: time order, give or take the edges' send delays
            ts = now - 3600 + 3600 * i / n - rng.random() * 2
            event = ClickEvent(
                v=EVENT_VERSION, id=new_event_id(ts), ts=ts, domain="localhost", slug=slug if not orphan else "nope",
                link_id=None if orphan else link_id, workspace_id=None if orphan else ws,
                url=None if orphan else "https://example.com/p", ip=rng.choice(ips), ua=rng.choice(uas),
                referer=rng.choice(_REFERERS), query=rng.choice(_QUERIES), qr=rng.random() < 0.05,
                method="HEAD" if rng.random() < 0.01 else "GET", lang="en-US,en;q=0.9",
            )  # fmt: skip
            pending.append(await producer.send(settings.kafka_topic, encode(event), key=partition_key(event)))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - t0


def start_consumers(settings: Settings, group: str, count: int) -> list[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "H0P_DATABASE_URL": DB_URL,
        "H0P_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "H0P_KAFKA_TOPIC": settings.kafka_topic,
        "H0P_KAFKA_DEAD_LETTER_TOPIC": settings.kafka_dead_letter_topic,
        "H0P_KAFKA_GROUP": group,
        "H0P_INGEST_BATCH_SIZE": str(settings.ingest_batch_size),
        "H0P_INGEST_SESSION_TIMEOUT_MS": "6000",
        "H0P_INGEST_METRICS_PORT": "0",  # several processes on one host: one port each, or none
    }
    return [subprocess.Popen([sys.executable, "-m", "ingest.consumer"], env=env, stderr=subprocess.DEVNULL)
            for _ in range(count)]  # fmt: skip


_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int, with_exited_children: bool = False) -> float:
    """CPU seconds (user + system) a process has used, read from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if with_exited_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICKS_PER_S


def postgres_cpu_s() -> float:
    """CPU seconds of this machine's Postgres: its live processes plus the backends that exited
    (counted in the postmaster's children times). Meaningful because the bench targets 127.0.0.1."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if stat.split(" (", 1)[1].split(")", 1)[0] != "postgres":
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            is_postmaster = Path(f"/proc/{parent}/comm").read_text().strip() != "postgres"
            total += cpu_s(int(entry.name), with_exited_children=is_postmaster)
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile: its time is now in the postmaster's
    return total


# Rows stored so far (the e2e section counts the same way): the rollup's 'count' rows are written
# in the same transaction as the rows and stay a few hundred rows, where count(*) scans millions.
STORED_SQL = "SELECT coalesce(sum(clicks), 0) FROM click_rollup_totals WHERE dim = 'count'"


async def measure_ingest(settings: Settings, broker: Broker, n: int, processes: int) -> dict[str, float]:
    """Start ``processes`` consumers on the preloaded topic; time until all n events are stored.

    ``events_s`` counts from the processes' start, so it includes joining the consumer group
    (Tansu holds a new group's first join for a fixed 3 s, its PAUSE_MS, so that several members
    can join together); ``steady_events_s`` counts the events stored after the first batch over
    the time after it. ``*_us``: CPU per event of the ingest processes, Postgres and the broker.
    """
    conn = await asyncpg.connect(DB_URL)
    await conn.execute("TRUNCATE clicks, click_rollups, click_rollup_deltas, click_cube, click_cube_deltas")
    await conn.execute("UPDATE link_counters SET clicks = 0, last_clicked_at = NULL")
    assert broker.proc is not None
    pg0, broker0 = postgres_cpu_s(), cpu_s(broker.proc.pid)
    t0 = time.perf_counter()
    procs = start_consumers(settings, f"bench-{processes}-{time.time_ns()}", processes)
    first: tuple[float, int] | None = None
    stored = 0
    try:
        while True:
            await asyncio.sleep(0.2)
            stored = int(await conn.fetchval(STORED_SQL))  # plus the orphans, which are not rolled up:
            stored += int(await conn.fetchval("SELECT count(*) FROM clicks WHERE workspace_id IS NULL"))
            if stored and first is None:
                first = (time.perf_counter(), stored)
            if time.perf_counter() - t0 > TIME_LIMIT_S:
                raise TimeoutError(f"ingest did not finish in {TIME_LIMIT_S}s ({stored} rows)")
            if stored >= n:
                break
        end = time.perf_counter()
        ingest_cpu = sum(cpu_s(p.pid) for p in procs)
        # the Postgres backends serving the ingest processes alone (other databases on a shared server left out)
        backends = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'h0p-ingest%'")
        backend_cpu = sum(cpu_s(r["pid"]) for r in backends)
        pg_cpu, broker_cpu = postgres_cpu_s() - pg0, cpu_s(broker.proc.pid) - broker0
        total = int(await conn.fetchval("SELECT count(*) FROM clicks"))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)
        await conn.close()
    assert first is not None
    first_at, first_rows = first
    return {"rows": total, "wall_s": end - t0, "events_s": n / (end - t0), "first_row_s": first_at - t0,
            "steady_events_s": (n - first_rows) / (end - first_at), "ingest_us": ingest_cpu / n * 1e6,
            "postgres_us": pg_cpu / n * 1e6, "broker_us": broker_cpu / n * 1e6,
            "backends_us": backend_cpu / n * 1e6}  # fmt: skip


async def measure_references(settings: Settings, n: int) -> dict[str, float]:
    """This machine's speed, measured in the same run, for the issue's scale figures.

    The issue measured, on its machine, aiokafka getmany plus decoding at 389k events/s and asyncpg
    COPY in 10k-row calls at 265k rows/s. The same two things are measured here: the topic just
    preloaded read to its end (events decoded with the contract's decoder), and COPY of clicks rows
    into a table shaped like ``clicks`` without its indexes. Shared machines drift (the same code
    has run 3-4x apart within an hour), so ingest figures are best read against these.
    """
    consumer = AIOKafkaConsumer(settings.kafka_topic, bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                max_partition_fetch_bytes=8 * 1024 * 1024)  # fmt: skip
    await consumer.start()
    read = 0
    t0 = time.perf_counter()
    try:
        while read < n and time.perf_counter() - t0 < TIME_LIMIT_S:
            batches = await consumer.getmany(timeout_ms=1000, max_records=20_000)
            for records in batches.values():
                read += len([decode(r.value) for r in records])
    finally:
        await consumer.stop()
    getmany_s = read / (time.perf_counter() - t0)
    conn = await asyncpg.connect(DB_URL)
    try:
        await conn.execute("CREATE TABLE copy_reference (LIKE clicks INCLUDING DEFAULTS)")
        sample = await conn.fetch(f"SELECT {', '.join(COLUMNS)} FROM clicks LIMIT 10000")
        rows = [tuple(r) for r in sample] * 20
        t0 = time.perf_counter()
        for start in range(0, len(rows), 10_000):
            await conn.copy_records_to_table("copy_reference", records=rows[start : start + 10_000], columns=COLUMNS)
        copy_s = len(rows) / (time.perf_counter() - t0)
        await conn.execute("DROP TABLE copy_reference")
    finally:
        await conn.close()
    return {"getmany": getmany_s, "copy": copy_s}


def dataclassreplace(settings: Settings, **kw: Any) -> Settings:
    import dataclasses

    return dataclasses.replace(settings, **kw)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=20_000, help="H0P_INGEST_BATCH_SIZE of the consumers")
    parser.add_argument("--processes", default="1,2", help="ingest runs to measure, e.g. 1 or 1,2")
    args = parser.parse_args()
    runs = [int(n) for n in args.processes.split(",")]
    broker = Broker().start()
    lines = ["## Click pipeline and analytics (ingest_bench)", ""]
    try:
        settings = load_settings({"H0P_DATABASE_URL": DB_URL, "H0P_KAFKA_BOOTSTRAP": broker.bootstrap,
                                  "H0P_KAFKA_TOPIC": "bench-clicks",
                                  "H0P_INGEST_BATCH_SIZE": str(args.batch_size)})  # fmt: skip
        ws, links = await setup_database(1000)
        if args.events:
            preload_s = await preload(settings, ws, links, args.events)
            results = {n: await measure_ingest(settings, broker, args.events, n) for n in runs}
            ref = await measure_references(settings, args.events)
            lines += [
                f"{args.events:,} events preloaded in {preload_s:.0f}s; batches of {args.batch_size:,}; full enrichment"
                " (geo, UA, UTM, bot, visitor hash), COPY, hourly rollup and cube increments (with the visitor hashes"
                " of the link rows and of the cube rows, made HyperLogLog sketches by the fold) and link counters in"
                " the same transaction (the increments folded into the rollup every 2 s).",
                "",
                "| ingest | events/s (start to last row) | first row after | events/s (after the first batch) | rows |",
                "|---|---|---|---|---|",
                *(f"| {n} process{'es' if n > 1 else ''} | {r['events_s']:,.0f} | {r['first_row_s']:.1f} s |"
                  f" {r['steady_events_s']:,.0f} | {r['rows']:,} |" for n, r in results.items()),
            ]  # fmt: skip
            if 1 in results and 2 in results:
                one, two = results[1], results[2]
                lines.append(
                    f"| ratio 2/1 | {two['events_s'] / one['events_s']:.2f}× | | "
                    f"{two['steady_events_s'] / one['steady_events_s']:.2f}× | |"
                )
            busy = {n: (r["ingest_us"] + r["postgres_us"] + r["broker_us"]) * r["steady_events_s"] / 1e6
                    for n, r in results.items()}  # fmt: skip
            lines += [
                "",
                "CPU per event stored, from /proc (ingest includes its start-up, Postgres this bench's progress"
                " queries, the broker its fetches and offset commits), and the cores that keep busy at the rate"
                " after the first batch (this machine has 2):",
                "",
                "| ingest | ingest µs | Postgres µs | of which ingest's backends µs | broker µs | cores busy |",
                "|---|---:|---:|---:|---:|---:|",
                *(f"| {n} process{'es' if n > 1 else ''} | {r['ingest_us']:.1f} | {r['postgres_us']:.1f} |"
                  f" {r['backends_us']:.1f} | {r['broker_us']:.1f} | {busy[n]:.2f} |" for n, r in results.items()),
            ]  # fmt: skip
            if 1 in results:
                rate = results[1]["events_s"]
                lines += ["", f"Target one process ≥ 40,000 events/s (start to last row): {_VERDICT[rate >= 40_000]}"
                          f" ({rate:,.0f})."]  # fmt: skip
            if 1 in results and 2 in results:
                ratio = results[2]["events_s"] / results[1]["events_s"]
                steady = results[2]["steady_events_s"] / results[1]["steady_events_s"]
                lines.append(f"Target two processes ≥ 1.4× one: {_VERDICT[ratio >= 1.4]} ({ratio:.2f}× start to last"
                             f" row, {steady:.2f}× after the first batch).")  # fmt: skip
            if 1 in busy:
                lines += [
                    "",
                    f"One process keeps {busy[1]:.2f} cores busy (its enrichment overlaps Postgres writing the batch"
                    f" before), so on 2 cores a second process can add at most {2 / busy[1]:.2f}× at this CPU cost"
                    " per event.",
                ]
            best = max(r["events_s"] for r in results.values())
            lines += [
                "",
                "This machine in the same run, against the issue's scale figures (measured on its machine):",
                "",
                "| reference | here | issue's machine | here / issue's |",
                "|---|---:|---:|---:|",
                f"| aiokafka getmany + decode, events/s | {ref['getmany']:,.0f} | 389,000 | "
                f"{ref['getmany'] / 389_000:.2f} |",
                f"| asyncpg COPY in 10k-row calls (no indexes), rows/s | {ref['copy']:,.0f} | 265,000 | "
                f"{ref['copy'] / 265_000:.2f} |",
                "",
                f"Ingest (best run, start to last row) is {best / ref['getmany']:.1%} of this run's getmany + decode "
                f"rate and {best / ref['copy']:.1%} of its COPY rate; the 40,000 events/s target is "
                f"{40_000 / 389_000:.1%} and {40_000 / 265_000:.1%} of the issue's figures.",
            ]
            lines.append("")
        lines.append(
            "End-to-end latency (redirect to row visible) is not measured here: see the e2e section;"
            " `/analytics` queries: see the analytics section (loadtests/analytics_bench.py)."
        )
    finally:
        broker.stop()
        await db.drop_database(DB_URL)
    print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
