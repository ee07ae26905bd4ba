"""Where ingest's CPU goes, per stage, in µs per event (not a ``make bench`` section: a diagnostic).

    python -m loadtests.ingest_profile [--events 200000] [--batch-size 20000] [--fold-every 3]
                                       [--links 1000] [--walk] [--keep]

Runs ingest's own code on ingest_bench's events (same generator, same seed, 1,000,000 an hour),
without the broker: encoded events → decode + check → link look-ups → enrich → rollup/cube
increments → the batch transaction (each statement timed: Python's CPU, the Postgres backend's
CPU from /proc, wall) → the fold every --fold-every batches (ingest folds every 2 s: about 3
batches at the bench's rate). The first batch is reported apart (cold caches: classifier, geo,
referrers). --walk: the e2e bench's clicks instead (wrk walking --links links, one address and
agent). --keep: the database stays, its last increments unfolded (to EXPLAIN the fold);
PROFILE_SQL (environment): a statement run on the fresh schema first (an experiment).
Its own database (h0p_profile_ingest), dropped afterwards; 127.0.0.1 only. Machine noise is
large when shared: compare runs back to back.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import asyncpg

from api import db
from h0p_settings import load_settings
from ingest.enrich.row import COLUMNS, Enricher, check_event, decode_event
from ingest.links import LinkDirectory
from ingest.store import (
    COUNTERS_SQL,
    CUBE_COLUMNS,
    ROLLUP_COLUMNS,
    ClickStore,
    fold_rollup_deltas,
    link_counters,
    rollup_rows,
)  # fmt: skip
from loadtests.ingest_bench import _QUERIES, _REFERERS, agents, cpu_s, public_ips, setup_database
from redirect.events import EVENT_VERSION, ClickEvent, encode, new_event_id

DB_URL = os.environ.get("H0P_PROFILE_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/h0p_profile_ingest")
_T = TypeVar("_T")


def events(ws: str, links: list[tuple[str, str]], n: int, walk: bool = False) -> list[bytes]:
    """ingest_bench's events (same seed and mix, the same 1,000,000 an hour), encoded as the edge sends them.

    ``walk``: the e2e bench's instead: wrk walking every link in turn, one client address and agent.
    """
    rng = random.Random(42)
    uas, ips = agents(rng), public_ips(rng)
    if walk:
        uas, ips = ["wrk"], ["127.0.0.1"]
    now = time.time()
    span = 3600 * n / 1_000_000
    out = []
    for i in range(n):
        link_id, slug = links[i % len(links)] if walk else rng.choice(links)
        orphan = not walk and rng.random() < 0.01
        ts = now - span + span * i / n - rng.random() * 2
        out.append(encode(ClickEvent(
            v=EVENT_VERSION, id=new_event_id(ts), ts=ts, domain="localhost", slug=slug if not orphan else "nope",
            link_id=None if orphan else link_id, workspace_id=None if orphan else ws,
            url=None if orphan else "https://example.com/p", ip=rng.choice(ips), ua=rng.choice(uas),
            referer="" if walk else rng.choice(_REFERERS), query="" if walk else rng.choice(_QUERIES),
            qr=not walk and rng.random() < 0.05, method="HEAD" if not walk and rng.random() < 0.01 else "GET",
            lang="en-US,en;q=0.9",
        )))  # fmt: skip
    return out


class Stages:
    """Per stage: (Python CPU s, backend CPU s, wall s, events)."""

    def __init__(self, backend_pid: int | None = None) -> None:
        self.totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0])
        self.backend_pid = backend_pid

    def _backend(self) -> float:
        return cpu_s(self.backend_pid) if self.backend_pid else 0.0

    def sync(self, name: str, n: int, work: Callable[[], _T]) -> _T:
        c0, w0 = time.process_time(), time.perf_counter()
        out = work()
        t = self.totals[name]
        t[0] += time.process_time() - c0
        t[2] += time.perf_counter() - w0
        t[3] += n
        return out

    async def run(self, name: str, n: int, work: Callable[[], Awaitable[_T]], pid: int | None = None) -> _T:
        pid = pid or self.backend_pid
        c0, b0, w0 = time.process_time(), (cpu_s(pid) if pid else 0.0), time.perf_counter()
        out = await work()
        t = self.totals[name]
        t[0] += time.process_time() - c0
        t[1] += (cpu_s(pid) if pid else 0.0) - b0
        t[2] += time.perf_counter() - w0
        t[3] += n
        return out

    def table(self, per: int) -> list[str]:
        lines = ["| stage | ingest µs/event | Postgres backend µs/event | wall µs/event |", "|---|---:|---:|---:|"]
        sums = [0.0, 0.0, 0.0]
        for name, (cpu, backend, wall, _) in self.totals.items():
            lines.append(f"| {name} | {cpu / per * 1e6:.2f} | {backend / per * 1e6:.2f} | {wall / per * 1e6:.2f} |")
            sums = [sums[0] + cpu, sums[1] + backend, sums[2] + wall]
        lines.append(
            f"| **total** | {sums[0] / per * 1e6:.2f} | {sums[1] / per * 1e6:.2f} | {sums[2] / per * 1e6:.2f} |"
        )
        return lines


def _decode(chunk: list[bytes], now: float) -> list[tuple[ClickEvent, uuid.UUID]]:
    out = []
    for data in chunk:
        e = decode_event(data)
        out.append((e, check_event(e, now)))
    return out


def _enrich(enricher: Enricher, decoded: list[tuple[ClickEvent, uuid.UUID]]) -> list[tuple[Any, ...]]:
    return [enricher.row(e, i) for e, i in decoded]


async def profile(n: int, batch_size: int, fold_every: int, keep: bool, links_n: int, walk: bool) -> None:
    ws, links = await setup_database(links_n, DB_URL)
    raw = events(ws, links, n, walk)
    if os.environ.get("PROFILE_SQL"):  # an experiment on the schema, e.g. a storage parameter
        c = await asyncpg.connect(DB_URL)
        await c.execute(os.environ["PROFILE_SQL"])
        await c.close()
    settings = load_settings({"H0P_DATABASE_URL": DB_URL})
    directory = LinkDirectory()
    t0 = time.process_time()
    enricher = Enricher(settings, directory)
    startup = time.process_time() - t0
    store = ClickStore(DB_URL)
    conn = await store.connection()
    lookup = await store.lookup_connection()
    fold_conn = await asyncpg.connect(DB_URL)
    pid = int(await conn.fetchval("SELECT pg_backend_pid()"))
    lookup_pid = int(await lookup.fetchval("SELECT pg_backend_pid()"))
    fold_pid = int(await fold_conn.fetchval("SELECT pg_backend_pid()"))
    first = Stages(pid)
    rest = Stages(pid)
    deltas = 0
    for b, start in enumerate(range(0, n, batch_size)):
        s = first if b == 0 else rest
        chunk = raw[start : start + batch_size]
        k = len(chunk)
        decoded = s.sync("decode + check", k, partial(_decode, chunk, time.time()))
        link_ids = [e.link_id for e, _ in decoded if e.link_id is not None]
        domains = [e.domain for e, _ in decoded if e.workspace_id is None]
        await s.run("links.load (lookup conn)", k, partial(directory.load, lookup, link_ids, domains), pid=lookup_pid)
        rows = s.sync("enrich (Enricher.row)", k, partial(_enrich, enricher, decoded))
        rollup, cube = s.sync("rollup_rows", k, partial(rollup_rows, rows))
        counters = s.sync("link_counters", k, partial(link_counters, rows))
        times = [r[1] for r in rows]
        await s.run("ensure_partitions", k, partial(store.ensure_partitions, min(times), max(times)))
        tr = conn.transaction()
        await s.run("BEGIN", k, tr.start)
        await s.run("COPY clicks", k, partial(conn.copy_records_to_table, "clicks", records=rows, columns=COLUMNS))
        await s.run("COPY click_rollup_deltas", k, partial(
            conn.copy_records_to_table, "click_rollup_deltas", records=rollup, columns=ROLLUP_COLUMNS))  # fmt: skip
        await s.run("COPY click_cube_deltas", k, partial(
            conn.copy_records_to_table, "click_cube_deltas", records=cube, columns=CUBE_COLUMNS))  # fmt: skip
        ordered = sorted(counters.items())
        await s.run("UPDATE link_counters", k, partial(
            conn.execute, COUNTERS_SQL, [link for link, _ in ordered], [m for _, (m, _) in ordered],
            [last for _, (_, last) in ordered]))  # fmt: skip
        await s.run("COMMIT", k, tr.commit)
        deltas += len(rollup) + len(cube)
        if keep and start + fold_every * batch_size >= n:
            continue  # the last fold_every batches' increments stay for a look at the fold (EXPLAIN)
        if b % fold_every == fold_every - 1 or start + batch_size >= n:
            await s.run("fold (fold conn)", 0, partial(fold_rollup_deltas, fold_conn), pid=fold_pid)
    print(
        f"{n:,} events, batches of {batch_size:,}, a fold every {fold_every} batches;"
        f" {deltas / (n / batch_size):,.0f} delta rows a batch; Enricher() start-up {startup * 1000:.0f} ms CPU\n"
    )
    print(f"First batch ({min(batch_size, n):,} events, cold caches):\n")
    print("\n".join(first.table(min(batch_size, n))))
    print(f"\nOther batches ({n - batch_size:,} events):\n")
    print("\n".join(rest.table(n - batch_size)))
    await fold_conn.close()
    await store.close()
    enricher.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=20_000)
    parser.add_argument("--links", type=int, default=1000)
    parser.add_argument("--walk", action="store_true", help="the e2e bench's clicks: every link in turn, one agent")
    parser.add_argument("--keep", action="store_true", help="keep the database, its last increments not folded")
    parser.add_argument("--fold-every", type=int, default=3, help="batches between folds (ingest: every 2 s)")
    args = parser.parse_args()
    # as ingest's serve(): rare collections (see ingest/consumer.py)
    gc.collect()
    gc.freeze()
    gc.set_threshold(200_000, 50, 1000)
    try:
        await profile(args.events, args.batch_size, args.fold_every, args.keep, args.links, args.walk)
    finally:
        if not args.keep:
            await db.drop_database(DB_URL)


if __name__ == "__main__":
    asyncio.run(main())
