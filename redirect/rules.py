"""Which destination a visitor gets: routing rules in order, then the A/B split, then UTM/query merge.

Everything about the visitor is computed lazily (UA parsing, geo lookup, Accept-Language, query
parsing), so a link without rules pays for none of it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from redirect.agent import Agent, normalise_browser, normalise_device, normalise_os, parse_agent
from redirect.client import Address, parse_address
from redirect.geo import UNKNOWN, Place
from redirect.record import Condition, LinkRecord, SplitTarget

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


@lru_cache(maxsize=4096)
def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None


@lru_cache(maxsize=4096)
def _instant(text: str) -> float | None:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _values(condition: Condition) -> tuple[str, ...]:
    value = condition.value
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else value


def _referrer_host(referer: str) -> str:
    try:
        return (urlsplit(referer).hostname or "").rstrip(".")
    except ValueError:
        return ""


def _test(condition: Condition, visitor: Visitor) -> bool:
    kind = condition.type
    values = _values(condition)
    if kind == "query":
        present = visitor.query.get(condition.key or "")
        if present is None:
            return False
        return not values or any(v in present for v in values)
    if kind == "device":
        return visitor.agent.device in {normalise_device(v) for v in values}
    if kind == "os":
        return visitor.agent.os in {normalise_os(v) for v in values}
    if kind == "browser":
        return visitor.agent.browser in {normalise_browser(v) for v in values}
    if kind == "country":
        country = visitor.place.country
        return bool(country) and country in {v.upper() for v in values}
    if kind == "city":
        city = visitor.place.city.lower()
        return bool(city) and city in {v.lower() for v in values}
    if kind == "language":
        tag = visitor.language
        primary = tag.split("-", 1)[0]
        # "fr" matches any French; "fr-CA" only Canadian French
        return bool(tag) and any(v.lower() == tag or v.lower() == primary for v in values)
    if kind == "referrer":
        host = _referrer_host(visitor.referer)
        return bool(host) and any(host == v.lower() or host.endswith("." + v.lower()) for v in values)
    if kind == "ip":
        address = visitor.address
        if address is None:
            return False
        networks = (_network(v) for v in values)
        return any(net is not None and net.version == address.version and address in net for net in networks)
    if kind in ("before", "after"):
        moments = [m for m in (_instant(v) for v in values) if m is not None]
        if not moments:
            return False
        return visitor.now < moments[0] if kind == "before" else visitor.now >= moments[0]
    return False  # an unknown condition type never matches: the rule is skipped, not the link


def matches(condition: Condition, visitor: Visitor) -> bool:
    """One condition, with ``negate`` applied."""
    return _test(condition, visitor) != condition.negate


def choose_rule(record: LinkRecord, visitor: Visitor) -> tuple[str, str] | None:
    """(url, "rule:N") of the first rule whose conditions all hold, else None."""
    for index, rule in enumerate(record.rules):
        if all(matches(c, visitor) for c in rule.conditions):
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
