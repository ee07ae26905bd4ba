"""``/metrics`` of a process without an HTTP server of its own (ingest, webhooks, the API's side port).

Each service supplies a prometheus-client ``Collector`` that reads its counters at scrape time;
this serves it on ``host:port`` from a thread of its own (never on a public port), until ``close``.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.registry import Collector


class MetricsServer:
    """Serves ``collector`` at ``http://host:port/metrics``; ``port`` 0 picks a free one (see ``.port``)."""

    def __init__(self, collector: Collector, host: str, port: int) -> None:
        registry = CollectorRegistry()
        registry.register(collector)
        self._server: WSGIServer
        self._thread: threading.Thread
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        self.port = int(self._server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
