"""The ingest process: consume ``clicks``, enrich, store exactly once, then commit offsets.

Order per batch: decode (bad events to the dead-letter topic) → read link UTM/domain owners →
enrich → one Postgres transaction (COPY, rollup increments, counters from the rows inserted) →
commit Kafka offsets. Every few seconds, on a connection of its own, the rollup increments are
folded. A crash anywhere before the offset commit replays the batch; the unique key
(event_id, ts) turns the replay into a no-op, so the table holds each event once. The next
batch is enriched while the previous one is written (two connections: lookups and writes).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg
import msgspec
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from h0p_settings import Settings
from ingest.dlq import DeadLetters
from ingest.enrich.row import Enricher, InvalidEvent, check_event, decode_event
from ingest.links import LinkDirectory
from ingest.live import LivePublisher
from ingest.metrics import MetricsServer
from ingest.store import TRANSIENT_ERRORS, ClickStore
from ingest.webhook_clicks import ClickSubscriptions
from redirect.events import ClickEvent, UnknownVersion

log = logging.getLogger("h0p.ingest")

AfterWrite = Callable[[int], Awaitable[None]]

_T = TypeVar("_T")

_BACKOFF_FIRST_S = 0.1
_YIELD_EVERY = 500  # events enriched between two chances for the in-flight write to progress
_BACKOFF_MAX_S = 5.0
_FOLD_EVERY_S = 2.0  # rollup increments folded this often; analytics counts them either way
_PAIRS_EVERY_S = 30.0  # closed periods aggregated into click_pairs this often (analytics reads raw rows meanwhile)


@dataclass(slots=True)
class IngestStats:
    """Counters since start (exported in logs; tests and benchmarks read them)."""

    received: int = 0
    stored: int = 0  # new rows
    duplicates: int = 0  # redelivered events already in the table
    dead_lettered: int = 0
    batches: int = 0
    db_retries: int = 0
    commit_failures: int = 0


@dataclass(slots=True)
class _Pending:
    record: ConsumerRecord[bytes, bytes]
    event: ClickEvent
    event_id: uuid.UUID
    row: tuple[Any, ...] | None = None


class IngestConsumer:
    """One member of the ingest consumer group. ``run()`` until ``stop`` is set; see ``running_consumer``."""

    def __init__(
        self, settings: Settings, *, after_write: AfterWrite | None = None, stats: IngestStats | None = None
    ) -> None:
        self.settings = settings
        self.stats = IngestStats() if stats is None else stats
        self._after_write = after_write  # tests: runs between the DB commit and the offset commit
        self._links = LinkDirectory()
        self._enricher = Enricher(settings, self._links)
        self._store = ClickStore(settings.database_url, live=LivePublisher.from_settings(settings))
        self._subscriptions = ClickSubscriptions()  # workspaces that want link.clicked webhooks
        self._dead = DeadLetters(settings)
        self._consumer: AIOKafkaConsumer = AIOKafkaConsumer(
            settings.kafka_topic,
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=settings.kafka_group,
            client_id="h0p-ingest",
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # a new group must not skip clicks already in the topic
            max_poll_records=settings.ingest_batch_size,
            # a batch in a few fetches rather than dozens (defaults: 1 MB per partition)
            max_partition_fetch_bytes=8 * 1024 * 1024,
            request_timeout_ms=30_000,
            session_timeout_ms=settings.ingest_session_timeout_ms,
            heartbeat_interval_ms=max(300, settings.ingest_session_timeout_ms // 4),
            # a Postgres outage holds a batch while we retry; allow that long before being evicted
            max_poll_interval_ms=600_000,
        )

    async def start(self) -> None:
        self._enricher.warm()
        await self._dead.start()
        await self._consumer.start()

    async def close(self) -> None:
        """Leave the group and close connections (offsets of unfinished batches are not committed)."""
        with contextlib.suppress(KafkaError, OSError):
            await self._consumer.stop()
        with contextlib.suppress(KafkaError, OSError):
            await self._dead.stop()
        await self._store.close()
        self._enricher.close()

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; the batches in hand are finished and committed before returning.

        Two batches overlap: while Postgres writes batch N (a task), this loop fetches and enriches
        batch N+1, so Python and Postgres work at the same time. Batch N+1 is written only after
        batch N's offsets are committed: commits stay in order, each after its own DB commit.
        """
        in_flight: asyncio.Task[None] | None = None
        # the rollup increments folded every few seconds; closed periods aggregated into click_pairs
        # (first at start) on a connection of their own: neither batch writes nor folds wait for a build
        folding = asyncio.create_task(
            self._periodically(stop, _FOLD_EVERY_S, self._store.fold, "folding rollup increments", first=False),
            name="h0p-ingest-fold",
        )
        pairing = asyncio.create_task(
            self._periodically(
                stop, _PAIRS_EVERY_S, self._store.aggregate_pairs, "aggregating click pairs", first=True
            ),
            name="h0p-ingest-pairs",
        )
        try:
            while not stop.is_set():
                records, offsets = await self._next_batch(stop)
                if not records:
                    continue
                batch = await self._prepare(records, stop)
                if in_flight is not None:
                    task, in_flight = in_flight, None
                    await task
                in_flight = asyncio.create_task(self._finish(offsets, batch, stop), name="h0p-ingest-write")
        finally:
            folding.cancel()  # a fold cut short rolls back: its increments wait for the next one
            pairing.cancel()  # likewise a build: its periods are built next time
            if in_flight is not None:
                await in_flight
            for task in (folding, pairing):
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _next_batch(
        self, stop: asyncio.Event
    ) -> tuple[list[ConsumerRecord[bytes, bytes]], dict[TopicPartition, int]]:
        """The records of the next batch, and per partition the offset to commit once it is stored.

        By size (ingest_batch_size) or by time (ingest_linger_ms after the first record).
        """
        size = self.settings.ingest_batch_size
        linger = self.settings.ingest_linger_ms / 1000
        records: list[ConsumerRecord[bytes, bytes]] = []
        offsets: dict[TopicPartition, int] = {}
        deadline: float | None = None
        while len(records) < size and not stop.is_set():
            wait = linger if deadline is None else deadline - time.monotonic()
            if wait <= 0:
                break
            got = await self._consumer.getmany(timeout_ms=max(1, int(wait * 1000)), max_records=size - len(records))
            for tp, batch in got.items():
                if batch:
                    records.extend(batch)
                    offsets[tp] = batch[-1].offset + 1  # a partition's records come in offset order
            if records and deadline is None:
                deadline = time.monotonic() + linger
        return records, offsets

    async def _prepare(self, records: list[ConsumerRecord[bytes, bytes]], stop: asyncio.Event) -> list[_Pending]:
        """Decode (bad events to the dead-letter topic), read link UTM and domain owners, enrich."""
        self.stats.received += len(records)
        pending: list[_Pending] = []
        now = time.time()
        for rec in records:
            try:
                if rec.value is None:
                    raise InvalidEvent("empty message")
                event = decode_event(rec.value)
                event_id = check_event(event, now)
            except (msgspec.DecodeError, msgspec.ValidationError, UnknownVersion, InvalidEvent) as exc:
                await self._dead_letter(rec, f"{type(exc).__name__}: {exc}")
                continue
            pending.append(_Pending(rec, event, event_id))
        if not pending:
            return pending
        await self._with_retry(lambda: self._load_links(pending), stop, self._store.drop_lookup_connection)
        row = self._enricher.row
        for i, p in enumerate(pending):
            p.row = row(p.event, p.event_id)
            if i % _YIELD_EVERY == _YIELD_EVERY - 1:
                await asyncio.sleep(0)  # let the write of the previous batch move on meanwhile
        return pending

    async def _load_links(self, pending: list[_Pending]) -> None:
        conn = await self._store.lookup_connection()
        await self._subscriptions.refresh(conn)
        await self._links.load(
            conn,
            (p.event.link_id for p in pending if p.event.link_id is not None),
            (p.event.domain for p in pending if p.event.workspace_id is None),
        )

    async def _finish(self, offsets: dict[TopicPartition, int], pending: list[_Pending], stop: asyncio.Event) -> None:
        """Store the batch (one transaction), then commit its offsets."""
        if pending:
            inserted = await self._with_retry(
                lambda: self._write_isolating_bad_rows(pending), stop, self._store.drop_connection
            )
            self.stats.stored += inserted
            self.stats.duplicates += len(pending) - inserted
        self.stats.batches += 1
        if self._after_write is not None:
            await self._after_write(len(pending))
        await self._commit(offsets)

    async def _periodically(
        self, stop: asyncio.Event, every_s: float, work: Callable[[], Awaitable[object]], what: str, *, first: bool
    ) -> None:
        """Run ``work`` every ``every_s`` (at once too if ``first``) until ``stop``; a failure is logged
        and its work left for the next run."""
        wait = not first
        while not stop.is_set():
            if wait:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), every_s)
            wait = True
            try:
                await work()
            except TRANSIENT_ERRORS as exc:
                log.warning("%s failed (%s); retrying later", what, type(exc).__name__)
            except asyncpg.PostgresError as exc:
                log.warning("%s failed (%s: %s); retrying later", what, type(exc).__name__, exc)

    async def _with_retry(
        self, work: Callable[[], Awaitable[_T]], stop: asyncio.Event, drop_connection: Callable[[], None]
    ) -> _T:
        """Run until it works: Postgres down means pause here (no new fetches), never drop."""
        delay = _BACKOFF_FIRST_S
        while True:
            try:
                return await work()
            except TRANSIENT_ERRORS as exc:
                drop_connection()
                self.stats.db_retries += 1
                log.warning("Postgres unavailable (%s: %s); retrying in %.1fs", type(exc).__name__, exc, delay)
                # the outage may outlast a shutdown request: the batch is not committed, so it
                # is redelivered to the next consumer; stop waiting only after a last attempt
                if stop.is_set() and delay >= _BACKOFF_MAX_S:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX_S)

    async def _write_isolating_bad_rows(self, pending: list[_Pending]) -> int:
        # A row Postgres rejects (data error) would block the partition forever: split the
        # batch until the bad event is alone, dead-letter it, store the rest.
        try:
            return await self._store.write([p.row for p in pending if p.row is not None], self._subscriptions)
        except asyncpg.DataError as exc:  # a value the driver cannot encode (before TRANSIENT: a subclass)
            error: Exception = exc
        except TRANSIENT_ERRORS:
            raise
        except asyncpg.PostgresError as exc:  # any other refusal by the server is about the data
            error = exc
        if len(pending) == 1:
            await self._dead_letter(pending[0].record, f"rejected by Postgres: {type(error).__name__}: {error}")
            return 0
        half = len(pending) // 2
        first = await self._write_isolating_bad_rows(pending[:half])
        return first + await self._write_isolating_bad_rows(pending[half:])

    async def _dead_letter(self, rec: ConsumerRecord[bytes, bytes], reason: str) -> None:
        await self._dead.send(rec.value, rec.key, reason, f"{rec.topic}/{rec.partition}/{rec.offset}")
        self.stats.dead_lettered += 1

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:
            # partitions moved to another member during the batch: it re-reads from the last
            # committed offset and the unique key makes that harmless
            self.stats.commit_failures += 1
            log.warning("offset commit failed (%s); the batch will be redelivered and deduplicated", exc)


