"""Rules benchmark: what the largest rule set the API accepts costs the edge per click.

    python -m loadtests.rules_bench [--clicks 20000] [--rounds 5]

No services: the rule sets go through the API's own checks (``api.link_rules.check_rules``: the
200-character values, the 32 KiB cap), are stored as the API stores them, built into cache
records, encoded and decoded as Redis hands them to the edge; then a real ``EdgeHandler`` (the
edge's ``create_app``, never started: no network is touched) answers clicks with ``_link``, the
code every GET of a cached link runs: visitor, rule choice, split, query merge, Location.

The visitor matches no rule (the worst case: every rule is tried), with every fact a rule can
read (user agent, languages, referrer, query, an IPv6 address looked up in the geo database).
Each shape is a different way to fill the cap; the cost reported is the click on that link minus
the click on a link without rules (best of ``--rounds``). Prints a markdown section on stdout.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import msgspec

from api.link_rules import check_rules, rules_json
from api.schemas import CONDITION_VALUE_MAX, RULES_MAX_BYTES, Rule
from h0p_settings import Settings
from redirect.app import create_app
from redirect.edge import EdgeHandler
from redirect.record import LinkRecord, decode_link, encode, link_record_from_row, mask_int
from redirect.request import Headers

UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
IP = "2a00:1450:4007:80e::200e"  # an IPv6 address in the geo database: every v6 prefix length is looked up
HEADERS = [
    (b"host", b"h0p.localhost"),
    (b"user-agent", UA.encode()),
    (b"accept-language", b"en-GB,en;q=0.8,fr;q=0.5"),
    (b"referer", b"https://www.news.example.org/articles/today"),
]
QUERY = b"utm_source=mail&id=42&ref=x"
Condition = dict[str, Any]

# Short conditions that hold for that visitor, one per fact a rule can read: the shortest JSON
# lets the most conditions into the 32 KiB (50 rules of 20 is the count cap).
HOLDING: list[Condition] = [
    {"type": "ip", "value": "::/0"},
    {"type": "device", "value": "desktop"},
    {"type": "os", "value": "windows"},
    {"type": "query", "key": "id"},
    {"type": "after", "value": "2000-01-01"},
    {"type": "language", "value": "en"},
    {"type": "browser", "value": "chrome"},
    {"type": "referrer", "value": "example.org"},
    {"type": "country", "value": "AQ", "not": True},
    {"type": "city", "value": "x", "not": True},
]
FAILING: Condition = {"type": "os", "value": "zz"}  # last in each rule: the rule is tried to its end, then left


def fill(first: Callable[[int], list[Condition]], cycle: list[Condition]) -> list[Condition]:
    """50 rules: ``first(r)``, then as many ``cycle`` conditions as fit the caps, then FAILING."""

    def rules(k: int) -> list[Condition]:
        out = []
        for r in range(50):
            head = first(r)
            body = [cycle[(r * 20 + c) % len(cycle)] for c in range(max(0, min(k, 19 - len(head))))]
            out.append({"conditions": [*head, *body, FAILING], "url": f"https://e.example/{r}"})
        return out

    k = 19
    while k > 0 and stored_size(rules(k)) > RULES_MAX_BYTES:
        k -= 1
    return rules(k)


def stored_size(rules: list[Condition]) -> int:
    """Bytes of the rules as the API stores them (normalised values), the measure of the cap."""
    try:
        return len(rules_json(check_rules(msgspec.convert(rules, list[Rule]), Settings())).encode())
    except ValueError:  # refused: too big
        return RULES_MAX_BYTES + 1


def shape_many_conditions() -> list[Condition]:
    """As many short conditions as fit, every fact read, all but the last of each rule holding."""
    return fill(lambda r: [], HOLDING)


def shape_long_values() -> list[Condition]:
    """Lists of 200-character values (the value cap), in negated conditions that hold."""
    value = "v" * (CONDITION_VALUE_MAX - 4)

    def first(r: int) -> list[Condition]:
        return [{"type": "city", "value": [f"{value}{r:04d}"], "not": True}] if r < 30 else []

    return fill(first, HOLDING)


def shape_ip_prefixes() -> list[Condition]:
    """Networks of the most prefix lengths allowed (16 per IP version), one lookup each for the address."""
    # 15 IPv6 lengths here and ::/0 among HOLDING make 16; 16 IPv4 lengths
    nets = [f"2a00:1450:4007::/{p}" for p in range(33, 48)] + [f"255.0.0.0/{p}" for p in range(8, 24)]

    def first(r: int) -> list[Condition]:
        chunk = nets[r * 4 : r * 4 + 4]
        return [{"type": "ip", "value": chunk}] if chunk else []  # the visitor is in the 2a00:1450:4007::/p ones

    return fill(first, HOLDING)


def shape_query_and_times() -> list[Condition]:
    """Query pairs and distinct instants: the facts whose lookups follow the visitor's query and the clock."""
    cycle: list[Condition] = []
    for i in range(40):
        cycle.append({"type": "query", "key": "id", "value": f"{i}", "not": True})
        cycle.append({"type": "before", "value": f"{2100 + i}-01-01"})
    return fill(lambda r: [], cycle)


