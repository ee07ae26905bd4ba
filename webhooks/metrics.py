"""Prometheus metrics of a ``h0p webhooks`` process, served on their own port."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

import h0p_metrics

if TYPE_CHECKING:
    from webhooks.dispatcher import DispatchStats

_COUNTERS = (
    ("h0p_webhook_deliveries_sent", "Delivery attempts answered with a 2xx", "sent"),
    ("h0p_webhook_deliveries_failed", "Delivery attempts that failed (non-2xx, timeout, network, refused)", "failed"),
    ("h0p_webhook_deliveries_retried", "Failed attempts scheduled to be tried again", "retried"),
    ("h0p_webhook_events", "Outbox events fanned out to deliveries", "events"),
    ("h0p_webhook_endpoints_disabled", "Endpoints disabled (410 Gone, or failing too long)", "disabled"),
    ("h0p_webhook_deliveries_pruned", "Deliveries removed from the log after the retention time", "pruned"),
)
_GAUGES = (
    ("h0p_webhook_deliveries_pending", "Deliveries waiting to be sent (all processes)", "pending"),
    ("h0p_webhook_oldest_pending_seconds", "Age of the oldest pending delivery", "oldest_pending_s"),
)


class WebhookCollector(Collector):
    """Reads the dispatcher's plain counters at scrape time."""

    def __init__(self, stats: DispatchStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        for name, documentation, field in _COUNTERS:
            yield CounterMetricFamily(name, documentation, value=getattr(self.stats, field))
        for name, documentation, field in _GAUGES:
            yield GaugeMetricFamily(name, documentation, value=getattr(self.stats, field))


class MetricsServer(h0p_metrics.MetricsServer):
    """``/metrics`` of one delivery process on ``host:port`` (a thread of its own), until ``close``."""

    def __init__(self, stats: DispatchStats, host: str, port: int) -> None:
        super().__init__(WebhookCollector(stats), host, port)
