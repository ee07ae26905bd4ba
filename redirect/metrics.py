"""Prometheus metrics of one edge process (its own registry, so several apps can live in one test).

Children of labelled metrics are bound once here: ``.labels()`` on the hot path costs a dict
lookup and a lock per call. The counters bumped on every request (outcomes, in-process cache
lookups) are plain integers exported by a collector: prometheus-client's ``inc`` takes a lock
each time, which a single-threaded event loop does not need.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

OUTCOMES = (
    "redirect",  # 30x to the link's destination (default, rule or split)
    "not_found",  # unknown slug (404 page or the domain's not-found URL)
    "expired",
    "password",  # the password form (or a wrong password)
    "preview",  # Open Graph page for a link-preview fetcher
    "blocked",  # destination on the blocked list
    "root",
    "bad_request",
    "limited",  # too many password attempts (by this client, or on this link)
    "busy",  # password checks refused: this process checks as many as it may at once
    "unavailable",  # Redis and Postgres both unreachable for an uncached key
)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Tally:
    """A counter for the event loop's thread only: ``inc`` is one integer addition."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount


class TallyFamily(Collector):
    """One labelled counter family made of tallies, exposed like a prometheus-client ``Counter``."""

    def __init__(self, name: str, documentation: str, label: str, values: tuple[str, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.label = label
        self.tallies = {value: Tally() for value in values}
        self.created = time.time()

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, tally in self.tallies.items():
            family.add_metric([value], tally.value, created=self.created)
        yield family


class EdgeMetrics:
    """The counters the edge keeps; ``render()`` is the ``/metrics`` body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        requests = TallyFamily("h0p_edge_requests", "Requests answered, by outcome", "outcome", OUTCOMES)
        r.register(requests)
        self.requests = requests.tallies
        cache = TallyFamily("h0p_edge_cache_lookups", "In-process cache lookups", "result", ("hit", "miss"))
        r.register(cache)
        self.cache_hit = cache.tallies["hit"]
        self.cache_miss = cache.tallies["miss"]
        redis = Counter("h0p_edge_redis_lookups", "Keys looked up in Redis", ["result"], registry=r)
        self.redis_hit = redis.labels("hit")
        self.redis_miss = redis.labels("miss")
        self.redis_error = redis.labels("error")
        self.postgres_lookups = Counter("h0p_edge_postgres_lookups", "Fallback reads from Postgres", registry=r)
        self.postgres_errors = Counter("h0p_edge_postgres_errors", "Failed fallback reads from Postgres", registry=r)
        events = Counter("h0p_edge_events", "Click events, by what happened to them", ["state"], registry=r)
        self.events_sent = events.labels("sent")
        self.events_spooled = events.labels("spooled")
        self.events_replayed = events.labels("replayed")
        self.events_dropped = events.labels("dropped")
        self.event_queue = Gauge("h0p_edge_event_queue", "Click events waiting in memory", registry=r)
        self.spool_bytes = Gauge("h0p_edge_spool_bytes", "Bytes of click events waiting in the spool", registry=r)
        self.invalidations = Counter("h0p_edge_invalidations", "Invalidation messages received", registry=r)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
