"""A Redis key to a cache record: in-process LRU, then Redis, then Postgres (read-only).

Concurrent misses for one key share one lookup; concurrent misses for different keys share
one Redis round trip (an MGET of every key waiting while the previous one was in flight).
Reads may go to replicas (``H0P_EDGE_REDIS_URL``, ``H0P_READ_DATABASE_URL``); the refill of a
missed record is a write, so it goes to the primary Redis (a replica is read-only).
Redis down: Postgres answers (still correct), and Redis is retried after a short pause, so the
edge recovers by itself. Both down: a key not in the LRU raises ``Unavailable`` (503).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from redirect import record as rec
from redirect.cache import MISSING, Record, RecordCache
from redirect.metrics import EdgeMetrics
from redirect.misses import MissBudget

log = logging.getLogger("h0p.redirect")

LINK_PREFIX = rec.link_key("", "")[:-1]  # "h0p:l:"
DOMAIN_PREFIX = rec.domain_key("")
RETRY_AFTER_S = 1.0  # after a failure, skip a dependency this long instead of waiting on it per request
FILL_TTL_S = 86_400  # records the edge writes back to Redis expire; the API's own writes are authoritative
# A record read from a lagging Postgres replica may predate a change the API already pushed and
# whose negative marker has expired: refilled, it would be served all day. Kept this long instead.
REPLICA_FILL_TTL_S = 300
OUTAGE_TTL_S = 5.0  # LRU TTL for answers read while Redis (and its invalidations) is down
MAX_BATCH = 512
REDIS_ERRORS = (RedisError, OSError, TimeoutError)
POSTGRES_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
# DOMAIN_QUERY's condition, for every domain at once (redirect.domains)
VERIFIED_HOSTS_QUERY = "SELECT hostname FROM domains WHERE verified_at IS NOT NULL"


class Unavailable(Exception):
    """Neither Redis nor Postgres could answer for a key that is not cached."""


def decode_value(key: str, raw: bytes) -> Record | None | object:
    """A Redis value as a record, ``None`` (negative marker) or ``MISSING`` (unknown version)."""
    if raw == rec.NEGATIVE:
        return None
    decoded = rec.decode_link(raw) if key.startswith("h0p:l:") else rec.decode_domain(raw)
    return MISSING if decoded is None else decoded


RedisAnswer = bytes | None | BaseException  # a value, no value, or why Redis could not answer


class RedisBatcher:
    """Collects GETs from concurrent requests into MGETs, one in flight at a time.

    ``get_soon`` takes a callback instead of returning a future: the edge's protocol answers a
    cache miss from it without a task per request (``EdgeHandler.respond``).
    """

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._pending: list[tuple[str, Callable[[RedisAnswer], None]]] = []
        self._wake = asyncio.Event()

    def get_soon(self, key: str, callback: Callable[[RedisAnswer], None]) -> None:
        """Ask for ``key`` in the next MGET; ``callback`` gets the answer later, never before this returns."""
        self._pending.append((key, callback))
        self._wake.set()

    async def get(self, key: str) -> bytes | None:
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self.get_soon(key, partial(_settle, future))
        return await future

    async def run(self) -> None:
        """The loop owned by the app's lifespan."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                try:
                    values: list[Any] = await self.redis.mget([key for key, _ in batch])
                except REDIS_ERRORS as exc:
                    values = [exc] * len(batch)
                for (_, callback), value in zip(batch, values, strict=True):
                    try:
                        callback(value if isinstance(value, bytes | BaseException) else None)
                    except Exception:  # one request's bug must not stop every lookup
                        log.exception("a redis lookup callback failed")

    def fail_pending(self) -> None:
        pending, self._pending = self._pending, []
        for _, callback in pending:
            try:
                callback(ConnectionError("edge shutting down"))
            except Exception:
                log.exception("a redis lookup callback failed")


def _settle(future: asyncio.Future[bytes | None], answer: RedisAnswer) -> None:
    if future.done():
        return
    if isinstance(answer, BaseException):
        future.set_exception(answer)
    else:
        future.set_result(answer)


class PostgresReader:
    """The fallback: one indexed query per key, on a small pool that connects lazily."""

    def __init__(self, database_url: str, pool_size: int = 4) -> None:
        self.database_url = database_url
        self.pool_size = pool_size
        self._pool: Any = None

    async def _get_pool(self) -> Any:
        if self._pool is None:
            # min_size=0: creating the pool opens no connection, so the edge starts without Postgres
            self._pool = await asyncpg.create_pool(
                self.database_url, min_size=0, max_size=self.pool_size, timeout=2.0, command_timeout=2.0
            )
        return self._pool

    async def fetch(self, key: str) -> Record | None:
        pool = await self._get_pool()
        if key.startswith("h0p:l:"):
            domain, _, slug = key[len("h0p:l:") :].partition("/")
            row = await pool.fetchrow(rec.LINK_QUERY, domain, slug, timeout=2.0)
            return None if row is None else rec.link_record_from_row(row)
        row = await pool.fetchrow(rec.DOMAIN_QUERY, key[len("h0p:d:") :], timeout=2.0)
        return None if row is None else rec.domain_record_from_row(row)

    async def reachable(self) -> bool:
        """Whether Postgres answers a trivial query within a second."""
        try:
            pool = await self._get_pool()
            await pool.fetchval("SELECT 1", timeout=1.0)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        return True

    async def verified_hosts(self) -> list[str]:
        """Every verified custom domain's host name."""
        pool = await self._get_pool()
        rows = await pool.fetch(VERIFIED_HOSTS_QUERY, timeout=10.0)
        return [row["hostname"] for row in rows]

    async def close(self) -> None:
        if self._pool is not None:
            await asyncio.wait_for(self._pool.close(), 5.0)
            self._pool = None


