"""In-process LRU of cache records with a TTL, negative entries, and a generation counter.

Keys are the Redis keys themselves (``h0p:l:<domain>/<slug>``, ``h0p:d:<domain>``), so an
invalidation message is dropped from the LRU as it is. ``None`` is a negative entry: the key
is known not to exist (kept ``negative_ttl_s``, short, so a new slug appears quickly even if
its invalidation message were lost).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Final

from redirect.record import DomainRecord, LinkRecord

Record = LinkRecord | DomainRecord

MISSING: Final = object()  # not in the cache (distinct from a cached "does not exist")


class RecordCache:
    """Bounded LRU; ``size`` 0 disables it (every lookup goes to Redis)."""

    __slots__ = ("_entries", "generation", "negative_ttl_s", "size", "ttl_s")

    def __init__(self, size: int, ttl_s: float, negative_ttl_s: float) -> None:
        self.size = size
        self.ttl_s = ttl_s
        self.negative_ttl_s = negative_ttl_s
        self._entries: OrderedDict[str, tuple[float, Record | None]] = OrderedDict()
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
        self._entries[key] = (time.monotonic() + ttl, value)
        self._entries.move_to_end(key)
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def invalidate(self, key: str) -> None:
        """Forget ``key`` (an invalidation message)."""
        self.generation += 1
        self._entries.pop(key, None)

    def clear(self) -> None:
        """Forget everything (the invalidation subscriber reconnected: messages may be lost)."""
        self.generation += 1
        self._entries.clear()
