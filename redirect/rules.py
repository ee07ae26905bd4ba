"""Which destination a visitor gets: routing rules in order, then the A/B split, then UTM/query merge.

Everything about the visitor is computed lazily (UA parsing, geo lookup, Accept-Language, query
parsing), so a link without rules pays for none of it; the rules' values were normalised and
indexed once, when the record was built (``redirect.record.RuleTable``), never per click.
"""

from __future__ import annotations

import bisect
import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from redirect.agent import Agent, parse_agent
from redirect.client import Address, parse_address
from redirect.geo import UNKNOWN, Place
from redirect.record import QUERY_SEPARATOR, LinkRecord, RuleTable, SplitTarget, mask_int, prefix_bits

Locate = Callable[[str], Place]


class Visitor:
    """The request as rules see it."""

    __slots__ = (
        "_agent",
        "_address",
        "_language",
        "_place",
        "_query",
        "accept_language",
        "ip",
        "locate",
        "now",
        "query_string",
        "referer",
        "user_agent",
    )

    def __init__(
        self,
        *,
        ip: str = "",
        user_agent: str = "",
        accept_language: str = "",
        referer: str = "",
        query_string: str = "",
        locate: Locate | None = None,
        now: float | None = None,
    ) -> None:
        self.ip = ip
        self.user_agent = user_agent
        self.accept_language = accept_language
        self.referer = referer
        self.query_string = query_string
        self.locate = locate
        self.now = time.time() if now is None else now
        self._agent: Agent | None = None
        self._place: Place | None = None
        self._query: dict[str, list[str]] | None = None
        self._language: str | None = None
        self._address: Address | None | bool = False

    @property
    def agent(self) -> Agent:
        if self._agent is None:
            self._agent = parse_agent(self.user_agent)
        return self._agent

    @property
    def place(self) -> Place:
        if self._place is None:
            self._place = self.locate(self.ip) if self.locate is not None else UNKNOWN
        return self._place

    @property
    def query(self) -> dict[str, list[str]]:
        if self._query is None:
            query: dict[str, list[str]] = {}
            for key, value in parse_qsl(self.query_string, keep_blank_values=True):
                query.setdefault(key, []).append(value)
            self._query = query
        return self._query

    @property
    def language(self) -> str:
        """The most preferred language tag, lower-case ("fr-ca"), "" when none."""
        if self._language is None:
            self._language = preferred_language(self.accept_language)
        return self._language

    @property
    def address(self) -> Address | None:
        if self._address is False:
            self._address = parse_address(self.ip)
        return self._address  # type: ignore[return-value]


def preferred_language(header: str) -> str:
    """The tag with the highest q in an Accept-Language header (first one wins ties)."""
    best, best_q = "", 0.0
    for item in header[:1024].split(","):
        tag, _, params = item.partition(";")
        tag = tag.strip().lower()
        if not tag or tag == "*":
            continue
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                continue
        if q > best_q:
            best, best_q = tag, q
    return best


def _referrer_host(referer: str) -> str:
    try:
        return (urlsplit(referer).hostname or "").rstrip(".")
    except ValueError:
        return ""


def _host_suffixes(host: str) -> list[str]:
    """``a.b.c`` -> ``a.b.c``, ``b.c``, ``c``: a referrer value matches the host or a parent of it.

    Only suffixes a rule value could be (at most 253 characters), so a long Referer costs little.
    """
    out = [host] if len(host) <= 253 else []
    start = host.find(".")
    while start >= 0:
        if len(host) - start - 1 <= 253:
            out.append(host[start + 1 :])
        start = host.find(".", start + 1)
    return out


def _fact_values(fact: str, visitor: Visitor) -> Iterable[str]:
    """How the visitor's ``fact`` is spelled in a RuleTable (see ``redirect.record._NORMALISE``)."""
    if fact == "device":
        return (visitor.agent.device,)
    if fact == "os":
        return (visitor.agent.os,)
    if fact == "browser":
        return (visitor.agent.browser,)
    if fact == "country":
        return (visitor.place.country,) if visitor.place.country else ()
    if fact == "city":
        return (visitor.place.city.lower(),) if visitor.place.city else ()
    if fact == "language":
        tag = visitor.language
        primary = tag.split("-", 1)[0]  # "fr" matches any French; "fr-CA" only Canadian French
        return (tag, primary) if tag and primary != tag else (tag,) if tag else ()
    if fact == "referrer":
        host = _referrer_host(visitor.referer)
        return _host_suffixes(host) if host else ()
    return ()


