"""The edge's in-process cache is bounded by bytes as well as entries: big rule sets cannot fill memory."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from h0p_settings import Settings, SettingsError, load_settings
from redirect.cache import ENTRY_OVERHEAD, MISSING, RecordCache
from redirect.record import LinkRecord, encode, link_record_from_row
from tests.redirect.conftest import edge_client, edge_settings


def big_record(n: int) -> LinkRecord:
    """A record with about 10 KB of encoded rules (200-character city values)."""
    rules = [
        {"conditions": [{"type": "city", "value": [f"{n}-{r}-{k}-" + "c" * 180 for k in range(10)]}],
         "url": f"https://example.com/{r}"}
        for r in range(5)
    ]  # fmt: skip
    row = {
        "id": f"link_{n}", "workspace_id": "ws", "url": "https://example.com/", "status_code": 302,
        "rules": msgspec.json.encode(rules).decode(), "split": "[]", "password_hash": None, "expires_at": None,
        "expired_url": None, "forward_query": True, "og_title": None, "og_description": None, "og_image": None,
        **dict.fromkeys(("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")),
    }  # fmt: skip
    return link_record_from_row(row)


def test_large_records_are_evicted_by_bytes_before_the_entry_bound() -> None:
    records = [big_record(n) for n in range(10)]
    each = len(encode(records[0])) + ENTRY_OVERHEAD
    assert each > 9_000
    cache = RecordCache(size=1000, ttl_s=60, negative_ttl_s=5, max_bytes=4 * each + each // 2)
    for n, record in enumerate(records):
        cache.put(f"k{n}", record)
    assert len(cache) == 4 and cache.bytes <= cache.max_bytes
    assert [cache.get(f"k{n}") is MISSING for n in range(10)] == [True] * 6 + [False] * 4  # least recent went first
    cache.put("small", None)  # a negative entry costs its overhead only: it fits without evicting another
    assert len(cache) == 5


def test_a_record_bigger_than_the_whole_budget_is_not_cached() -> None:
    record = big_record(0)
    cache = RecordCache(size=1000, ttl_s=60, negative_ttl_s=5, max_bytes=1000)
    cache.put("k", record)
    assert cache.get("k") is MISSING and cache.bytes == 0


def test_invalidation_expiry_and_replacement_give_the_bytes_back() -> None:
    cache = RecordCache(size=1000, ttl_s=60, negative_ttl_s=0.0001, max_bytes=10**6)
    cache.put("a", big_record(1))
    cache.put("a", big_record(2))  # replaced, not counted twice
    assert cache.bytes == len(encode(big_record(2))) + ENTRY_OVERHEAD
    cache.invalidate("a")
    assert cache.bytes == 0
    cache.put("b", big_record(3))
    cache.clear()
    assert cache.bytes == 0 and len(cache) == 0


def test_the_byte_bound_is_a_setting() -> None:
    assert load_settings({}).cache_max_bytes == 256 * 1024 * 1024
    assert load_settings({"H0P_CACHE_MAX_BYTES": "1048576"}).cache_max_bytes == 1048576
    with pytest.raises(SettingsError, match="H0P_CACHE_MAX_BYTES"):
        load_settings({"H0P_CACHE_MAX_BYTES": "lots"})


async def test_the_edge_cache_uses_the_setting(settings: Settings, tmp_path: Path) -> None:
    async with edge_client(edge_settings(settings, tmp_path, cache_max_bytes=123_456)) as (app, _):
        assert app.cache.max_bytes == 123_456
