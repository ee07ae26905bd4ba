"""One ClickEvent to one ``clicks`` row: all enrichment steps in the order of the table's columns."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any
from urllib.parse import urlsplit

import msgspec
from asyncpg.pgproto.pgproto import UUID as _FastUUID

from h0p_settings import Settings
from ingest.enrich.agent import AgentParser
from ingest.enrich.bots import is_bot_request
from ingest.enrich.geo import GeoLocator
from ingest.enrich.utm import NO_UTM, Utm, merge_utm, utm_from_query
from ingest.links import LinkDirectory
from redirect.events import EVENT_VERSION, ClickEvent, decode

# Column order of the COPY; must match the tuples built by Enricher.row.
COLUMNS = (
    "event_id", "ts", "workspace_id", "link_id", "domain", "slug", "url", "rule", "method", "status",
    "country", "region", "city", "continent", "latitude", "longitude",
    "device", "device_brand", "device_model", "browser", "browser_version", "os", "os_version",
    "referer", "referer_url",
    "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content",
    "bot", "qr", "visitor", "ip", "ua", "lang",
)  # fmt: skip

_MAX_TEXT = 2048  # bound on free text from visitors (referrer, user agent)


_OLDEST_TS = 946_684_800.0  # 2000-01-01: anything older is a broken clock, not a click
_MAX_FUTURE_S = 86_400.0  # edge clocks may run ahead a little; a day ahead is an error


class InvalidEvent(ValueError):
    """The event decoded but cannot be stored (bad id, time out of range): dead letter."""


def check_event(e: ClickEvent, now: float) -> uuid.UUID:
    """Validate what would make the whole COPY fail; returns the parsed event id."""
    if not _OLDEST_TS <= e.ts <= now + _MAX_FUTURE_S:  # also rejects NaN
        raise InvalidEvent(f"timestamp out of range: {e.ts!r}")
    try:
        # asyncpg's UUID (a uuid.UUID, parsed in C) is ~10x cheaper than uuid.UUID for the usual
        # hex-and-hyphens form; the rarer forms uuid.UUID also accepts ("{…}", "urn:uuid:…") fall back
        fast: uuid.UUID = _FastUUID(e.id)
        return fast
    except ValueError:
        pass
    try:
        return uuid.UUID(e.id)
    except ValueError:
        raise InvalidEvent(f"event id is not a UUID: {e.id[:64]!r}") from None


_event_decoder = msgspec.json.Decoder(ClickEvent)


def decode_event(data: bytes) -> ClickEvent:
    """``redirect.events.decode`` in one parse for the usual case (a current-version event).

    Anything else goes through the contract's own decoder, which raises what it raises.
    """
    try:
        event = _event_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        event = None
    if event is None or event.v != EVENT_VERSION:
        return decode(data)
    return event


def _clip(value: str, limit: int = _MAX_TEXT) -> str:
    # NUL cannot be stored in a Postgres text column; strip it rather than lose the event
    value = value if len(value) <= limit else value[:limit]
    return value.replace("\x00", "") if "\x00" in value else value


class Enricher:
    """Turns events into rows; holds the caches (user agents, addresses, referrers) across batches."""

    def __init__(self, settings: Settings, links: LinkDirectory) -> None:
        self.geo = GeoLocator(settings.geoip_path)
        self.agents = AgentParser()
        self.links = links
        self._visitor_hash = hashlib.blake2b(key=settings.derived_key("visitor-hash"), digest_size=8)
        self._store_ip = settings.store_raw_ip
        self._referers: dict[str, tuple[str, str]] = {}
        self._queries: dict[str, Utm] = {}

    def warm(self) -> None:
        """Build what the first events would otherwise build lazily (before consuming: off the first batch)."""
        self.agents.warm()

    def referer(self, referer: str) -> tuple[str, str]:
        """(host without "www.", full referrer), cached; ('', '') for direct visits."""
        hit = self._referers.get(referer)
        if hit is not None:
            return hit
        full = _clip(referer)
        try:
            host = (urlsplit(full).hostname or "") if full else ""
        except ValueError:  # malformed (bad IPv6 literal, …): keep the text, no host
            host = ""
        host = host.removeprefix("www.")
        if len(self._referers) >= 50_000:
            self._referers.clear()  # bounded; referrers repeat, the cache refills quickly
        self._referers[referer] = (host, full)
        return host, full

    def landing_utm(self, query: str) -> Utm:
        """UTM fields of a landing query string, cached (campaign links repeat the same query)."""
        if "utm_" not in query:
            return NO_UTM
        utm = self._queries.get(query)
        if utm is None:
            utm = utm_from_query(query)
            if len(self._queries) >= 50_000:
                self._queries.clear()  # bounded, as the referrer cache
            self._queries[query] = utm
        return utm

    def visitor(self, ts: float, ip: str, ua: str) -> int:
        """Keyed hash of (UTC day, ip, ua) as a signed 64-bit int: unique visitors without the IP."""
        h = self._visitor_hash.copy()  # the key block is hashed once, not per event
        h.update(f"{int(ts // 86400)}|{ip}|{ua}".encode())
        return int.from_bytes(h.digest(), "big", signed=True)

    def row(self, e: ClickEvent, event_id: uuid.UUID) -> tuple[Any, ...]:
        """The ``clicks`` row for one checked event (call ``links.load`` for the batch first)."""
        ua = e.ua
        if len(ua) > _MAX_TEXT or "\x00" in ua:  # rare: the call is skipped for the usual agent
            ua = _clip(ua)
        agent = self.agents.parse(ua)
        method = e.method
        bot = agent.bot or (method != "GET" and is_bot_request(method))
        utm = self.landing_utm(e.query)
        link_id = e.link_id
        if link_id is not None:
            utm = merge_utm(utm, self.links.link_utm(link_id))
        # concatenating the cached parts (place, agent, referrer, UTM) builds the row in C
        return (
            (event_id, datetime.fromtimestamp(e.ts, UTC), e.workspace_id or self.links.domain_workspace(e.domain),
             link_id, e.domain, e.slug, e.url, e.rule, method[:16], e.status)
            + self.geo.locate(e.ip)
            + (("bot",) + agent[1:7] if bot else agent[:7])
            + self.referer(e.referer)
            + utm
            + (bot, e.qr, self.visitor(e.ts, e.ip, ua), self._raw_ip(e.ip) if self._store_ip else None,
               ua, _clip(e.lang, 256))
        )  # fmt: skip

    def _raw_ip(self, ip: str) -> IPv4Address | IPv6Address | None:
        """The client address as stored when H0P_STORE_RAW_IP is on (``row`` checks the setting)."""
        if not ip:
            return None
        try:
            return ip_address(ip)
        except ValueError:
            return None

    def close(self) -> None:
        self.geo.close()
