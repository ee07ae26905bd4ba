"""What ingest needs to know about links and domains, read from Postgres per batch and cached."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TypeVar

import asyncpg

from ingest.enrich.utm import NO_UTM, Utm

_V = TypeVar("_V")
_UTM_COLUMNS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")


class LinkDirectory:
    """Each link's own UTM fields and each domain's owner, cached for ``ttl_s`` (bounded).

    A link edited in the API shows its new UTM fields in clicks after at most ``ttl_s``.
    """

    def __init__(self, ttl_s: float = 60.0, max_entries: int = 200_000) -> None:
        self._ttl_s = ttl_s
        self._max = max_entries
        self._links: dict[str, tuple[float, Utm]] = {}
        self._domains: dict[str, tuple[float, str | None]] = {}

    async def load(self, conn: asyncpg.Connection, link_ids: Iterable[str], domains: Iterable[str]) -> None:
        """Fetch, in one query each, the links and domains missing from the cache or expired."""
        now = time.monotonic()
        stale_links = [i for i in set(link_ids) if (li := self._links.get(i)) is None or li[0] < now]
        stale_domains = [d for d in set(domains) if (dh := self._domains.get(d)) is None or dh[0] < now]
        expires = now + self._ttl_s
        if stale_links:
            self._trim(self._links, len(stale_links))
            for i in stale_links:  # a deleted link keeps no UTM of its own
                self._links[i] = (expires, NO_UTM)
            rows = await conn.fetch(
                "SELECT id, utm_source, utm_medium, utm_campaign, utm_term, utm_content"
                " FROM links WHERE id = ANY($1::text[])",
                stale_links,
            )
            for r in rows:
                utm = Utm(*(r[k] or "" for k in _UTM_COLUMNS))
                self._links[r["id"]] = (expires, utm)
        if stale_domains:
            self._trim(self._domains, len(stale_domains))
            for d in stale_domains:
                self._domains[d] = (expires, None)
            rows = await conn.fetch(
                "SELECT hostname, workspace_id FROM domains WHERE hostname = ANY($1::text[])", stale_domains
            )
            for r in rows:
                self._domains[r["hostname"]] = (expires, r["workspace_id"])

    def link_utm(self, link_id: str) -> Utm:
        """The link's own UTM fields (NO_UTM if unknown or not loaded)."""
        hit = self._links.get(link_id)
        return hit[1] if hit is not None else NO_UTM

    def domain_workspace(self, domain: str) -> str | None:
        """The workspace owning a custom domain; None for the default domain or an unknown one."""
        hit = self._domains.get(domain)
        return hit[1] if hit is not None else None

    def _trim(self, cache: dict[str, tuple[float, _V]], room: int) -> None:
        # bounded: when full, forget the oldest half (re-read on next use) rather than grow
        if len(cache) + room > self._max:
            for key in list(cache)[: len(cache) // 2 + room]:
                del cache[key]
