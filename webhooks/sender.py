"""One delivery attempt, and the delivery log it is recorded in (the SQL of ``webhook_deliveries``).

An attempt signs the stored body with every secret still signing, POSTs it, reads at most
64 KiB of the answer, and reports what happened; ``record`` then, in one transaction per batch
of results, appends the attempt, schedules the next one (retry schedule with jitter) or
settles the delivery, and disables endpoints that answered ``410 Gone`` or have failed for
longer than ``H0P_WEBHOOK_DISABLE_AFTER_S``. Used by ``h0p webhooks`` and by the API's
``test`` and ``retry`` (which send at once).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import aiohttp
import asyncpg
import msgspec
from yarl import URL

from h0p_settings import Settings
from webhooks.outbound import MAX_RESPONSE_BYTES, check_url_host
from webhooks.signing import signature_header

RESPONSE_EXCERPT_BYTES = 1024
GONE = 410
_encoder = msgspec.json.Encoder()


class Claimed(NamedTuple):
    """A delivery leased for one attempt, with what is needed to send it."""

    delivery_id: str
    webhook_id: str
    url: str
    secrets: list[str]
    body: bytes


class AttemptResult(NamedTuple):
    delivery_id: str
    webhook_id: str
    at: datetime
    status: int | None  # HTTP status; None when no answer came (network error, timeout, refused)
    error: str | None
    duration_ms: int
    response: str  # first KiB of the answer's body

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class _Envelope(msgspec.Struct):
    type: str
    timestamp: str
    data: msgspec.Raw


def envelope(event_type: str, occurred_at: datetime, data: bytes) -> bytes:
    """The body every receiver gets: ``{"type", "timestamp" (RFC 3339), "data"}``."""
    stamp = occurred_at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return _encoder.encode(_Envelope(event_type, stamp, msgspec.Raw(data)))


async def attempt(session: aiohttp.ClientSession, d: Claimed, settings: Settings) -> AttemptResult:
    """POST the delivery once; never raises for what the endpoint or the network did."""
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": d.delivery_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(d.secrets, d.delivery_id, timestamp, d.body),
    }
    at = datetime.now(UTC)
    started = time.perf_counter()
    status: int | None = None
    error: str | None = None
    excerpt = b""
    try:
        async with asyncio.timeout(settings.webhook_timeout_s):
            check_url_host(URL(d.url).raw_host or "", settings)
            async with session.post(d.url, data=d.body, headers=headers, allow_redirects=False) as response:
                status = response.status
                received = bytearray()
                while len(received) < MAX_RESPONSE_BYTES:  # the rest is never read; the connection is dropped
                    chunk = await response.content.read(MAX_RESPONSE_BYTES - len(received))
                    if not chunk:
                        break
                    received += chunk
                excerpt = bytes(received[:RESPONSE_EXCERPT_BYTES])
    except TimeoutError:
        status, error = None, f"timed out after {settings.webhook_timeout_s:g} s"
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        if status is None:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    duration_ms = int((time.perf_counter() - started) * 1000)
    return AttemptResult(
        d.delivery_id, d.webhook_id, at, status, error, duration_ms, excerpt.decode("utf-8", "replace")
    )


def _attempt_json(r: AttemptResult) -> str:
    return _encoder.encode(
        {"at": r.at, "status": r.status, "error": r.error, "durationMs": r.duration_ms, "response": r.response}
    ).decode()


# One statement for a batch of results. After the n-th failed attempt the next one is due after
# schedule[n] seconds (1-based, jittered ±20% so endpoints coming back are not hit in lockstep);
# past the schedule, or for a 410, or when the endpoint is disabled, the delivery has failed.
RECORD_SQL = """
UPDATE webhook_deliveries d SET
    attempts = d.attempts || jsonb_build_array(r.attempt::jsonb),
    attempt_count = d.attempt_count + 1,
    leased_until = NULL,
    state = CASE WHEN r.ok THEN 'delivered'
                 WHEN r.gone OR w.disabled OR d.attempt_count + 1 > cardinality($5::float8[]) THEN 'failed'
                 ELSE 'pending' END,
    next_attempt_at = CASE WHEN r.ok OR r.gone OR w.disabled OR d.attempt_count + 1 > cardinality($5::float8[])
                           THEN NULL
                           ELSE now() + make_interval(
                               secs => ($5::float8[])[d.attempt_count + 1] * (0.8 + random() * 0.4))
                      END
