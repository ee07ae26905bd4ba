"""Cache record contract: what the edge needs to answer a short link without Postgres.

Written by ``api`` (after commit) into Redis, read by ``redirect``. A leaf module: stdlib and
msgspec only. The version is the first array element; an unknown version decodes to ``None``
and the edge treats it as a cache miss. Secrets never enter a record: only a password *hash*.

Both sides build records from Postgres rows with the same query and function below
(``LINK_QUERY`` + ``link_record_from_row``), so the API's write-through and the edge's
fallback cannot drift apart. After writing a key the API publishes the key itself
(``h0p:l:<domain>/<slug>`` or ``h0p:d:<domain>``) on ``Settings.invalidation_channel``;
every edge process drops that key from its in-process cache.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec

from redirect.device_classes import normalise_device

RECORD_VERSION = 2  # 2: rules as a RuleTable of normalised, indexed conditions (1: a list per rule)

# Redis values that are not records.
NEGATIVE = b"-"  # "no such link" (short TTL): stops a flood of random slugs reaching Postgres


# gc=False on every record type: records are immutable values that cannot form reference cycles,
# and the edge caches ~100,000 of them; tracked, each full collection walked them all (measured:
# 64-88 ms pauses under load, the whole p99 of the edge bench).


# A set of condition ids as a bitmask: (shift, little-endian bytes), the int ``bytes << shift``
# (msgpack integers stop at 64 bits; a link has up to 1,000 conditions). See ``mask_of``/``mask_int``.
Mask = tuple[int, bytes]


class Rule(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A routing rule as the edge evaluates it: when all its conditions hold, its url wins."""

    url: str
    first: int  # its conditions other than "before"/"after" have the ids first, first + 1, …
    count: int  # … first + count - 1 (the rules' ids follow each other in order)
    timed: Mask = (0, b"")  # its "before"/"after" conditions (their ids follow every rule's)
    facts: tuple[str, ...] = ()  # the visitor facts its conditions read that no earlier rule read