def _held(fact: str, table: RuleTable, visitor: Visitor) -> int:
    """The conditions reading ``fact`` that the visitor's value makes hold (before negation), as a mask."""
    held = 0
    if fact == "time":
        now = visitor.now
        # "before t" holds while now < t: the later instants; "after t" once now >= t: the earlier ones
        k = bisect.bisect_right(table.before_at, now)
        held = ((1 << (len(table.before_at) - k)) - 1) << (table.before_first + k)
        return held | ((1 << bisect.bisect_right(table.after_at, now)) - 1) << table.after_first
    if fact == "query":
        present, pairs = table.facts.get("query", {}), table.facts.get("query=", {})
        for key, values in visitor.query.items():
            if (mask := present.get(key)) is not None:
                held |= int.from_bytes(mask[1], "little") << mask[0]
            if pairs:
                for value in values:
                    if (mask := pairs.get(key + QUERY_SEPARATOR + value)) is not None:
                        held |= int.from_bytes(mask[1], "little") << mask[0]
        return held
    if fact == "ip":
        address = visitor.address
        networks = table.facts.get(f"ip{address.version}") if address is not None else None
        if networks:
            # one probe per prefix length in the table (at most 33 or 129): bits[:p] is the network key
            bits = prefix_bits(address)  # type: ignore[arg-type]
            prefixes = table.ip4_prefixes if address.version == 4 else table.ip6_prefixes  # type: ignore[union-attr]
            get = networks.get
            for mask in [get(bits[:p]) for p in prefixes]:
                if mask is not None:
                    held |= int.from_bytes(mask[1], "little") << mask[0]
        return held
    by_value = table.facts.get(fact)
    if by_value:
        for value in _fact_values(fact, visitor):
            if (mask := by_value.get(value)) is not None:
                held |= int.from_bytes(mask[1], "little") << mask[0]
    return held


def choose_rule(record: LinkRecord, visitor: Visitor) -> tuple[str, str] | None:
    """(url, "rule:N") of the first rule whose conditions all hold, else None.

    The values were normalised and indexed when the record was built (``RuleTable``): a click
    computes each visitor fact at most once, when the first rule reading it is reached, and
    tests a rule with one mask, whatever the number of its conditions and values.
    """
    table = record.rule_table
    if table is None:
        return None
    holding = mask_int(table.negated)  # a negated condition holds until the visitor's fact says otherwise
    failing = ~holding
    for index, rule in enumerate(record.rules):
        if rule.facts:
            for fact in rule.facts:
                holding ^= _held(fact, table, visitor)
            failing = ~holding
        if (failing >> rule.first) & ((1 << rule.count) - 1):
            continue
        if rule.timed[1] and mask_int(rule.timed) & failing:
            continue
        return rule.url, f"rule:{index}"
    return None


def split_bucket(visitor_id: str, link_id: str) -> int:
    """0..99, stable for one visitor and one link (so the visitor keeps seeing one variant)."""
    digest = hashlib.blake2b(f"{visitor_id}/{link_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 100


def choose_split(split: Sequence[SplitTarget], bucket: int) -> tuple[str, str] | None:
    """(url, "split:N") for a bucket 0..99 over cumulative weights."""
    total = 0
    for index, target in enumerate(split):
        total += target.weight
        if bucket < total:
            return target.url, f"split:{index}"
    return (split[-1].url, f"split:{len(split) - 1}") if split else None


def merge_query(url: str, utm: Sequence[tuple[str, str]], incoming: Sequence[tuple[str, str]]) -> str:
    """The destination with UTM and forwarded parameters; each key once.

    Precedence: the visitor's query (forwarded) over the link's UTM fields over the
    destination's own parameters, so a campaign link tagged by a newsletter keeps that tag.
    """
    if not utm and not incoming:
        return url
    base, hash_, fragment = url.partition("#")
    path, question, own_query = base.partition("?")
    order: list[str] = []
    values: dict[str, list[str]] = {}
    for source in (incoming, utm, parse_qsl(own_query, keep_blank_values=True)):
        seen_here: set[str] = set()
        for key, value in source:
            if key in values and key not in seen_here:
                continue  # already set by a source with precedence
            if key not in values:
                order.append(key)
                values[key] = []
            seen_here.add(key)
            values[key].append(value)
    query = urlencode([(k, v) for k in order for v in values[k]], quote_via=quote)
    return f"{path}?{query}{hash_}{fragment}" if query else f"{path}{hash_}{fragment}"


def strip_marker(query_string: str, marker: str = "qr") -> tuple[str, bool]:
    """Remove ``qr=1`` (the QR-code marker) from a raw query string; True if it was there."""
    if marker not in query_string:
        return query_string, False
    kept, found = [], False
    for part in query_string.split("&"):
        if part == f"{marker}=1":
            found = True
        elif part:
            kept.append(part)
    return "&".join(kept), found
