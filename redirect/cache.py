"""In-process LRU of cache records with a TTL, negative entries, and a generation counter.

Keys are the Redis keys themselves (``h0p:l:<domain>/<slug>``, ``h0p:d:<domain>``), so an
invalidation message is dropped from the LRU as it is. ``None`` is a negative entry: the key
is known not to exist (kept ``negative_ttl_s``, short, so a new slug appears quickly even if
its invalidation message were lost).

Bounded twice: by entries (``H0P_CACHE_SIZE``) and by bytes (``H0P_CACHE_MAX_BYTES``), since one
link's rule set may be a thousand times another's. An entry costs its encoded record's size plus
``ENTRY_OVERHEAD`` (measured: a decoded record holds about 1.5-5 times its encoded size, the
small ones the most, so the overhead stands for the Python objects around it).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Final

from redirect.record import DomainRecord, LinkRecord, encode

Record = LinkRecord | DomainRecord

MISSING: Final = object()  # not in the cache (distinct from a cached "does not exist")
ENTRY_OVERHEAD: Final = 512  # bytes counted per entry beyond the encoded record: key, tuple, objects


class RecordCache:
    """Bounded LRU (entries and bytes); ``size`` 0 disables it (every lookup goes to Redis)."""

    __slots__ = ("_entries", "bytes", "generation", "max_bytes", "negative_ttl_s", "size", "ttl_s")

    def __init__(self, size: int, ttl_s: float, negative_ttl_s: float, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.size = size
        self.ttl_s = ttl_s
        self.negative_ttl_s = negative_ttl_s
        self.max_bytes = max_bytes
        self.bytes = 0  # the cost of the entries held (see ENTRY_OVERHEAD)
        self._entries: OrderedDict[str, tuple[float, Record | None, int]] = OrderedDict()
        # Bumped by every invalidation: a lookup that started before one must not store its
        # (possibly stale) answer after it.
        self.generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Record | None | object:
        """The cached record, ``None`` (known absent) or ``MISSING``."""
        entry = self._entries.get(key)
        if entry is None:
            return MISSING
        if entry[0] < time.monotonic():
            del self._entries[key]
            self.bytes -= entry[2]
            return MISSING
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: str, value: Record | None, generation: int | None = None, ttl_s: float | None = None) -> None:
        """Store ``value``; skipped when an invalidation happened since ``generation`` was read."""
        if self.size <= 0 or (generation is not None and generation != self.generation):
            return
        ttl = self.ttl_s if value is not None else self.negative_ttl_s
        if ttl_s is not None:
            ttl = min(ttl, ttl_s)
        if ttl <= 0:
            return
        # measured once per fill, never per click: the encoded size is what Redis handed over
        cost = ENTRY_OVERHEAD + (len(encode(value)) if value is not None else 0)
        if cost > self.max_bytes:
            return  # bigger than the whole budget: served from Redis every time instead
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old[2]
        self._entries[key] = (time.monotonic() + ttl, value, cost)
        self.bytes += cost
        while len(self._entries) > self.size or self.bytes > self.max_bytes:
            self.bytes -= self._entries.popitem(last=False)[1][2]

    def invalidate(self, key: str) -> None:
        """Forget ``key`` (an invalidation message)."""
        self.generation += 1
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry[2]

    def clear(self) -> None:
        """Forget everything (the invalidation subscriber reconnected: messages may be lost)."""
        self.generation += 1
        self._entries.clear()
        self.bytes = 0