class RuleTable(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """Every condition of a link's rules, indexed by the visitor fact that makes it hold.

    Values are normalised here, once, to the spelling the visitor's facts have (see ``FACTS``),
    so a click looks each fact up once and tests each rule with one mask, whatever the number
    of values. A condition holds when the visitor's fact is indexed to it, inverted if negated.
    "before"/"after" conditions have consecutive ids in the order of their instants, so the ones
    holding at a moment are one range of ids (found by bisection).
    """

    facts: dict[str, dict[str, Mask]] = {}  # fact -> normalised value -> conditions that value makes hold
    negated: Mask = (0, b"")
    before_at: tuple[float, ...] = ()  # instants (epoch s) ascending of the "before" conditions ...
    before_first: int = 0  # ... whose ids are before_first, before_first + 1, … in that order
    after_at: tuple[float, ...] = ()
    after_first: int = 0
    ip4_prefixes: tuple[int, ...] = ()  # the prefix lengths under facts["ip4"] (keys: leading bits "0101…")
    ip6_prefixes: tuple[int, ...] = ()


class SplitTarget(msgspec.Struct, frozen=True, array_like=True, gc=False):
    url: str
    weight: int  # weights of a split sum to 100


class LinkRecord(msgspec.Struct, frozen=True, array_like=True, omit_defaults=False, gc=False):
    """Everything the edge evaluates for one (domain, slug)."""

    v: int
    link_id: str
    workspace_id: str
    url: str
    status_code: int = 302
    rules: tuple[Rule, ...] = ()
    rule_table: RuleTable | None = None  # the conditions of ``rules``; None when there are none
    split: tuple[SplitTarget, ...] = ()
    password_hash: str | None = None  # argon2 hash; the edge verifies, never stores the secret
    password_version: str = ""  # changes with the password, so old unlock cookies stop working
    expires_at: float | None = None  # epoch seconds
    expired_url: str | None = None
    utm: tuple[tuple[str, str], ...] = ()  # (utm_source, "x") pairs set on the link
    forward_query: bool = True
    og_title: str | None = None
    og_description: str | None = None
    og_image: str | None = None


class DomainRecord(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A verified custom domain: its own slug namespace and its fallback pages."""

    v: int
    domain_id: str
    workspace_id: str
    root_url: str | None = None
    not_found_url: str | None = None
    expired_url: str | None = None


_link_encoder = msgspec.msgpack.Encoder()
_link_decoder = msgspec.msgpack.Decoder(LinkRecord)
_domain_decoder = msgspec.msgpack.Decoder(DomainRecord)


def link_key(domain: str, slug: str) -> str:
    """Redis key of the record for ``slug`` on ``domain`` (domain lower-case, slug as given)."""
    return f"h0p:l:{domain}/{slug}"


def domain_key(domain: str) -> str:
    """Redis key of the record of a verified custom domain."""
    return f"h0p:d:{domain}"


def encode(record: LinkRecord | DomainRecord) -> bytes:
    """Serialise a record for Redis."""
    return _link_encoder.encode(record)


def _version(data: bytes) -> int | None:
    # msgpack fixarray header then a positive fixint: the version, read without a full decode
    if len(data) < 2 or not 0x90 <= data[0] <= 0x9F and data[0] != 0xDC:
        return None
    first = data[1] if data[0] != 0xDC else data[3] if len(data) > 3 else -1
    return first if 0 <= first <= 0x7F else None


def decode_link(data: bytes) -> LinkRecord | None:
    """Decode a link record; ``None`` for an unknown version or garbage (treated as a miss)."""
    if _version(data) != RECORD_VERSION:
        return None
    try:
        return _link_decoder.decode(data)
    except msgspec.DecodeError:
        return None


def decode_domain(data: bytes) -> DomainRecord | None:
    """Decode a domain record; ``None`` for an unknown version or garbage."""
    if _version(data) != RECORD_VERSION:
        return None
    try:
        return _domain_decoder.decode(data)
    except msgspec.DecodeError:
        return None


UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")

LINK_QUERY = (
    "SELECT id, workspace_id, url, status_code, rules::text AS rules, split::text AS split,"
    " password_hash, expires_at, expired_url, utm_source, utm_medium, utm_campaign, utm_term,"
    " utm_content, forward_query, og_title, og_description, og_image"
    " FROM links WHERE domain = $1 AND slug = $2"
)

DOMAIN_QUERY = (
    "SELECT id, workspace_id, root_url, not_found_url, expired_url"
    " FROM domains WHERE hostname = $1 AND verified_at IS NOT NULL"
)


# Visitor facts a condition reads, by condition type (query: "query" for presence, "query=" with values).
FACTS = {
    "device": "device", "os": "os", "browser": "browser", "country": "country", "city": "city",
    "language": "language", "referrer": "referrer", "query": "query", "ip": "ip", "before": "time", "after": "time",
}  # fmt: skip
QUERY_SEPARATOR = "\x00"  # between a query key and value in facts["query="] (API input cannot hold NUL)
_BROWSER_NOISE = re.compile(r"\b(mobile|ios|webview)\b")
# "ipados": uap-core (and so analytics) reports iPads as iOS; "web0s": uap-core's spelling of webOS,
# kept for rules written against it
_OS_ALIASES = {
    "macosx": "macos", "mac": "macos", "osx": "macos", "chromeos": "chromeos", "win": "windows", "ipados": "ios",
    "web0s": "webos",
}  # fmt: skip


def normalise_os(name: str) -> str:
    """Compare OS names loosely: "Mac OS X", "macOS" and "macos" are one; "iOS" and "ios" too."""
    key = name.lower().replace(" ", "").replace("_", "")
    return _OS_ALIASES.get(key, key)


def normalise_browser(name: str) -> str:
    """Compare browsers loosely: "Chrome Mobile iOS" is "chrome", "Mobile Safari" is "safari"."""
    return " ".join(_BROWSER_NOISE.sub(" ", name.lower()).split())


def prefix_bits(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """An address as its bits ("0101…"): a network of prefix length p is the key ``bits[:p]``."""
    return format(int(address), "032b" if address.version == 4 else "0128b")


def _instant(text: str) -> float | None:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return (moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment).timestamp()


def mask_of(ids: Iterable[int]) -> Mask:
    """The Mask of a set of condition ids."""
    value = 0
    for i in ids:
        value |= 1 << i
    if not value:
        return (0, b"")
    shift = ((value & -value).bit_length() - 1) // 8 * 8
    value >>= shift
    return (shift, value.to_bytes((value.bit_length() + 7) // 8, "little"))


def mask_int(mask: Mask) -> int:
    """A Mask as an int (bit i set: condition i)."""
    return int.from_bytes(mask[1], "little") << mask[0]


class _TableBuilder:
    """Collects the conditions of a link's rules into a RuleTable (once, when the record is built)."""

    def __init__(self) -> None:
        self.facts: dict[str, dict[str, list[int]]] = {}
        self.negated: list[int] = []
        self.prefixes: dict[int, set[int]] = {4: set(), 6: set()}

    def _index(self, fact: str, value: str, cid: int) -> None:
        ids = self.facts.setdefault(fact, {}).setdefault(value, [])
        if not ids or ids[-1] != cid:
            ids.append(cid)

    def add(self, raw: Mapping[str, Any], cid: int) -> str | None:
        """Index one condition (API shape) under id ``cid``; the fact it reads (None: it never holds)."""
        if raw.get("not", False):
            self.negated.append(cid)
        kind, value = raw["type"], raw.get("value")
        values = [str(v) for v in value] if isinstance(value, list) else [] if value is None else [str(value)]
        if kind == "query":
            key = str(raw.get("key") or "")
            if not values:
                self._index("query", key, cid)
            for v in values:
                self._index("query=", key + QUERY_SEPARATOR + v, cid)
            return "query"
        if kind == "ip":
            for v in values:
                try:
                    net = ipaddress.ip_network(v.strip(), strict=False)
                except ValueError:
                    continue  # never matches, as the API refuses it anyway
                self.prefixes[net.version].add(net.prefixlen)
                self._index(f"ip{net.version}", prefix_bits(net.network_address)[: net.prefixlen], cid)
            return "ip"
        normalise = _NORMALISE.get(kind)
        if normalise is None:
            return None  # an unknown type never holds: the rule is skipped, not the link
        for v in values:
            self._index(kind, normalise(v), cid)
        return FACTS[kind]


def _referrer(value: str) -> str:
    return value.lower().rstrip(".")


# How each type's values are spelled in the table: the spelling of the visitor's fact
_NORMALISE: dict[str, Callable[[str], str]] = {
    "device": normalise_device, "os": normalise_os, "browser": normalise_browser, "country": str.upper,
    "city": str.lower, "language": str.lower, "referrer": _referrer,
}  # fmt: skip


def _time_of(raw: Mapping[str, Any]) -> float | None:
    """The instant of a valid "before"/"after" condition, else None."""
    if raw["type"] not in ("before", "after"):
        return None
    value = raw.get("value")
    first = value[0] if isinstance(value, list) and value else value
    return _instant(first) if isinstance(first, str) else None


def rules_and_table(raw_rules: list[Mapping[str, Any]]) -> tuple[tuple[Rule, ...], RuleTable | None]:
    """The record's rules and their RuleTable from the API-shaped rules (``links.rules`` JSON)."""
    if not raw_rules:
        return (), None
    # ids: the other conditions rule after rule, then "before" by instant, then "after" by instant
    flat = [(r, c) for r, raw in enumerate(raw_rules) for c in raw["conditions"]]
    timed: dict[str, list[tuple[float, int]]] = {"before": [], "after": []}
    ids: list[int] = [0] * len(flat)
    next_id = 0
    for n, (_, condition) in enumerate(flat):
        at = _time_of(condition)
        if at is None:
            ids[n], next_id = next_id, next_id + 1
        else:
            timed[condition["type"]].append((at, n))
    firsts: dict[str, int] = {}
    for kind in ("before", "after"):
        firsts[kind] = next_id
        for _, n in sorted(timed[kind]):
            ids[n], next_id = next_id, next_id + 1
    builder = _TableBuilder()
    plain: list[list[int]] = [[] for _ in raw_rules]
    timed_ids: list[list[int]] = [[] for _ in raw_rules]
    facts: list[list[str]] = [[] for _ in raw_rules]
    read: set[str] = set()
    for n, (r, condition) in enumerate(flat):
        if _time_of(condition) is None:
            plain[r].append(ids[n])
            fact = builder.add(condition, ids[n])
        else:  # indexed by its id's place among the instants
            timed_ids[r].append(ids[n])
            fact = "time"
            if condition.get("not", False):
                builder.negated.append(ids[n])
        if fact is not None and fact not in read:
            read.add(fact)
            facts[r].append(fact)
    rules = tuple(
        Rule(
            url=raw["url"],
            first=plain[r][0] if plain[r] else 0,
            count=len(plain[r]),
            timed=mask_of(timed_ids[r]),
            facts=tuple(facts[r]),
        )
        for r, raw in enumerate(raw_rules)
    )
    table = RuleTable(
        facts={f: {v: mask_of(i) for v, i in by_value.items()} for f, by_value in builder.facts.items()},
        negated=mask_of(builder.negated),
        before_at=tuple(sorted(at for at, _ in timed["before"])),
        before_first=firsts["before"],
        after_at=tuple(sorted(at for at, _ in timed["after"])),
        after_first=firsts["after"],
        ip4_prefixes=tuple(sorted(builder.prefixes[4])),
        ip6_prefixes=tuple(sorted(builder.prefixes[6])),
    )
    return rules, table


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def link_record_from_row(row: Mapping[str, Any]) -> LinkRecord:
    """Build the record from a ``LINK_QUERY`` row (rules/split as JSON text, API field shapes)."""
    rules, rule_table = rules_and_table(msgspec.json.decode(row["rules"] or "[]"))
    split = tuple(SplitTarget(url=t["url"], weight=int(t["weight"])) for t in msgspec.json.decode(row["split"] or "[]"))
    password_hash = row["password_hash"]
    return LinkRecord(
        v=RECORD_VERSION,
        link_id=row["id"],
        workspace_id=row["workspace_id"],
        url=row["url"],
        status_code=row["status_code"],
        rules=rules,
        rule_table=rule_table,
        split=split,
        password_hash=password_hash,
        password_version=hashlib.sha256(password_hash.encode()).hexdigest()[:12] if password_hash else "",
        expires_at=_epoch(row["expires_at"]),
        expired_url=row["expired_url"],
        utm=tuple((f, row[f]) for f in UTM_FIELDS if row[f]),
        forward_query=row["forward_query"],
        og_title=row["og_title"],
        og_description=row["og_description"],
        og_image=row["og_image"],
    )


def domain_record_from_row(row: Mapping[str, Any]) -> DomainRecord:
    """Build the record from a ``DOMAIN_QUERY`` row."""
    return DomainRecord(
        v=RECORD_VERSION,
        domain_id=row["id"],
        workspace_id=row["workspace_id"],
        root_url=row["root_url"],
        not_found_url=row["not_found_url"],
        expired_url=row["expired_url"],
    )