class Resolver:
    """Looks records up through the three layers; the LRU itself is read by the caller first."""

    def __init__(
        self, cache: RecordCache, redis: aioredis.Redis, postgres: PostgresReader, metrics: EdgeMetrics,
        misses: MissBudget | None = None, reader: aioredis.Redis | None = None, fill_ttl_s: int = FILL_TTL_S,
    ) -> None:  # fmt: skip
        self.cache = cache
        self.misses = misses if misses is not None else MissBudget(0, 0)
        self.redis = redis  # the primary: refills are written here
        self.batcher = RedisBatcher(reader if reader is not None else redis)  # reads: a replica, if given
        self.fill_ttl_s = fill_ttl_s
        self.postgres = postgres
        self.metrics = metrics
        self.negative_ttl_s = cache.negative_ttl_s
        self._inflight: dict[str, asyncio.Future[Record | None]] = {}
        self._redis_down_until = 0.0
        self._postgres_down_until = 0.0

    @property
    def redis_ok(self) -> bool:
        return time.monotonic() >= self._redis_down_until

    async def lookup(self, key: str, *, redis_missed: bool = False, client_ip: str = "") -> Record | None:
        """The record for ``key`` (``None``: does not exist); raises ``Unavailable``.

        ``redis_missed``: the caller found the key in neither the LRU nor Redis; go on from Postgres.
        ``client_ip``: who asks, for the miss budget (``redirect.misses``).
        """
        if not redis_missed:
            value = self.cache.get(key)
            if value is not MISSING:
                self.metrics.cache_hit.inc()
                return value  # type: ignore[return-value]
            self.metrics.cache_miss.inc()
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._inflight[key] = future
            try:
                future.set_result(await self._load(key, ask_redis=not redis_missed, client_ip=client_ip))
            except asyncio.CancelledError:
                future.cancel()
                raise
            except Exception as exc:
                future.set_exception(exc)
                future.exception()  # mark retrieved: waiters may be none
            finally:
                del self._inflight[key]
        return await asyncio.shield(future)

    def from_redis(self, key: str, raw: bytes | None, generation: int) -> Record | None | object:
        """What Redis answered: a record or ``None`` (a negative marker), now in the LRU too.

        ``MISSING``: Redis had nothing usable (no value, or a record version this edge cannot read).
        ``generation`` is the LRU's, read before Redis was asked.
        """
        if raw is not None:
            value = decode_value(key, raw)
            if value is not MISSING:
                self.metrics.redis_hit.inc()
                self.cache.put(key, value, generation)  # type: ignore[arg-type]
                return value
        self.metrics.redis_miss.inc()
        return MISSING

    async def _load(self, key: str, *, ask_redis: bool = True, client_ip: str = "") -> Record | None:
        generation = self.cache.generation
        redis_answered = not ask_redis  # the caller asked Redis, which answered without a record
        if ask_redis and self.redis_ok:
            try:
                raw = await self.batcher.get(key)
            except REDIS_ERRORS as exc:
                self.redis_failed(exc)
            else:
                redis_answered = True
                value = self.from_redis(key, raw, generation)
                if value is not MISSING:
                    return value  # type: ignore[return-value]
        # a link's budget is its domain's; every domain record shares one
        domain = key[: key.find("/")] if key.startswith(LINK_PREFIX) else DOMAIN_PREFIX
        client = self.misses.take(domain, client_ip)
        if client is None:
            self.metrics.lookups_refused.inc()
            raise Unavailable(key)  # not a Postgres failure: the breaker stays as it is
        found = await self._from_postgres(key)
        if found is not None:
            self.misses.give_back(domain, client)
        if redis_answered:
            await self._fill(key, found)
            self.cache.put(key, found, generation)
        else:
            # Invalidations do not arrive while Redis is down: keep such answers briefly.
            self.cache.put(key, found, generation, ttl_s=min(self.cache.ttl_s, OUTAGE_TTL_S))
        return found

    async def _from_postgres(self, key: str) -> Record | None:
        if time.monotonic() < self._postgres_down_until:
            raise Unavailable(key)
        self.metrics.postgres_lookups.inc()
        try:
            return await self.postgres.fetch(key)
        except POSTGRES_ERRORS as exc:
            self.metrics.postgres_errors.inc()
            self._postgres_down_until = time.monotonic() + RETRY_AFTER_S
            log.warning("postgres fallback failed (%s); uncached links answer 503", type(exc).__name__)
            raise Unavailable(key) from exc

    async def _fill(self, key: str, found: Record | None) -> None:
        # NX: never overwrite what the API wrote meanwhile (its write is newer than our read).
        value = rec.NEGATIVE if found is None else rec.encode(found)
        ttl = max(1, round(self.negative_ttl_s)) if found is None else self.fill_ttl_s
        try:
            await self.redis.set(key, value, nx=True, ex=ttl)
        except REDIS_ERRORS as exc:
            self.redis_failed(exc)

    def redis_failed(self, exc: BaseException) -> None:
        self.metrics.redis_error.inc()
        if self.redis_ok:
            log.warning("redis lookup failed (%s); falling back to postgres", type(exc).__name__)
        self._redis_down_until = time.monotonic() + RETRY_AFTER_S
