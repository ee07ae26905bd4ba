"""Cache record contract: what the edge needs to answer a short link without Postgres.

Written by ``api`` (after commit) into Redis, read by ``redirect``. A leaf module: stdlib and
msgspec only. The version is the first array element; an unknown version decodes to ``None``
and the edge treats it as a cache miss. Secrets never enter a record: only a password *hash*.
"""

from __future__ import annotations

import msgspec

RECORD_VERSION = 1

# Redis values that are not records.
NEGATIVE = b"-"  # "no such link" (short TTL): stops a flood of random slugs reaching Postgres


class Condition(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True):
    """One test of a routing rule; ``negate`` inverts it (query ``absent`` = negated ``present``)."""

    type: str  # device os browser country city language query referrer ip before after
    value: str | tuple[str, ...] | None = None  # one value or any-of; ISO time for before/after
    key: str | None = None  # the query parameter name for type "query"
    negate: bool = False


class Rule(msgspec.Struct, frozen=True, array_like=True):
    """All conditions must hold; the first matching rule's url wins."""

    conditions: tuple[Condition, ...]
    url: str


class SplitTarget(msgspec.Struct, frozen=True, array_like=True):
    url: str
    weight: int  # weights of a split sum to 100


class LinkRecord(msgspec.Struct, frozen=True, array_like=True, omit_defaults=False):
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
    blocked: bool = False  # destination host on the block-list: show a warning, do not redirect
    og_title: str | None = None
    og_description: str | None = None
    og_image: str | None = None


class DomainRecord(msgspec.Struct, frozen=True, array_like=True):
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
