"""Event ids: UUIDv7 text, unique, and sorted by time, then by emission order within a process."""

from __future__ import annotations

import time
import uuid

from redirect.events import new_event_id


def test_event_ids_are_uuid7_and_sort_in_emission_order_within_one_millisecond() -> None:
    now = time.time()
    ids = [new_event_id(now) for _ in range(1000)]
    assert ids == sorted(ids) and len(set(ids)) == 1000
    parsed = uuid.UUID(ids[0])
    assert str(parsed) == ids[0] and parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert parsed.int >> 80 == int(now * 1000)


def test_event_ids_sort_by_time_first() -> None:
    now = time.time()
    later = new_event_id(now + 0.002)
    assert new_event_id(now + 0.001) < later  # made afterwards, but a millisecond earlier
    assert new_event_id(now) < new_event_id(now + 0.001) < new_event_id(now + 60)