SHAPES: dict[str, Callable[[], list[Condition]]] = {
    "short conditions, every fact": shape_many_conditions,
    "200-character values": shape_long_values,
    "16 IP prefix lengths per version": shape_ip_prefixes,
    "query pairs and instants": shape_query_and_times,
}


def build(rules: list[Condition], settings: Settings) -> tuple[LinkRecord, int]:
    """The record the edge holds for a link with ``rules``, through the API's checks (raises if refused)."""
    stored = rules_json(check_rules(msgspec.convert(rules, list[Rule]), settings))
    row = {
        "id": "link_RULESBENCH", "workspace_id": "ws_RULESBENCH", "url": "https://example.com/default",
        "status_code": 302, "rules": stored, "split": "[]", "password_hash": None, "expires_at": None,
        "expired_url": None, "forward_query": True, "og_title": None, "og_description": None, "og_image": None,
        **dict.fromkeys(("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")),
    }  # fmt: skip
    record = decode_link(encode(link_record_from_row(row)))
    assert record is not None
    return record, len(stored.encode())


def per_click_us(handler: EdgeHandler, record: LinkRecord, clicks: int, rounds: int) -> float:
    """Best mean of ``rounds`` runs of ``clicks`` clicks, in µs."""
    headers = Headers(HEADERS)
    link = handler._link  # the edge's answer for a cached link (no I/O: events are off)
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(clicks):
            link("GET", "h0p.localhost", "bench", record, None, headers, IP, QUERY)
        best = min(best, (time.perf_counter_ns() - start) / clicks / 1000)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clicks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    settings = Settings(click_events=False, default_domain="h0p.localhost")
    handler = create_app(settings).handler
    reply = handler._link("GET", "h0p.localhost", "bench", build([], settings)[0], None, Headers(HEADERS), IP, QUERY)
    assert reply[0] == 302
    baseline = per_click_us(handler, build([], settings)[0], args.clicks, args.rounds)
    rows = []
    for name, shape in SHAPES.items():
        record, size = build(shape(), settings)
        status, headers, _ = handler._link("GET", "h0p.localhost", "b", record, None, Headers(HEADERS), IP, QUERY)
        assert status == 302 and dict(headers)[b"location"].startswith(b"https://example.com/default"), "a rule matched"
        conditions = sum(r.count + bin(mask_int(r.timed)).count("1") for r in record.rules)
        total = per_click_us(handler, record, args.clicks, args.rounds)
        rows.append((name, len(record.rules), conditions, size, total, total - baseline))
        print(f"rules_bench: {name}: {total - baseline:.1f} µs per click for the rules", file=sys.stderr)
    print("## Rules: the largest rule set per click (edge, in process)\n")
    print(
        f"`python -m loadtests.rules_bench --clicks {args.clicks} --rounds {args.rounds}`; a visitor matching no rule;"
    )
    print(f"cost = click on the link minus click on a link without rules ({baseline:.1f} µs). Budget: < 50 µs.\n")
    print("| rule set | rules | conditions | JSON bytes | click µs | rules cost µs |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, n_rules, conditions, size, total, cost in rows:
        print(f"| {name} | {n_rules} | {conditions} | {size:,} | {total:.1f} | {cost:.1f} |")
    worst = max(cost for *_, cost in rows)
    verdict = "within" if worst < 50 else "OVER"
    print(f"\nWorst: {worst:.1f} µs per click ({verdict} the 50 µs budget); load average {os.getloadavg()[0]:.1f}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
