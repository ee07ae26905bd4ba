"""Prometheus metrics of one edge process (its own registry, so several apps can live in one test),
served on an address of their own (``MetricsServer``), never on the public port.

Children of labelled metrics are bound once here: ``.labels()`` on the hot path costs a dict
lookup and a lock per call. The counters bumped on every request (outcomes, in-process cache
lookups) are plain integers exported by a collector: prometheus-client's ``inc`` takes a lock
each time, which a single-threaded event loop does not need.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator

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
        self.lookups_refused = Counter(
            "h0p_edge_lookups_refused", "Uncached lookups refused without Postgres: miss budget spent", registry=r
        )
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


_HEAD_TIMEOUT_S = 5.0
_NOT_FOUND = (
    b"HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\ncontent-length: 10\r\nconnection: close\r\n\r\nnot found\n"
)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; raises ``OSError`` (port taken) before anything else starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(16)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class MetricsServer:
    """``GET /metrics`` on a socket of its own, one request per connection (Prometheus scrapes)."""

    def __init__(self, render: Callable[[], bytes], sock: socket.socket) -> None:
        self.render = render
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, sock=self.sock)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _HEAD_TIMEOUT_S)
            method, target, *_ = head.split(b"\r\n", 1)[0].split(b" ") + [b"", b""]
            if method in (b"GET", b"HEAD") and target.split(b"?", 1)[0] == b"/metrics":
                body = self.render()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: " + CONTENT_TYPE.encode() + b"\r\ncontent-length: "
                    + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + (body if method == b"GET" else b"")
                )  # fmt: skip
            else:
                writer.write(_NOT_FOUND)
            await asyncio.wait_for(writer.drain(), _HEAD_TIMEOUT_S)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            pass  # a scraper that went away or sent junk: nothing to answer
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.sock.close()
