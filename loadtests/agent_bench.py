"""User-agent classification: accuracy against Matomo's labelled fixtures, and its cost at the edge and in ingest.

    python -m loadtests.agent_bench          (or: make bench SECTIONS=agent)

Cost: the pool is every distinct user agent of the reference (Matomo's fixtures and the
crawler-user-agents examples, ~38,000 strings); a miss is a first sight of a string (after the
process's warm-up), a hit a repeat.
The mixed figure draws 200,000 events from the pool with Zipf-like popularity (a few agents make
most traffic, a long tail is seen once), the per-event cost ingest pays with its 50,000-entry cache.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from typing import Any, cast

import yaml_rs

from ingest.enrich.agent import AgentParser
from redirect.agent import parse_agent


def _folder(package: str) -> Path:
    spec = find_spec(package)
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations)))


def pool() -> list[str]:
    """Every distinct user agent of the reference, in a fixed order."""
    uas: dict[str, None] = {}
    for path in sorted((_folder("device_detector") / "tests" / "fixtures" / "upstream").glob("*.yml")):
        entries = cast(list[dict[str, Any]], yaml_rs.loads(path.read_text("utf-8")))
        for entry in entries:
            if isinstance(entry.get("user_agent"), str):
                uas[entry["user_agent"]] = None
    crawlers = json.loads((_folder("crawleruseragents") / "crawler-user-agents.json").read_text("utf-8"))
    for entry in crawlers:
        for ua in entry.get("instances", []):
            uas[ua] = None
    return list(uas)


def _per_call_us(fn: Callable[[str], object], uas: list[str]) -> float:
    started = time.process_time()  # CPU time: the machine may be shared; waiting is not cost
    for ua in uas:
        fn(ua)
    return (time.process_time() - started) / len(uas) * 1e6


def costs() -> list[tuple[str, float]]:
    """(what, µs per call) for the edge's and ingest's classification, in CPU time.

    A process first meets each pattern of the classifier's data once (compiled on first use): the
    warm-up is measured over all but 4,000 agents of the pool, then the steady cost of agents never
    seen before (2,000 at the edge, 2,000 in ingest).
    """
    uas = pool()
    rng = random.Random(13)
    rng.shuffle(uas)
    edge_new, ingest_new, warm = uas[:2000], uas[2000:4000], uas[4000:]
    warm_up = _per_call_us(AgentParser(cache_size=100).parse, warm)
    parse_agent.cache_clear()
    edge_miss = _per_call_us(parse_agent, edge_new)
    edge_hit = _per_call_us(parse_agent, edge_new)
    ingest = AgentParser()
    ingest_miss = _per_call_us(ingest.parse, ingest_new)
    ingest_hit = _per_call_us(ingest.parse, ingest_new)
    weights = [1.0 / (rank + 1) ** 1.1 for rank in range(len(uas))]
    events = rng.choices(uas, weights=weights, k=200_000)
    mixed = _per_call_us(AgentParser().parse, events)
    distinct = len(set(events))
    return [
        (f"warm-up: the first {len(warm):,} distinct agents a process sees", warm_up),
        ("edge, an agent not seen before (cache miss)", edge_miss),
        ("edge, repeated agent (cache hit)", edge_hit),
        ("ingest, an agent not seen before (cache miss)", ingest_miss),
        ("ingest, repeated agent (cache hit)", ingest_hit),
        (f"ingest, 200,000 Zipf events over {distinct:,} distinct agents ({distinct / 2000:.1f} % new)", mixed),
    ]


def main() -> None:
    from tests.redirect.agent_reference import accuracy_table, format_table  # the test's own reference

    print("## agent\n")
    print("User-agent classification (`redirect/visitor_agent.py`, shared by the edge and ingest).\n")
    print("```")
    print(format_table(accuracy_table(held_out=True), "Matomo fixtures, held-out half; crawler-user-agents examples"))
    print()
    print(format_table(accuracy_table(held_out=False), "Matomo fixtures, the half looked at while writing rules"))
    print("```\n")
    print("| classification cost | µs per call |\n|---|---:|")
    for what, us in costs():
        print(f"| {what} | {us:.1f} |")


if __name__ == "__main__":
    main()
