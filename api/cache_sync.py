"""Write-through of committed changes to the edge's Redis records, from a durable outbox.

A write adds ``cache_outbox`` rows in its own transaction (``enqueue_link`` /
``enqueue_domain``); after commit it calls ``push``. ``push`` takes a per-key advisory lock,
deletes the outbox rows of those keys, *then* reads the current state from Postgres (so the
state read includes every change whose row it deleted), writes the record (or ``NEGATIVE``
for a link that is gone, which also replaces a stale negative entry) and PUBLISHes the key
on the invalidation channel; all inside the transaction, so if Redis fails the rows come
back and ``run_outbox_loop`` (owned by the API's lifespan) retries until it lands.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import asyncpg
import redis.exceptions

from api.services.context import ServiceContext
from redirect.record import (
    DOMAIN_QUERY,
    LINK_QUERY,
    NEGATIVE,
    domain_key,
    domain_record_from_row,
    encode,
    link_key,
    link_record_from_row,
)

log = logging.getLogger("h0p.api.cache_sync")

RECORD_TTL_S = 7 * 24 * 3600  # the edge refills a record from Postgres on a miss, so expiry is only hygiene
_LOCK_CLASS = 0x6830  # advisory-lock namespace of cache keys
RETRY_AFTER_S = 2.0  # the loop leaves fresh rows to the request that wrote them


async def enqueue_link(conn: asyncpg.Connection, domain: str, slug: str) -> int:
    """Record, inside the caller's transaction, that the link at (domain, slug) changed."""
    outbox_id: int = await conn.fetchval(
        "INSERT INTO cache_outbox (kind, domain, slug) VALUES ('link', $1, $2) RETURNING id", domain, slug
    )
    return outbox_id


async def enqueue_domain(conn: asyncpg.Connection, domain: str) -> int:
    """Record, inside the caller's transaction, that the custom domain changed."""
    outbox_id: int = await conn.fetchval(
        "INSERT INTO cache_outbox (kind, domain) VALUES ('domain', $1) RETURNING id", domain
    )
    return outbox_id


def _redis_key(kind: str, domain: str, slug: str) -> str:
    return link_key(domain, slug) if kind == "link" else domain_key(domain)


async def _push_in_transaction(ctx: ServiceContext, conn: asyncpg.Connection, ids: Sequence[int]) -> int:
    entries = await conn.fetch(
        "SELECT DISTINCT kind, domain, slug FROM cache_outbox WHERE id = ANY($1::bigint[])", list(ids)
    )
    if not entries:
        return 0  # another pusher already landed them (with a state at least as new)
    keys = sorted({_redis_key(e["kind"], e["domain"], e["slug"]) for e in entries})
    # Losing this commit in a crash only brings the rows back, to be pushed again (idempotent):
    # no need to wait for its WAL flush.
    await conn.execute("SET LOCAL synchronous_commit = off")
    # One pusher per key at a time, in a fixed order (no deadlock): the last SET is the newest state.
    await conn.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext(k)) FROM unnest($2::text[]) AS k ORDER BY k", _LOCK_CLASS, keys
    )
    await conn.execute(
        "DELETE FROM cache_outbox o USING unnest($1::text[], $2::text[], $3::text[]) AS e(kind, domain, slug)"
        " WHERE o.kind = e.kind AND o.domain = e.domain AND o.slug = e.slug",
        [e["kind"] for e in entries],
        [e["domain"] for e in entries],
        [e["slug"] for e in entries],
    )
    negative_ttl_ms = max(1000, int(ctx.settings.negative_ttl_s * 1000))
    pipe = ctx.redis.pipeline(transaction=False)
    for e in entries:
        key = _redis_key(e["kind"], e["domain"], e["slug"])
        if e["kind"] == "link":
            row = await conn.fetchrow(LINK_QUERY, e["domain"], e["slug"])
            value = encode(link_record_from_row(row)) if row is not None else None
        else:
            row = await conn.fetchrow(DOMAIN_QUERY, e["domain"])
            value = encode(domain_record_from_row(row)) if row is not None else None
        if value is None:
            pipe.set(key, NEGATIVE, px=negative_ttl_ms)
        else:
            pipe.set(key, value, ex=RECORD_TTL_S)
    for key in keys:
        pipe.publish(ctx.settings.invalidation_channel, key)
    await pipe.execute()  # raises on a Redis failure: the transaction rolls back, the rows stay
    return len(entries)


async def push(ctx: ServiceContext, ids: Sequence[int], conn: asyncpg.Connection | None = None) -> bool:
    """Land the outbox rows ``ids`` in Redis after their commit; False if left for the retry loop.

    ``conn``: a connection the caller holds outside any transaction (saves a pool round trip).
    """
    if not ids:
        return True
    try:
        if conn is not None:
            async with conn.transaction():
                await _push_in_transaction(ctx, conn, ids)
        else:
            async with ctx.pool.acquire() as own, own.transaction():
                await _push_in_transaction(ctx, own, ids)
    except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
        log.warning("cache write-through deferred to the outbox loop: %s", type(exc).__name__)
        return False
    return True


async def push_pending(ctx: ServiceContext, older_than_s: float = RETRY_AFTER_S, batch: int = 500) -> int:
    """Push outbox rows older than ``older_than_s``; returns how many keys landed. Raises on failure."""
    landed = 0
    while True:
        ids = [
            r["id"]
            for r in await ctx.pool.fetch(
                "SELECT id FROM cache_outbox WHERE enqueued_at <= now() - make_interval(secs => $1)"
                " ORDER BY id LIMIT $2",
                older_than_s,
                batch,
            )
        ]
        if not ids:
            return landed
        async with ctx.pool.acquire() as conn, conn.transaction():
            landed += await _push_in_transaction(ctx, conn, ids)
        if len(ids) < batch:
            return landed


async def run_outbox_loop(ctx: ServiceContext, stop: asyncio.Event, interval_s: float = 1.0) -> None:
    """Retry what did not land, every ``interval_s``, until ``stop`` is set (then one last pass)."""
    failing = False
    while True:
        stopping = stop.is_set()
        try:
            landed = await push_pending(ctx, older_than_s=0.0 if stopping else RETRY_AFTER_S)
            if failing or landed:
                log.info("cache outbox: %d keys landed", landed)
            failing = False
        except (redis.exceptions.RedisError, OSError, TimeoutError, asyncpg.PostgresError) as exc:
            if not failing:
                log.warning("cache outbox retry failed (%s); retrying every %.1fs", type(exc).__name__, interval_s)
            failing = True
        if stopping:
            return
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
        except TimeoutError:
            pass
