"""Prometheus ``/metrics`` of an API process, on its own port (``H0P_API_METRICS_PORT``), never the API's.

What it reports is the read replica (``H0P_READ_DATABASE_URL``) that analytics queries run on:
whether it answers and how far behind the primary its replay is. The figures are read from the
replica at scrape time, on the API's event loop (the HTTP server is a thread of its own).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

import h0p_metrics

SCRAPE_TIMEOUT_S = 3.0

# Caught up (everything received is replayed) is 0 s, even when the primary has been idle for an
# hour: ``now() - pg_last_xact_replay_timestamp()`` alone would report that hour as lag.
LAG_QUERY = """
SELECT pg_is_in_recovery() AS standby,
       (SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming') AS streaming,
       CASE WHEN NOT pg_is_in_recovery() THEN 0
            WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)
       END::float8 AS lag_s,
       coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0)::float8 AS pending_bytes
"""


async def read_replica_state(pool: asyncpg.Pool) -> asyncpg.Record | None:
    """The replica's row of ``LAG_QUERY``, or ``None`` when it does not answer."""
    try:
        return await pool.fetchrow(LAG_QUERY, timeout=SCRAPE_TIMEOUT_S - 0.5)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return None


class ReplicaCollector(Collector):
    """The read replica's state, read at each scrape through the API's own read pool."""

    def __init__(self, pool: asyncpg.Pool | None, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "h0p_read_replica_configured", "1 if analytics read from H0P_READ_DATABASE_URL", value=self.pool is not None
        )
        if self.pool is None:
            return
        future = asyncio.run_coroutine_threadsafe(read_replica_state(self.pool), self.loop)
        try:
            row = future.result(timeout=SCRAPE_TIMEOUT_S)
        except TimeoutError:
            future.cancel()
            row = None
        yield GaugeMetricFamily(
            "h0p_read_replica_up", "1 if the read replica answered this scrape", value=row is not None
        )
        if row is None:
            return
        yield GaugeMetricFamily(
            "h0p_read_replica_standby", "1 if the read database is a standby (0: it is a primary)", value=row["standby"]
        )
        yield GaugeMetricFamily(
            "h0p_read_replica_streaming", "1 if the replica is receiving WAL from its primary", value=row["streaming"]
        )
        yield GaugeMetricFamily(
            "h0p_read_replica_lag_seconds", "Seconds since the last replayed transaction, 0 when caught up",
            value=row["lag_s"],
        )  # fmt: skip
        yield GaugeMetricFamily(
            "h0p_read_replica_replay_pending_bytes", "WAL received by the replica but not yet replayed",
            value=row["pending_bytes"],
        )  # fmt: skip


class MetricsServer(h0p_metrics.MetricsServer):
    """``/metrics`` of one API process on ``host:port`` (a thread of its own), until ``close``."""

    def __init__(self, read_pool: asyncpg.Pool | None, host: str, port: int) -> None:
        super().__init__(ReplicaCollector(read_pool, asyncio.get_running_loop()), host, port)
