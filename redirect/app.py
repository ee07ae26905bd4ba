"""The edge process: the plain-ASGI hot path in front, Starlette for its own endpoints and lifespan.

``/healthz`` (process up), ``/readyz`` (links can be looked up: Redis or Postgres) and ``/favicon.ico`` are
answered by Starlette; every other path is a short link. ``/metrics`` (Prometheus) is served on
its own address (``H0P_EDGE_METRICS_HOST``:``H0P_EDGE_METRICS_PORT``, loopback by default), never
on the public port. ``serve`` runs one process, or with more than one worker (``H0P_EDGE_WORKERS``,
``h0p redirect --workers N``) a supervisor (``h0p_workers``) and N workers sharing the port. The
lifespan owns every background task: the Redis batcher, the
invalidation subscriber and the click-event sender; shutdown drains the event queue to the
broker or the spool.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import sys
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from h0p_settings import Settings
from h0p_workers import Supervisor, Worker, check_port_free, die_with_parent, reuseport_socket, worker_command
from redirect.cache import RecordCache
from redirect.domains import VerifiedDomains
from redirect.edge import RESERVED, EdgeHandler, Receive, Scope, Send
from redirect.geo import GeoLocator
from redirect.invalidation import InvalidationSubscriber
from redirect.metrics import EdgeMetrics, MetricsServer, WorkerMetrics, bind_socket, bind_unix_socket
from redirect.misses import MissBudget
from redirect.producer import ClickProducer
from redirect.protect import PasswordGate
from redirect.protocol import protocol_for
from redirect.resolve import FILL_TTL_S, REDIS_ERRORS, REPLICA_FILL_TTL_S, PostgresReader, Resolver

log = logging.getLogger("h0p.redirect")

DRAIN_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0


class EdgeApp:
    """The ASGI application of the edge (see ``create_app``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = EdgeMetrics()
        self.cache = RecordCache(
            settings.cache_size, settings.cache_ttl_s, settings.negative_ttl_s, settings.cache_max_bytes
        )
        # Every call has a timeout and the pool a bound: a stalled Redis must not hold requests forever.
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.redis_url, max_connections=32, timeout=1.0, socket_timeout=1.0, socket_connect_timeout=1.0
        )
        self.redis = aioredis.Redis.from_pool(pool)  # owns the pool: aclose() disconnects it
        # Record reads and invalidations from a replica near the edge (H0P_EDGE_REDIS_URL); refills
        # and password counters are writes, which a replica refuses: they go to the primary.
        self.redis_reader = self.redis
        if settings.edge_read_redis_url != settings.redis_url:
            reader_pool = aioredis.BlockingConnectionPool.from_url(
                settings.edge_read_redis_url, max_connections=32, timeout=1.0, socket_timeout=1.0,
                socket_connect_timeout=1.0,
            )  # fmt: skip
            self.redis_reader = aioredis.Redis.from_pool(reader_pool)
        self.postgres = PostgresReader(settings.read_url)
        misses = MissBudget(settings.miss_budget_domain, settings.miss_budget_client)
        fill_ttl = REPLICA_FILL_TTL_S if settings.read_url != settings.database_url else FILL_TTL_S
        self.resolver = Resolver(
            self.cache, self.redis, self.postgres, self.metrics, misses, reader=self.redis_reader, fill_ttl_s=fill_ttl
        )
        self.producer = ClickProducer(settings, self.metrics)
        self.domains = VerifiedDomains(self.postgres.verified_hosts, on_change=self._domains_changed)
        self.subscriber = InvalidationSubscriber(  # pub/sub is replicated: a replica hears the primary's PUBLISH
            settings.edge_read_redis_url, settings.invalidation_channel, self.cache, self.metrics, self.domains
        )
        self.geo = GeoLocator(settings.geoip_path)
        gate = PasswordGate(
            settings.derived_key("unlock-cookies"),
            self.redis,
            settings.password_attempts,
            settings.password_window_s,
            secure=settings.public_scheme == "https",
            link_attempts=settings.password_link_attempts,
            checks=settings.password_checks,
        )
        self.gate = gate
        self.handler = EdgeHandler(
            settings, self.resolver, self.producer, gate, self.geo, self.metrics, self.domains.may_be_custom
        )
        self.tasks: list[asyncio.Task[None]] = []
        self.metrics_socket: socket.socket | None = None
        # A worker's metrics go to its supervisor over this Unix socket instead of the metrics port.
        self.metrics_path: str | None = None
        self.metrics_server: MetricsServer | None = None
        self.starlette = Starlette(
            routes=[
                Route("/healthz", self.healthz, methods=["GET", "HEAD"]),
                Route("/readyz", self.readyz, methods=["GET", "HEAD"]),
                Route("/favicon.ico", self.favicon, methods=["GET", "HEAD"]),
            ],
            lifespan=self.lifespan,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in RESERVED:
            await self.handler(scope, receive, send)
        else:
            await self.starlette(scope, receive, send)

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    def bind_metrics(self) -> None:
        """Take the metrics port now (``OSError`` if taken); ``start`` serves it. Port 0: no metrics."""
        if self.settings.edge_metrics_port and self.metrics_socket is None:
            if self.metrics_path is not None:
                self.metrics_socket = bind_unix_socket(self.metrics_path)
            else:
                self.metrics_socket = bind_socket(self.settings.edge_metrics_host, self.settings.edge_metrics_port)

    async def start(self) -> None:
        """Start the background tasks; nothing here waits for Redis, Postgres or the broker."""
        self.bind_metrics()
        if self.metrics_socket is not None:
            self.metrics_server = MetricsServer(self.render_metrics, self.metrics_socket)
            await self.metrics_server.start()
        self.tasks = [
            asyncio.create_task(self.resolver.batcher.run(), name="edge-redis-batcher"),
            asyncio.create_task(self.subscriber.run(), name="edge-invalidation"),
            asyncio.create_task(self.domains.run(), name="edge-verified-domains"),
            asyncio.create_task(self.producer.run(), name="edge-click-sender"),
        ]

    async def stop(self) -> None:
        """Drain click events (broker or spool), then stop every task and close connections."""
        sender = self.tasks[-1] if self.tasks else None
        self.producer.close()
        if sender is not None:
            try:
                await asyncio.wait_for(asyncio.shield(sender), DRAIN_TIMEOUT_S)
            except TimeoutError:
                log.error("click events not drained within %ss; the rest stays in memory", DRAIN_TIMEOUT_S)
        for task in self.tasks:
            task.cancel()
        _, stuck = await asyncio.wait(self.tasks, timeout=STOP_TIMEOUT_S) if self.tasks else (set(), set())
        for task in stuck:  # a library swallowed the cancellation: shutdown must not hang on it
            log.error("background task %s did not stop within %ss", task.get_name(), STOP_TIMEOUT_S)
        self.tasks = []
        self.resolver.batcher.fail_pending()
        if self.metrics_server is not None:
            await self.metrics_server.close()
            self.metrics_server = self.metrics_socket = None
        closing = [("invalidation", self.subscriber.close()), ("redis", self.redis.aclose()),
                   ("postgres", self.postgres.close())]  # fmt: skip
        if self.redis_reader is not self.redis:
            closing.append(("redis replica", self.redis_reader.aclose()))
        for name, close in closing:
            try:  # redis-py's disconnect can wait on a transport forever (redis/redis-py#3941)
                await asyncio.wait_for(close, STOP_TIMEOUT_S)
            except TimeoutError:
                log.error("closing the %s connections took over %ss; left to the process exit", name, STOP_TIMEOUT_S)
        self.geo.close()
        self.gate.close()

    def _domains_changed(self) -> None:
        self.handler.forget_hosts()

    async def healthz(self, _request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(self, _request: Request) -> Response:
        # Ready while links can be looked up: Redis, or else Postgres. A broker outage only
        # spools click events, and every edge shares Redis and the broker: failing on either
        # would take every edge out of its load balancer at once, for an outage that costs
        # no redirect. Those are named in the body (and in /metrics), still with 200.
        problems = []
        try:
            await asyncio.wait_for(self.redis.ping(), 1.0)
        except REDIS_ERRORS:
            if not await self.postgres.reachable():
                return PlainTextResponse("redis and postgres unreachable: no link can be looked up", 503)
            problems.append("redis unreachable (links read from postgres)")
        if self.redis_reader is not self.redis:
            try:
                replication = await asyncio.wait_for(self.redis_reader.info("replication"), 1.0)
            except REDIS_ERRORS:  # lookups fall back to Postgres, as with the primary gone
                if not await self.postgres.reachable():
                    return PlainTextResponse("redis replica and postgres unreachable: no link can be looked up", 503)
                problems.append("redis replica (H0P_EDGE_REDIS_URL) unreachable")
            else:
                if replication.get("role") == "slave" and replication.get("master_link_status") != "up":
                    # cut off from its primary it serves old records and relays no invalidation: this
                    # edge (only those reading that replica) must leave the load balancer
                    return PlainTextResponse("redis replica (H0P_EDGE_REDIS_URL) has lost its primary", 503)
        if self.producer.enabled and not await self.producer.broker_reachable():
            problems.append("broker unreachable (click events spooled)")
        return PlainTextResponse("ready" + "".join(f"\ndegraded: {p}" for p in problems))

    def render_metrics(self) -> bytes:
        self.metrics.spool_bytes.set(self.producer.spool.pending_bytes())
        return self.metrics.render()

    async def favicon(self, _request: Request) -> Response:
        # browsers ask for it on every first visit: not a slug, not an orphan click
        return Response(status_code=404, headers={"cache-control": "max-age=86400"})


def create_app(settings: Settings) -> EdgeApp:
    """The edge as an ASGI app whose lifespan owns its background tasks."""
    return EdgeApp(settings)


def uvicorn_config(settings: Settings, app: EdgeApp | None = None, port: int | None = None) -> uvicorn.Config:
    app = app if app is not None else create_app(settings)
    return uvicorn.Config(
        app,
        host=settings.bind_host,
        port=settings.redirect_port if port is None else port,
        loop="uvloop",
        http=protocol_for(app.handler),  # httptools, with cached links answered without an ASGI task
        lifespan="on",
        access_log=False,
        server_header=False,
        # The edge reads X-Forwarded-For itself, trusting only H0P_TRUSTED_PROXIES; uvicorn's own
        # middleware would trust 127.0.0.1 by default (and cost a call per request).
        proxy_headers=False,
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(DRAIN_TIMEOUT_S),
    )


def serve(settings: Settings, workers: int | None = None, worker: Worker | None = None) -> None:
    """Run the edge until SIGINT/SIGTERM, then drain click events and exit.

    ``workers`` (default ``H0P_EDGE_WORKERS``) above 1: supervise that many worker processes
    instead (``supervise``). ``worker``: this process is one of them (started by the supervisor).
    """
    count = settings.edge_workers if workers is None else workers
    if worker is None and count > 1:
        raise SystemExit(supervise(settings, count))
    config = uvicorn_config(settings)
    app = config.app
    assert isinstance(app, EdgeApp)
    sockets: list[socket.socket] | None = None
    if worker is not None:
        die_with_parent(worker)
        app.metrics_path = worker.metrics_path
        try:  # its own socket on the shared port: the kernel spreads connections over the workers'
            sockets = [reuseport_socket(settings.bind_host, settings.redirect_port)]
            app.bind_metrics()
        except OSError as exc:  # exit 1: the supervisor tries again (code 2 would stop the service)
            where = f"{settings.bind_host}:{settings.redirect_port} or {worker.metrics_path}"
            print(f"h0p redirect: worker {worker.index} cannot listen on {where} ({exc})", file=sys.stderr)
            raise SystemExit(1) from None
    try:  # before serving: a second edge on this host with the same port must say so and stop
        app.bind_metrics()
    except OSError as exc:
        _metrics_port_taken(settings, exc)
    # What exists now (modules, the app, the user-agent and geo readers: ~56,000 objects) lives as
    # long as the process: out of the collector's full passes, which walked it all on every one
    # (measured: 50-90 ms pauses under load, the edge's p99). Cached records are untracked (gc=False).
    gc.collect()
    gc.freeze()
    uvicorn.Server(config).run(sockets=sockets)


def supervise(settings: Settings, count: int) -> int:
    """Run ``count`` edge workers on the edge's port and their metrics, summed up, on the metrics port."""
    host, port = settings.bind_host, settings.redirect_port
    try:
        check_port_free(host, port)
    except OSError as exc:
        print(f"h0p redirect: cannot listen on {host}:{port} ({exc.strerror})", file=sys.stderr)
        return 1
    metrics_socket = None
    if settings.edge_metrics_port:
        try:
            metrics_socket = bind_socket(settings.edge_metrics_host, settings.edge_metrics_port)
        except OSError as exc:
            _metrics_port_taken(settings, exc)
    # A worker may take DRAIN_TIMEOUT_S to flush its events, then STOP_TIMEOUT_S to close its tasks.
    supervisor = Supervisor(
        "redirect", count, lambda w: worker_command("redirect", w), stop_timeout_s=DRAIN_TIMEOUT_S + 2 * STOP_TIMEOUT_S
    )
    if metrics_socket is not None:
        metrics = WorkerMetrics(
            lambda: {i: s.worker.metrics_path for i, s in enumerate(supervisor.slots)},
            lambda: {i: s.restarts for i, s in enumerate(supervisor.slots)},
        )
        supervisor.companions.append(MetricsServer(metrics.render, metrics_socket))
    return supervisor.run()


def _metrics_port_taken(settings: Settings, exc: OSError) -> None:
    print(
        f"h0p redirect: cannot serve metrics on {settings.edge_metrics_host}:{settings.edge_metrics_port}"
        f" ({exc.strerror}); give each edge process on a host its own H0P_EDGE_METRICS_PORT (0 turns it off)",
        file=sys.stderr,
    )
    raise SystemExit(2) from None