FROM unnest($1::text[], $2::text[], $3::boolean[], $4::boolean[]) AS r(id, attempt, ok, gone), webhooks w
WHERE d.id = r.id AND w.id = d.webhook_id
RETURNING d.state
"""

# Per endpoint, from its last result in the batch: a success ends a failing streak, a failure
# starts one (or continues it).
STREAK_SQL = """
UPDATE webhooks w SET failing_since = CASE WHEN s.ok THEN NULL ELSE coalesce(w.failing_since, s.at) END
FROM unnest($1::text[], $2::boolean[], $3::timestamptz[]) AS s(id, ok, at)
WHERE w.id = s.id
"""

DISABLE_SQL = """
UPDATE webhooks SET disabled = true, disabled_reason = $2, disabled_at = now(), updated_at = now()
WHERE id = ANY($1::text[]) AND NOT disabled
RETURNING id
"""

# Disabling stops the endpoint's pending deliveries at once (none is left to be retried).
STOP_PENDING_SQL = """
UPDATE webhook_deliveries SET state = 'failed', next_attempt_at = NULL
WHERE webhook_id = ANY($1::text[]) AND state = 'pending' AND (leased_until IS NULL OR leased_until < now())
"""


async def disable_webhooks(conn: asyncpg.Connection, webhook_ids: Sequence[str], reason: str) -> list[str]:
    """Disable endpoints and fail their pending deliveries (caller's transaction); returns those disabled now."""
    done = [r["id"] for r in await conn.fetch(DISABLE_SQL, list(webhook_ids), reason)]
    if done:
        await conn.execute(STOP_PENDING_SQL, done)
    return done


class Recorded(NamedTuple):
    retrying: int  # failed attempts that will be tried again
    disabled: list[str]  # endpoints disabled by these results


async def record(conn: asyncpg.Connection, results: Sequence[AttemptResult], settings: Settings) -> Recorded:
    """Record a batch of attempts in one transaction."""
    if not results:
        return Recorded(0, [])
    last: dict[str, AttemptResult] = {}
    for r in sorted(results, key=lambda r: r.at):
        last[r.webhook_id] = r
    gone = sorted({r.webhook_id for r in results if r.status == GONE})
    async with conn.transaction():
        disabled = await disable_webhooks(conn, gone, "the endpoint answered 410 Gone") if gone else []
        states = await conn.fetch(
            RECORD_SQL,
            [r.delivery_id for r in results],
            [_attempt_json(r) for r in results],
            [r.ok for r in results],
            [r.status == GONE for r in results],
            list(settings.webhook_retry_schedule_s),
        )
        ids = sorted(last)
        await conn.execute(STREAK_SQL, ids, [last[i].ok for i in ids], [last[i].at for i in ids])
        stale = await conn.fetch(
            "SELECT id FROM webhooks WHERE id = ANY($1::text[]) AND NOT disabled"
            " AND failing_since < now() - make_interval(secs => $2)",
            [i for i in ids if not last[i].ok],
            settings.webhook_disable_after_s,
        )
        if stale:
            days = settings.webhook_disable_after_s / 86400
            disabled += await disable_webhooks(
                conn, [r["id"] for r in stale], f"every attempt failed for {days:g} days"
            )
    retrying = sum(1 for s in states if s["state"] == "pending")
    return Recorded(retrying, disabled)


LEASE_ONE_SQL = """
UPDATE webhook_deliveries d SET leased_until = now() + make_interval(secs => $2), state = 'pending'
FROM webhooks w
WHERE d.id = $1 AND w.id = d.webhook_id AND (d.leased_until IS NULL OR d.leased_until < now())
RETURNING d.id, d.webhook_id, w.url, d.body,
    ARRAY[w.secret] || CASE WHEN w.previous_secret_until > now() THEN ARRAY[w.previous_secret] ELSE '{}' END AS secrets
"""


# A delivery its creator leased on insert (the API's ping): nobody else can have it.
LEASED_ONE_SQL = """
SELECT d.id, d.webhook_id, w.url, d.body,
    ARRAY[w.secret] || CASE WHEN w.previous_secret_until > now() THEN ARRAY[w.previous_secret] ELSE '{}' END AS secrets
FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
WHERE d.id = $1
"""


def lease_seconds(settings: Settings) -> float:
    """How long a claimed delivery is kept from other senders: longer than any attempt can take."""
    return settings.webhook_timeout_s * 2 + 5


def claimed_from_row(row: Any) -> Claimed:
    return Claimed(row["id"], row["webhook_id"], row["url"], list(row["secrets"]), row["body"].encode())


async def send_now(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, delivery_id: str, settings: Settings, leased: bool = False
) -> bool:
    """Attempt one delivery at once (API: test, retry); False if another sender has it in flight.

    ``leased``: the caller leased it already (inserted with ``leased_until``).
    """
    if leased:
        row = await pool.fetchrow(LEASED_ONE_SQL, delivery_id)
    else:
        row = await pool.fetchrow(LEASE_ONE_SQL, delivery_id, lease_seconds(settings))
    if row is None:
        return False
    result = await attempt(session, claimed_from_row(row), settings)
    async with pool.acquire() as conn:
        await record(conn, [result], settings)
    return True
