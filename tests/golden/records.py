"""Golden cache records: one link and one domain, encoded by each record version (``tests/golden/*.msgpack``).

The writer side (``tests/api/test_record_contract.py``) checks that the API builds exactly these
bytes from these rows; the reader side (``tests/redirect/test_record_contract.py``) that the edge
decodes the current version and treats every other one as a cache miss. A new version adds its
files (``make_golden`` below writes the current version's) and keeps the old ones.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

HERE = Path(__file__).parent

# API-shaped input, as a client sends it (the API normalises and stores it as ``LINK_ROW["rules"]``)
RULES: list[dict[str, Any]] = [
    {
        "conditions": [{"type": "country", "value": ["fr", "BE"]}, {"type": "device", "value": "Mobile", "not": True}],
        "url": "https://example.fr/",
    },
    {
        "conditions": [{"type": "os", "value": "iOS"}, {"type": "query", "key": "ref", "value": ["a", "b"]}],
        "url": "https://apps.example.com/ios",
    },
    {
        "conditions": [
            {"type": "ip", "value": ["198.51.100.0/24", "2001:db8::/32"]},
            {"type": "before", "value": "2030-01-01T00:00:00Z"},
            {"type": "referrer", "value": "News.example"},
        ],
        "url": "https://example.com/net",
    },
]
STORED_RULES: list[dict[str, Any]] = [
    {
        "conditions": [{"type": "country", "value": ["FR", "BE"]}, {"type": "device", "value": "mobile", "not": True}],
        "url": "https://example.fr/",
    },
    RULES[1],
    {
        "conditions": [
            {"type": "ip", "value": ["198.51.100.0/24", "2001:db8::/32"]},
            {"type": "before", "value": "2030-01-01T00:00:00Z"},
            {"type": "referrer", "value": "news.example"},
        ],
        "url": "https://example.com/net",
    },
]
SPLIT = [{"url": "https://a.example.com/", "weight": 30}, {"url": "https://b.example.com/", "weight": 70}]
LINK_ROW: dict[str, Any] = {
    "id": "link_golden", "workspace_id": "ws_golden", "url": "https://example.com/landing", "status_code": 301,
    "rules": msgspec.json.encode(STORED_RULES).decode(), "split": msgspec.json.encode(SPLIT).decode(),
    "password_hash": None, "expires_at": datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC),
    "expired_url": "https://example.com/gone", "utm_source": "news", "utm_medium": None, "utm_campaign": "spring",
    "utm_term": None, "utm_content": None, "forward_query": True, "og_title": "Title", "og_description": None,
    "og_image": None,
}  # fmt: skip
DOMAIN_ROW: dict[str, Any] = {
    "id": "dom_golden", "workspace_id": "ws_golden", "root_url": "https://example.com/", "not_found_url": None,
    "expired_url": "https://example.com/expired",
}  # fmt: skip


def golden(kind: str, version: int) -> bytes:
    """The stored bytes of the ``kind`` ("link" or "domain") record of ``version``."""
    return (HERE / f"{kind}_record_v{version}.msgpack").read_bytes()


def make_golden() -> None:  # pragma: no cover - run by hand when RECORD_VERSION changes
    from redirect.record import RECORD_VERSION, domain_record_from_row, encode, link_record_from_row

    (HERE / f"link_record_v{RECORD_VERSION}.msgpack").write_bytes(encode(link_record_from_row(LINK_ROW)))
    (HERE / f"domain_record_v{RECORD_VERSION}.msgpack").write_bytes(encode(domain_record_from_row(DOMAIN_ROW)))


if __name__ == "__main__":
    make_golden()
