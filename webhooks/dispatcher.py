"""The ``h0p webhooks`` process: fan events out, send due deliveries, record attempts, prune the log.

Any number of these run at once. A delivery is sent by one process at a time: it is claimed
with ``FOR UPDATE SKIP LOCKED`` and leased (``leased_until``) for longer than an attempt can
take; a process that dies mid-delivery leaves the lease to expire and another one sends it
again, with the same ``webhook-id``. Each endpoint has at most ``H0P_WEBHOOK_ENDPOINT_CONCURRENCY``
deliveries in flight per process, and claims are made per endpoint, so a slow receiver holds
only its own slots and never delays the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass

import aiohttp
import asyncpg

from api.services.context import ServiceContext, close_context, open_context
from h0p_settings import Settings
from webhooks import sender
from webhooks.fanout import fan_out
from webhooks.outbound import delivery_session
from webhooks.sender import AttemptResult, Claimed

log = logging.getLogger("h0p.webhooks")

# Per endpoint, the due deliveries it has room for (its free slots), oldest first, skipping
# those another process holds; then lease them.
CLAIM_SQL = """
WITH busy AS (SELECT * FROM unnest($1::text[], $2::int[]) AS b(webhook_id, n)),
claimed AS (
    SELECT d.id FROM webhooks w
    LEFT JOIN busy b ON b.webhook_id = w.id
    CROSS JOIN LATERAL (
        SELECT d.id FROM webhook_deliveries d
        WHERE d.webhook_id = w.id AND d.state = 'pending' AND d.next_attempt_at <= now()
          AND (d.leased_until IS NULL OR d.leased_until < now())
        ORDER BY d.next_attempt_at
        LIMIT greatest(0, $3 - coalesce(b.n, 0))
        FOR UPDATE OF d SKIP LOCKED
    ) d
    WHERE NOT w.disabled
    LIMIT $4
)
UPDATE webhook_deliveries d SET leased_until = now() + make_interval(secs => $5)
FROM claimed, webhooks w
WHERE d.id = claimed.id AND w.id = d.webhook_id
RETURNING d.id, d.webhook_id, w.url, d.body,
    ARRAY[w.secret] || CASE WHEN w.previous_secret_until > now() THEN ARRAY[w.previous_secret] ELSE '{}' END AS secrets
