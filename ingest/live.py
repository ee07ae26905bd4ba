"""Live clicks: stored clicks published per workspace on a capped Redis Stream (``GET /analytics/live``).

After a batch is committed, ingest appends one stream entry per workspace that someone watches
(a ``watch`` key the live route keeps alive while a stream is open, and a while after it closes,
so that a reconnect with ``Last-Event-ID`` finds what happened meanwhile). An entry holds the
batch's clicks of that workspace as compact JSON arrays in ``FIELDS`` order; its Redis id is the
SSE event id. Cost for unwatched workspaces: one MGET per batch. Redis down: the live view misses
clicks (logged), storage is unaffected.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from h0p_settings import Settings
from ingest.enrich.row import COLUMNS

log = logging.getLogger("h0p.ingest")

# The columns of a live click, in the order of each published array (the route names them).
FIELDS = (
    "event_id", "ts", "link_id", "domain", "slug", "country", "region", "city", "continent", "device", "browser",
    "os", "referer", "referer_url", "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "bot", "qr",
)  # fmt: skip
_PICK = itemgetter(*(COLUMNS.index(c) for c in FIELDS))
_WS = COLUMNS.index("workspace_id")
# seconds a workspace stays watched after its last live stream went away: a reconnect within it loses nothing
WATCH_TTL_S = 300


def stream_key(redis_db: int, workspace_id: str) -> str:
    return f"h0p:{redis_db}:live:{workspace_id}"


def watch_key(redis_db: int, workspace_id: str) -> str:
    return f"h0p:{redis_db}:live-watch:{workspace_id}"


def _encode_default(value: Any) -> Any:
    return str(value)  # asyncpg's UUID (a uuid.UUID subclass msgspec does not take as one)


_encoder = msgspec.json.Encoder(enc_hook=_encode_default)


class LivePublisher:
    """Appends stored clicks to the live streams of watched workspaces; never raises into ingest."""

    def __init__(self, redis_url: str, redis_db: int, maxlen: int) -> None:
        self._redis = aioredis.Redis.from_url(redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._db = redis_db
        self._maxlen = maxlen
        self._warned_at = -1e9

    @classmethod
    def from_settings(cls, settings: Settings) -> LivePublisher:
        return cls(settings.redis_url, settings.redis_db, settings.live_stream_length)

    async def publish(self, rows: Sequence[tuple[Any, ...]]) -> int:
        """Publish ``rows`` (just committed); returns how many clicks went out."""
        by_ws: dict[str, list[tuple[Any, ...]]] = {}
        for r in rows:
            ws = r[_WS]
            if ws is not None:
                by_ws.setdefault(ws, []).append(r)
        if not by_ws:
            return 0
        names = list(by_ws)
        try:
            watched = await self._redis.mget([watch_key(self._db, ws) for ws in names])
            sent = 0
            async with self._redis.pipeline(transaction=False) as pipe:
                for ws, flag in zip(names, watched, strict=True):
                    if flag is None:
                        continue
                    clicks = [_PICK(r) for r in by_ws[ws]]
                    pipe.xadd(stream_key(self._db, ws), {"c": _encoder.encode(clicks)}, maxlen=self._maxlen)
                    pipe.expire(stream_key(self._db, ws), WATCH_TTL_S * 2)
                    sent += len(clicks)
                if sent:
                    await pipe.execute()
            return sent
        except (RedisError, OSError) as exc:
            now = time.monotonic()
            if now - self._warned_at > 60:  # once a minute while Redis is away, not once a batch
                self._warned_at = now
                log.warning("live clicks not published (%s: %s)", type(exc).__name__, exc)
            return 0

    async def close(self) -> None:
        await self._redis.aclose()
