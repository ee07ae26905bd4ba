"""Cache record contract: what the edge needs to answer a short link without Postgres.

Written by ``api`` (after commit) into Redis, read by ``redirect``. A leaf module: stdlib and
msgspec only. The version is the first array element; an unknown version decodes to ``None``
and the edge treats it as a cache miss. Secrets never enter a record: only a password *hash*.

Both sides build records from Postgres rows with the same query and function below
(``LINK_QUERY`` + ``link_record_from_row``), so the API's write-through and the edge's
fallback cannot drift apart. After writing a key the API publishes the key itself
(``h0p:l:<domain>/<slug>`` or ``h0p:d:<domain>``) on ``Settings.invalidation_channel``;
every edge process drops that key from its in-process cache.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec

RECORD_VERSION = 1

# Redis values that are not records.
NEGATIVE = b"-"  # "no such link" (short TTL): stops a flood of random slugs reaching Postgres


# gc=False on every record type: records are immutable values that cannot form reference cycles,
# and the edge caches ~100,000 of them; tracked, each full collection walked them all (measured:
# 64-88 ms pauses under load, the whole p99 of the edge bench).


class Condition(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True, gc=False):
    """One test of a routing rule; ``negate`` inverts it (query ``absent`` = negated ``present``)."""

    type: str  # device os browser country city language query referrer ip before after
    value: str | tuple[str, ...] | None = None  # one value or any-of; ISO time for before/after
    key: str | None = None  # the query parameter name for type "query"
    negate: bool = False


class Rule(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """All conditions must hold; the first matching rule's url wins."""

    conditions: tuple[Condition, ...]
    url: str


class SplitTarget(msgspec.Struct, frozen=True, array_like=True, gc=False):
    url: str
    weight: int  # weights of a split sum to 100


class LinkRecord(msgspec.Struct, frozen=True, array_like=True, omit_defaults=False, gc=False):
    """Everything the edge evaluates for one (domain, slug)."""

    v: int
    link_id: str
    workspace_id: str
    url: str
    status_code: int = 302
    rules: tuple[Rule, ...] = ()
    split: tuple[SplitTarget, ...] = ()
    password_hash: str | None = None  # argon2 hash; the edge verifies, never stores the secret
    password_version: str = ""  # changes with the password, so old unlock cookies stop working
    expires_at: float | None = None  # epoch seconds
    expired_url: str | None = None
    utm: tuple[tuple[str, str], ...] = ()  # (utm_source, "x") pairs set on the link
    forward_query: bool = True
    og_title: str | None = None
    og_description: str | None = None
    og_image: str | None = None


class DomainRecord(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A verified custom domain: its own slug namespace and its fallback pages."""

    v: int
    domain_id: str
    workspace_id: str
    root_url: str | None = None
    not_found_url: str | None = None
    expired_url: str | None = None


_link_encoder = msgspec.msgpack.Encoder()
_link_decoder = msgspec.msgpack.Decoder(LinkRecord)
_domain_decoder = msgspec.msgpack.Decoder(DomainRecord)


def link_key(domain: str, slug: str) -> str:
    """Redis key of the record for ``slug`` on ``domain`` (domain lower-case, slug as given)."""
    return f"h0p:l:{domain}/{slug}"


def domain_key(domain: str) -> str:
    """Redis key of the record of a verified custom domain."""
    return f"h0p:d:{domain}"


def encode(record: LinkRecord | DomainRecord) -> bytes:
    """Serialise a record for Redis."""
    return _link_encoder.encode(record)


def _version(data: bytes) -> int | None:
    # msgpack fixarray header then a positive fixint: the version, read without a full decode
    if len(data) < 2 or not 0x90 <= data[0] <= 0x9F and data[0] != 0xDC:
        return None
    first = data[1] if data[0] != 0xDC else data[3] if len(data) > 3 else -1
    return first if 0 <= first <= 0x7F else None


def decode_link(data: bytes) -> LinkRecord | None:
    """Decode a link record; ``None`` for an unknown version or garbage (treated as a miss)."""
    if _version(data) != RECORD_VERSION:
        return None
    try:
        return _link_decoder.decode(data)
    except msgspec.DecodeError:
        return None


def decode_domain(data: bytes) -> DomainRecord | None:
    """Decode a domain record; ``None`` for an unknown version or garbage."""
    if _version(data) != RECORD_VERSION:
        return None
    try:
        return _domain_decoder.decode(data)
    except msgspec.DecodeError:
        return None


UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")

LINK_QUERY = (
    "SELECT id, workspace_id, url, status_code, rules::text AS rules, split::text AS split,"
    " password_hash, expires_at, expired_url, utm_source, utm_medium, utm_campaign, utm_term,"
    " utm_content, forward_query, og_title, og_description, og_image"
    " FROM links WHERE domain = $1 AND slug = $2"
)

DOMAIN_QUERY = (
    "SELECT id, workspace_id, root_url, not_found_url, expired_url"
    " FROM domains WHERE hostname = $1 AND verified_at IS NOT NULL"
)


def _condition(raw: Mapping[str, Any]) -> Condition:
    value = raw.get("value")
    if isinstance(value, list):
        value = tuple(str(v) for v in value)
    return Condition(type=raw["type"], value=value, key=raw.get("key"), negate=bool(raw.get("not", False)))


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def link_record_from_row(row: Mapping[str, Any]) -> LinkRecord:
    """Build the record from a ``LINK_QUERY`` row (rules/split as JSON text, API field shapes)."""
    rules = tuple(
        Rule(conditions=tuple(_condition(c) for c in r["conditions"]), url=r["url"])
        for r in msgspec.json.decode(row["rules"] or "[]")
    )
    split = tuple(SplitTarget(url=t["url"], weight=int(t["weight"])) for t in msgspec.json.decode(row["split"] or "[]"))
    password_hash = row["password_hash"]
    return LinkRecord(
        v=RECORD_VERSION,
        link_id=row["id"],
        workspace_id=row["workspace_id"],
        url=row["url"],
        status_code=row["status_code"],
        rules=rules,
        split=split,
        password_hash=password_hash,
        password_version=hashlib.sha256(password_hash.encode()).hexdigest()[:12] if password_hash else "",
        expires_at=_epoch(row["expires_at"]),
        expired_url=row["expired_url"],
        utm=tuple((f, row[f]) for f in UTM_FIELDS if row[f]),
        forward_query=row["forward_query"],
        og_title=row["og_title"],
        og_description=row["og_description"],
        og_image=row["og_image"],
    )


def domain_record_from_row(row: Mapping[str, Any]) -> DomainRecord:
    """Build the record from a ``DOMAIN_QUERY`` row."""
    return DomainRecord(
        v=RECORD_VERSION,
        domain_id=row["id"],
        workspace_id=row["workspace_id"],
        root_url=row["root_url"],
        not_found_url=row["not_found_url"],
        expired_url=row["expired_url"],
    )
