"""The miss budget: how many uncached lookups may reach Postgres and find nothing.

A flood of random slugs misses every cache layer (negative entries help only for repeated
slugs), so each request would be a Postgres query, and the queue behind the small pool would
hold up every other uncached lookup. Each lookup that goes to Postgres takes a token from its
domain's bucket and from its client's (an IPv6 client is its /64); a lookup that finds a link
gives both back, so only misses spend the budget. With either bucket empty the lookup is
refused (503, ``Retry-After``) without Postgres and without tripping the Postgres breaker: a
flood on one domain, or from one client, leaves the other domains and clients their budgets.
"""

from __future__ import annotations

import time

from redirect.client import client_group

MAX_CLIENTS = 65_536  # distinct clients remembered; beyond, the client buckets start afresh


class TokenBuckets:
    """Token buckets by key: ``rate`` tokens a second, at most one second's worth banked."""

    __slots__ = ("_buckets", "burst", "max_keys", "rate")

    def __init__(self, rate: int, max_keys: int) -> None:
        self.rate = float(rate)
        self.burst = float(max(1, rate))
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when counted)

    def take(self, key: str, now: float) -> bool:
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        if len(self._buckets) >= self.max_keys and key not in self._buckets:
            self._buckets.clear()
        self._buckets[key] = (tokens - 1.0, now)
        return True

    def give_back(self, key: str) -> None:
        entry = self._buckets.get(key)
        if entry is not None:
            self._buckets[key] = (min(self.burst, entry[0] + 1.0), entry[1])


class MissBudget:
    """Per-domain and per-client buckets; a rate of 0 turns that one off."""

    def __init__(self, per_domain: int, per_client: int) -> None:
        self.domains = TokenBuckets(per_domain, MAX_CLIENTS) if per_domain else None
        self.clients = TokenBuckets(per_client, MAX_CLIENTS) if per_client else None

    def take(self, domain: str, client_ip: str) -> str | None:
        """The client's key when the lookup may go to Postgres (give it back on a hit), else ``None``."""
        now = time.monotonic()
        client = client_group(client_ip) if self.clients is not None and client_ip else ""
        if self.clients is not None and client and not self.clients.take(client, now):
            return None
        if self.domains is not None and not self.domains.take(domain, now):
            if self.clients is not None and client:
                self.clients.give_back(client)
            return None
        return client

    def give_back(self, domain: str, client: str) -> None:
        """The lookup found a record: it spent nothing."""
        if self.domains is not None:
            self.domains.give_back(domain)
        if self.clients is not None and client:
            self.clients.give_back(client)
