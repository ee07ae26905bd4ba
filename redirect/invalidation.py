"""Keeps the in-process cache coherent: every message on the invalidation channel is a Redis key
to forget. On every (re)connect the whole cache is cleared, since messages were missed, and the
verified domains are read again; a domain key heard joins them (``redirect.domains``)."""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from redirect.cache import RecordCache
from redirect.domains import VerifiedDomains
from redirect.metrics import EdgeMetrics
from redirect.record import domain_key
from redirect.resolve import REDIS_ERRORS

log = logging.getLogger("h0p.redirect")

DOMAIN_PREFIX = domain_key("")
POLL_S = 1.0
MAX_BACKOFF_S = 5.0


class InvalidationSubscriber:
    """Subscribes to ``channel``, drops keys from ``cache``; reconnects by itself."""

    def __init__(
        self, redis_url: str, channel: str, cache: RecordCache, metrics: EdgeMetrics, domains: VerifiedDomains
    ) -> None:
        self.channel = channel
        self.cache = cache
        self.domains = domains
        self.metrics = metrics
        self.connected = asyncio.Event()
        # No silent retries inside redis-py: a reconnect it made on its own would hide that
        # messages were lost, and the cache would keep stale records.
        self._redis = aioredis.Redis.from_url(
            redis_url,
            socket_connect_timeout=2.0,
            socket_timeout=10.0,
            health_check_interval=5,
            retry=Retry(NoBackoff(), 0),
        )

    async def run(self) -> None:
        """The loop owned by the app's lifespan; returns only when cancelled."""
        backoff = 0.2
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.channel)
                    self.cache.clear()
                    self.domains.stale()
                    self.connected.set()
                    if backoff > 0.2:
                        log.info("invalidation channel reconnected; in-process cache cleared")
                    backoff = 0.2
                    while True:
                        message = await pubsub.get_message(timeout=POLL_S)
                        _raise_if_cancelled()
                        if message is not None and message.get("type") == "message":
                            data = message["data"]
                            key = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
                            self.cache.invalidate(key)
                            if key.startswith(DOMAIN_PREFIX):
                                self.domains.heard(key[len(DOMAIN_PREFIX) :])
                            self.metrics.invalidations.inc()
            except REDIS_ERRORS as exc:
                _raise_if_cancelled()
                if self.connected.is_set():
                    log.warning("invalidation channel lost (%s); reconnecting", type(exc).__name__)
                self.connected.clear()
                # The cache is kept while Redis is away (cached links keep resolving even if
                # Postgres is down too) and cleared on reconnect, above.
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def close(self) -> None:
        await self._redis.aclose()


def _raise_if_cancelled() -> None:
    """Re-raise a cancellation that redis-py swallowed inside ``get_message``.

    Seen once in CI: after stop() cancelled the subscriber, it went on polling every second and
    stop() never returned. A cancelled task stays ``cancelling()`` whatever the library did.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
