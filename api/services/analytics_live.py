"""Live clicks of a workspace as Server-Sent Events (``GET /analytics/live``).

Ingest appends each committed batch's clicks to the workspace's capped Redis Stream while the
workspace is watched (ingest/live.py). A live stream marks the workspace watched, reads the stream
from its last entry (or from ``Last-Event-ID``: what a reconnect missed and the stream still
holds), keeps the clicks that pass the query's filters and sends them as one ``clicks`` event
per entry, whose id is the entry's. Open streams per workspace are bounded across API processes
by a Redis sorted set of heartbeats (a process that died stops counting after ``STALE_S``).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api.errors import RateLimited, field_error
from api.services.analytics_query import AnalyticsQuery
from h0p_settings import Settings
from ingest.live import FIELDS, WATCH_TTL_S, stream_key, watch_key

BLOCK_MS = 15_000  # a comment line at least this often keeps proxies from closing an idle stream
STALE_S = 90  # a stream whose process stopped refreshing its heartbeat stops counting after this
HEARTBEAT_S = 30
RETRY_AFTER_S = 5
_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
_INDEX = {name: i for i, name in enumerate(FIELDS)}


def _key(name: str) -> str:
    if name == "event_id":
        return "id"
    if name == "ts":
        return "timestamp"
    if name.startswith("utm_"):
        return name
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


KEYS = tuple(_key(f) for f in FIELDS)


def _conns_key(settings: Settings, workspace_id: str) -> str:
    return f"h0p:{settings.redis_db}:live-conns:{workspace_id}"


def check_last_event_id(value: str | None) -> str | None:
    """A Last-Event-ID this API sent (a stream entry id), or VALIDATION_ERROR (path lastEventId)."""
    if value is None or value == "":
        return None
    if not _ID.match(value):
        raise field_error("lastEventId", "not an event id this stream sent (the `id:` of an event)")
    return value


def matcher(q: AnalyticsQuery, tagged: frozenset[str] | None, foldered: frozenset[str] | None) -> Callable[..., bool]:
    """A test of one published click (a FIELDS-ordered list) against the query's filters."""
    checks: list[tuple[int, str]] = []
    for column, value in q.filters.items():
        if column not in ("tag_id", "folder_id"):  # those two: the link ids given
            checks.append((_INDEX[column], value))
    bot_i, qr_i, link_i = _INDEX["bot"], _INDEX["qr"], _INDEX["link_id"]

    def match(click: list[Any]) -> bool:
        if not q.include_bots and click[bot_i]:
            return False
        if q.qr is not None and click[qr_i] != q.qr:
            return False
        if tagged is not None and click[link_i] not in tagged:
            return False
        if foldered is not None and click[link_i] not in foldered:
            return False
        return all(click[i] == v for i, v in checks)

    return match


class LiveStream:
    """One open live stream: its slot among the workspace's, its own Redis connection, its filters."""

    def __init__(self, settings: Settings, workspace_id: str, q: AnalyticsQuery, match: Callable[..., bool]) -> None:
        self.settings = settings
        self.workspace_id = workspace_id
        self.match = match
        self.slot = uuid.uuid4().hex
        # its own connection: a blocking XREAD outlasts the shared client's socket timeout
        self.redis = aioredis.Redis.from_url(settings.redis_url, socket_timeout=BLOCK_MS / 1000 + 10)
        self._conns = _conns_key(settings, workspace_id)
        self._stream = stream_key(settings.redis_db, workspace_id)
        self._watch = watch_key(settings.redis_db, workspace_id)

    @classmethod
    async def open(
        cls, settings: Settings, workspace_id: str, q: AnalyticsQuery, links: Callable[[str, str], Any]
    ) -> LiveStream:
        """Take a slot (RATE_LIMITED when the workspace's streams are all open) and watch the workspace.

        ``links(column, value)`` resolves a tag_id/folder_id filter to the link ids (awaitable).
        """
        tagged = frozenset(await links("tag_id", q.filters["tag_id"])) if "tag_id" in q.filters else None
        foldered = frozenset(await links("folder_id", q.filters["folder_id"])) if "folder_id" in q.filters else None
        stream = cls(settings, workspace_id, q, matcher(q, tagged, foldered))
        try:
            now = time.time()
            async with stream.redis.pipeline(transaction=True) as pipe:
                pipe.zremrangebyscore(stream._conns, "-inf", now - STALE_S)
                pipe.zadd(stream._conns, {stream.slot: now})
                pipe.zcard(stream._conns)
                pipe.expire(stream._conns, STALE_S * 2)
                pipe.set(stream._watch, "1", ex=WATCH_TTL_S)
                *_, count, _, _ = await pipe.execute()
            if count > settings.live_max_streams:
                await stream.redis.zrem(stream._conns, stream.slot)
                raise RateLimited(
                    RETRY_AFTER_S,
                    f"this workspace has {settings.live_max_streams} live streams open (H0P_LIVE_MAX_STREAMS)",
                )
        except BaseException:
            await stream.redis.aclose()
            raise
        return stream

    async def events(self, last_event_id: str | None) -> AsyncIterator[bytes]:
        """SSE bytes: ``retry``, then a ``clicks`` event per stream entry with matching clicks, pings between."""
        yield b"retry: 2000\n\n"
        if last_event_id is None:
            newest: Any = await self.redis.xrevrange(self._stream, "+", "-", count=1)
            last = newest[0][0].decode() if newest else "0-0"
        else:
            last = last_event_id
        refreshed = time.monotonic()
        while True:
            if time.monotonic() - refreshed > HEARTBEAT_S:
                await self._heartbeat()
                refreshed = time.monotonic()
            answer: Any = await self.redis.xread({self._stream: last}, count=100, block=BLOCK_MS)
            if not answer:
                yield b": ping\n\n"
                continue
            entry_id: bytes
            fields: dict[bytes, bytes]
            for entry_id, fields in answer[0][1]:
                last = entry_id.decode()
                clicks = [c for c in msgspec.json.decode(fields[b"c"]) if self.match(c)]
                if clicks:
                    data = msgspec.json.encode([self._out(c) for c in clicks])
                    yield b"id: " + entry_id + b"\nevent: clicks\ndata: " + data + b"\n\n"

    @staticmethod
    def _out(click: list[Any]) -> dict[str, Any]:
        return {k: (None if v == "" else v) for k, v in zip(KEYS, click, strict=True)}

    async def _heartbeat(self) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self._conns, {self.slot: time.time()})
            pipe.expire(self._conns, STALE_S * 2)
            pipe.set(self._watch, "1", ex=WATCH_TTL_S)
            await pipe.execute()

    async def close(self) -> None:
        """Give the slot back; the workspace stays watched for WATCH_TTL_S (a reconnect loses nothing)."""
        try:
            await self.redis.zrem(self._conns, self.slot)
        except (RedisError, OSError):
            pass  # the slot goes stale by itself
        finally:
            await self.redis.aclose()