"""

PRUNE_SQL = """
DELETE FROM webhook_deliveries WHERE id IN (
    SELECT id FROM webhook_deliveries WHERE created_at < now() - make_interval(secs => $1) LIMIT 10000
)
"""

BACKLOG_SQL = """
SELECT count(*) AS pending, extract(epoch FROM now() - min(created_at)) AS oldest_s
FROM webhook_deliveries WHERE state = 'pending'
"""

_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)
_IDLE_S = 0.1  # how often an idle process looks for new events and due deliveries
_RECORD_EVERY_S = 0.05
_RECORD_BATCH = 500
_PRUNE_EVERY_S = 60.0
_MAINTENANCE_EVERY_S = 5.0  # backlog gauges sampled this often
_BACKOFF_MAX_S = 5.0
_CLAIM_COALESCE_S = 0.005


@dataclass(slots=True)
class DispatchStats:
    """Counters since start (served as Prometheus metrics; tests and the benchmark read them)."""

    sent: int = 0  # attempts that got a 2xx
    failed: int = 0  # attempts that did not
    retried: int = 0  # failed attempts that will be tried again
    events: int = 0  # outbox events fanned out
    pending: int = 0  # backlog, sampled
    oldest_pending_s: float = 0.0
    disabled: int = 0
    pruned: int = 0


class Dispatcher:
    """One delivery process. ``run(stop)`` until ``stop`` is set; in-flight attempts finish and are recorded."""

    def __init__(self, ctx: ServiceContext, session: aiohttp.ClientSession, stats: DispatchStats | None = None) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.session = session
        self.stats = DispatchStats() if stats is None else stats
        self._inflight: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._results: list[AttemptResult] = []
        self._wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        loops = [
            asyncio.create_task(self._fan_out_loop(stop), name="h0p-webhooks-fanout"),
            asyncio.create_task(self._record_loop(stop), name="h0p-webhooks-record"),
            asyncio.create_task(self._maintenance_loop(stop), name="h0p-webhooks-maintenance"),
        ]
        try:
            await self._send_loop(stop)
        finally:
            if self._tasks:  # attempts in flight end within the timeout
                await asyncio.wait(self._tasks)
            for task in loops:
                task.cancel()
            for task in loops:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self._flush()

    async def _send_loop(self, stop: asyncio.Event) -> None:
        delay = _IDLE_S
        while not stop.is_set():
            # cleared before the claim: an attempt that ends during the query wakes the wait below
            self._wake.clear()
            free = self.settings.webhook_concurrency - len(self._tasks)
            claimed: list[Claimed] = []
            if free > 0:
                try:
                    claimed = await self._claim(free)
                    delay = _IDLE_S
                except _DB_ERRORS as exc:
                    log.warning("claiming deliveries failed (%s: %s); retrying", type(exc).__name__, exc)
                    delay = min(delay * 2, _BACKOFF_MAX_S)
                except Exception:  # a bug must not end the loop silently: log it, slow down, go on
                    log.exception("claiming deliveries failed")
                    delay = _BACKOFF_MAX_S
            for d in claimed:
                self._inflight[d.webhook_id] += 1
                task = asyncio.create_task(self._send(d))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if len(claimed) < free:  # all due work taken (or every endpoint at its cap): wait for news
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                # let the attempts finishing about now free their slots too: one claim for many
                await asyncio.sleep(_CLAIM_COALESCE_S)

    async def _claim(self, free: int) -> list[Claimed]:
        busy = [(w, n) for w, n in self._inflight.items() if n > 0]
        rows = await self.ctx.pool.fetch(
            CLAIM_SQL,
            [w for w, _ in busy],
            [n for _, n in busy],
            self.settings.webhook_endpoint_concurrency,
            free,
            sender.lease_seconds(self.settings),
        )
        return [sender.claimed_from_row(r) for r in rows]

    async def _send(self, d: Claimed) -> None:
        try:
            result = await sender.attempt(self.session, d, self.settings)
        finally:
            self._inflight[d.webhook_id] -= 1
            if self._inflight[d.webhook_id] <= 0:
                del self._inflight[d.webhook_id]
        self._results.append(result)
        if result.ok:
            self.stats.sent += 1
        else:
            self.stats.failed += 1
        self._wake.set()

    async def _record_loop(self, stop: asyncio.Event) -> None:
        while True:
            await asyncio.sleep(_RECORD_EVERY_S)
            await self._flush()

    async def _flush(self) -> None:
        while self._results:
            batch, self._results = self._results[:_RECORD_BATCH], self._results[_RECORD_BATCH:]
            try:
                async with self.ctx.pool.acquire() as conn:
                    outcome = await sender.record(conn, batch, self.settings)
            except _DB_ERRORS as exc:
                # kept and recorded later; if this process dies first, the lease expires and the
                # delivery is sent again (at least once)
                log.warning("recording attempts failed (%s: %s); retrying", type(exc).__name__, exc)
                self._results[:0] = batch
                return
            except Exception:
                # not retried (it would fail again): the leases expire and the deliveries are sent again
                log.exception("recording %d attempts failed", len(batch))
                continue
            self.stats.retried += outcome.retrying
            if outcome.disabled:
                self.stats.disabled += len(outcome.disabled)
                log.warning("disabled webhooks %s", ", ".join(outcome.disabled))

    async def _fan_out_loop(self, stop: asyncio.Event) -> None:
        delay = _IDLE_S
        while not stop.is_set():
            try:
                async with self.ctx.pool.acquire() as conn:
                    taken = await fan_out(self.ctx, conn)
                delay = _IDLE_S
            except _DB_ERRORS as exc:
                log.warning("fan-out failed (%s: %s); retrying in %.1f s", type(exc).__name__, exc, delay)
                taken, delay = 0, min(delay * 2, _BACKOFF_MAX_S)
            except Exception:  # the events stay in the outbox (rolled back) for the next pass
                log.exception("fan-out failed")
                taken, delay = 0, _BACKOFF_MAX_S
            if taken:
                self.stats.events += taken
                self._wake.set()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)

    async def _maintenance_loop(self, stop: asyncio.Event) -> None:
        last_prune = 0.0
        every_s = min(_MAINTENANCE_EVERY_S, self.settings.webhook_retention_s / 2)
        while not stop.is_set():
            try:
                row = await self.ctx.pool.fetchrow(BACKLOG_SQL)
                self.stats.pending = row["pending"]
                self.stats.oldest_pending_s = float(row["oldest_s"] or 0.0)
                if time.monotonic() - last_prune > min(_PRUNE_EVERY_S, self.settings.webhook_retention_s / 2):
                    last_prune = time.monotonic()
                    status = await self.ctx.pool.execute(PRUNE_SQL, self.settings.webhook_retention_s)
                    self.stats.pruned += int(status.split()[-1])
            except _DB_ERRORS as exc:
                log.warning("webhook maintenance failed (%s: %s)", type(exc).__name__, exc)
            except Exception:
                log.exception("webhook maintenance failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)


async def _serve(settings: Settings) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stats = DispatchStats()
    metrics = None
    if settings.webhook_metrics_port:
        from webhooks.metrics import MetricsServer

        try:
            metrics = MetricsServer(stats, settings.bind_host, settings.webhook_metrics_port)
        except OSError as exc:
            print(
                f"h0p webhooks: cannot serve metrics on {settings.bind_host}:{settings.webhook_metrics_port}"
                f" ({exc.strerror}); give each process on a host its own H0P_WEBHOOK_METRICS_PORT (0 turns it off)",
                file=sys.stderr,
            )
            raise SystemExit(2) from None
    ctx = await open_context(settings, pool_size=8)
    try:
        async with delivery_session(settings, settings.webhook_concurrency) as session:
            log.info("webhooks delivery process started")
            await Dispatcher(ctx, session, stats).run(stop)
    finally:
        if metrics is not None:
            metrics.close()
        await close_context(ctx)
        log.info("webhooks stopped: %d sent, %d failed attempts", stats.sent, stats.failed)


def serve(settings: Settings) -> None:
    """Run one delivery process until SIGINT/SIGTERM; attempts in flight finish and are recorded."""
    import uvloop

    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(settings))