@contextlib.asynccontextmanager
async def running_consumer(
    settings: Settings, *, after_write: AfterWrite | None = None
) -> AsyncIterator[IngestConsumer]:
    """Run a consumer in this event loop for the body of the ``async with`` (tests, e2e, embedding).

    On exit the batch in hand is finished and committed, then the consumer leaves the group.
    """
    consumer = IngestConsumer(settings, after_write=after_write)
    await consumer.start()
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop), name="h0p-ingest")
    try:
        yield consumer
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, timeout=60.0)
        finally:
            await consumer.close()


async def _serve(settings: Settings) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stats = IngestStats()
    metrics = None
    if settings.ingest_metrics_port:
        # before the consumer exists: a second process on this host with the same port must stop
        # here with a clear message, not after it took partitions from the first
        try:
            metrics = MetricsServer(stats, settings.bind_host, settings.ingest_metrics_port)
        except OSError as exc:
            print(
                f"h0p ingest: cannot serve metrics on {settings.bind_host}:{settings.ingest_metrics_port}"
                f" ({exc.strerror}); give each ingest process on a host its own H0P_INGEST_METRICS_PORT"
                " (0 turns it off)",
                file=sys.stderr,
            )
            raise SystemExit(2) from None
        log.info("ingest metrics on http://%s:%d/metrics", settings.bind_host, metrics.port)
    db = urlsplit(settings.database_url)  # host and database only: the URL may carry a password
    log.info(
        "ingest starting: Kafka %s, topic %s, group %s; PostgreSQL %s:%s%s; batches of up to %d events or %d ms",
        settings.kafka_bootstrap, settings.kafka_topic, settings.kafka_group, db.hostname, db.port or 5432,
        db.path, settings.ingest_batch_size, settings.ingest_linger_ms,
    )  # fmt: skip
    consumer = IngestConsumer(settings, stats=stats)
    await consumer.start()
    log.info("ingest consuming %s as group %s", settings.kafka_topic, settings.kafka_group)
    try:
        await consumer.run(stop)
    finally:
        if metrics is not None:
            metrics.close()
        await consumer.close()
        s = consumer.stats
        log.info(
            "ingest stopped: %d received, %d stored, %d duplicates, %d dead-lettered",
            s.received, s.stored, s.duplicates, s.dead_lettered,
        )  # fmt: skip


def serve(settings: Settings) -> None:
    """Run one ingest process until SIGINT/SIGTERM; then finish the batch in hand, commit, exit."""
    import uvloop

    # A batch allocates ~100 objects per event, nearly all acyclic, while the caches (user agents,
    # addresses) hold hundreds of thousands: with the default thresholds the collector rescans
    # them many times per batch (measured: 8x slower rollup aggregation). Collect rarely instead,
    # and leave what exists at start-up (modules, the geo reader) out of the scans.
    gc.collect()
    gc.freeze()
    gc.set_threshold(200_000, 50, 1000)
    # `h0p ingest` arrives here without logging set up: without this its INFO lines went nowhere.
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(settings))


if __name__ == "__main__":
    from h0p_settings import load_settings_or_exit

    serve(load_settings_or_exit())
