"""Prometheus metrics of one edge process (its own registry, so several apps can live in one test),
served on an address of their own (``MetricsServer``), never on the public port.

With several workers (``h0p redirect --workers N``), each worker serves its metrics on a Unix
socket of the supervisor's private directory and the supervisor serves them all on the metrics
port (``WorkerMetrics``), each sample labelled with its ``worker``: one scrape, every worker
(``sum without (worker) (...)`` adds them up). Why not prometheus-client's multiprocess mode:
the counters of the hot path are plain integers (``Tally``) that it cannot see, and its values
live in memory-mapped files behind a lock per ``inc``; here a worker pays nothing until scraped.

Children of labelled metrics are bound once here: ``.labels()`` on the hot path costs a dict
lookup and a lock per call. The counters bumped on every request (outcomes, in-process cache
lookups) are plain integers exported by a collector: prometheus-client's ``inc`` takes a lock
each time, which a single-threaded event loop does not need.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
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


def bind_unix_socket(path: str) -> socket.socket:
    """A listening Unix socket at ``path`` (a worker's metrics, read by its supervisor only)."""
    if os.path.exists(path):
        os.unlink(path)  # left by the worker this one replaces
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(16)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class MetricsServer:
    """``GET /metrics`` on a socket of its own, one request per connection (Prometheus scrapes)."""

    def __init__(self, render: Callable[[], bytes | Awaitable[bytes]], sock: socket.socket) -> None:
        self.render = render
        self.sock = sock
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        if self.sock.family == socket.AF_UNIX:
            self._server = await asyncio.start_unix_server(self._serve, sock=self.sock)
        else:
            self._server = await asyncio.start_server(self._serve, sock=self.sock)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _HEAD_TIMEOUT_S)
            method, target, *_ = head.split(b"\r\n", 1)[0].split(b" ") + [b"", b""]
            if method in (b"GET", b"HEAD") and target.split(b"?", 1)[0] == b"/metrics":
                rendered = self.render()
                body = await rendered if inspect.isawaitable(rendered) else rendered
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


SCRAPE_TIMEOUT_S = 2.0


async def scrape_unix(path: str, timeout: float = SCRAPE_TIMEOUT_S) -> bytes | None:
    """A worker's /metrics body read over its Unix socket; None if it does not answer (starting, gone)."""

    async def fetch() -> bytes | None:
        reader, writer = await asyncio.open_unix_connection(path)
        try:
            writer.write(b"GET /metrics HTTP/1.1\r\nhost: worker\r\nconnection: close\r\n\r\n")
            data = await reader.read()  # the server closes the connection after its answer
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        return body if head.startswith(b"HTTP/1.1 200 ") else None

    try:
        return await asyncio.wait_for(fetch(), timeout)
    except (OSError, TimeoutError):
        return None


class WorkerMetrics(Collector):
    """The supervisor's /metrics: every worker's samples labelled ``worker="<index>"``.

    ``shared`` names gauges that measure something all workers share (the spool directory's
    bytes): those are given once, unlabelled, as the largest value any worker reports, since a
    sum would count the same bytes once per worker. Counters of a replaced worker start again
    from 0 under the same label, which Prometheus reads as a counter reset (``rate`` handles it).
    """

    def __init__(
        self,
        sockets: Callable[[], Mapping[int, str]],
        restarts: Callable[[], Mapping[int, int]],
        shared: frozenset[str] = frozenset({"h0p_edge_spool_bytes"}),
    ) -> None:
        self.sockets = sockets
        self.restarts = restarts
        self.shared = shared
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self._bodies: dict[int, bytes] = {}

    async def render(self) -> bytes:
        paths = dict(self.sockets())
        bodies = await asyncio.gather(*(scrape_unix(path) for path in paths.values()))
        self._bodies = {index: body for index, body in zip(paths, bodies, strict=True) if body is not None}
        try:
            return generate_latest(self.registry)
        finally:
            self._bodies = {}

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("h0p_edge_workers_up", "Edge workers that answered this scrape")
        up.add_metric([], len(self._bodies))
        yield up
        restarts = CounterMetricFamily(
            "h0p_edge_worker_restarts", "Edge workers started again after exiting unasked", labels=["worker"]
        )
        for index, count in sorted(self.restarts().items()):
            restarts.add_metric([str(index)], count)
        yield restarts
        yield from merge_worker_metrics(self._bodies, self.shared)


def merge_worker_metrics(bodies: Mapping[int, bytes], shared: frozenset[str] = frozenset()) -> list[Metric]:
    """The families of every worker's exposition text, one family per name, samples labelled by worker."""
    families: dict[str, Metric] = {}
    largest: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for index, body in sorted(bodies.items()):
        for family in text_string_to_metric_families(body.decode()):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(family.name, family.documentation, family.type)
            for sample in family.samples:
                if family.name in shared:
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    largest[key] = max(largest.get(key, sample.value), sample.value)
                else:
                    labels = {**sample.labels, "worker": str(index)}
                    merged.add_sample(sample.name, labels, sample.value, sample.timestamp, sample.exemplar)
    for (name, pairs), value in largest.items():
        family_name = next(f for f in shared if name.startswith(f))
        families[family_name].add_sample(name, dict(pairs), value)
    return list(families.values())
