"""Prometheus metrics of an ingest process: its counters, served on their own port."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

import h0p_metrics

if TYPE_CHECKING:  # the consumer imports this module to serve its counters
    from ingest.consumer import IngestStats

# (metric name, help, IngestStats field)
_COUNTERS = (
    ("h0p_ingest_events_received", "Click events read from the topic", "received"),
    ("h0p_ingest_events_stored", "Click events stored as new rows", "stored"),
    ("h0p_ingest_events_duplicate", "Redelivered click events already stored (skipped)", "duplicates"),
    ("h0p_ingest_events_dead_lettered", "Click events sent to the dead-letter topic", "dead_lettered"),
    ("h0p_ingest_batches", "Batches written to Postgres", "batches"),
    ("h0p_ingest_db_retries", "Batch writes retried after a Postgres fault", "db_retries"),
    ("h0p_ingest_commit_failures", "Offset commits refused (the batch is redelivered and deduplicated)",
     "commit_failures"),
)  # fmt: skip


class IngestCollector(Collector):
    """Reads the consumer's plain counters at scrape time (nothing is counted twice)."""

    def __init__(self, stats: IngestStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[CounterMetricFamily]:
        for name, documentation, field in _COUNTERS:
            yield CounterMetricFamily(name, documentation, value=getattr(self.stats, field))


class MetricsServer(h0p_metrics.MetricsServer):
    """``/metrics`` of one ingest process on ``host:port`` (a thread of its own), until ``close``."""

    def __init__(self, stats: IngestStats, host: str, port: int) -> None:
        super().__init__(IngestCollector(stats), host, port)
