"""Click event contract: what the edge emits for every hit, on the Kafka topic ``clicks``.

Produced by ``redirect``, consumed by ``ingest``. A leaf module: stdlib and msgspec only.
JSON on the wire (readable with any Kafka tool), keyed by link id. An event whose version
is unknown decodes with ``UnknownVersion`` and goes to the dead-letter topic.
"""

from __future__ import annotations

import os
import time
import uuid

import msgspec

EVENT_VERSION = 1


class ClickEvent(msgspec.Struct, frozen=True, omit_defaults=True):
    """One hit on the edge; ``link_id`` is None for an orphan (a slug that does not exist)."""

    v: int
    id: str  # UUIDv7 text: unique, sortable by time
    ts: float  # epoch seconds, when the edge answered
    domain: str
    slug: str
    link_id: str | None = None
    workspace_id: str | None = None
    url: str | None = None  # destination chosen (None for orphans and non-redirect answers)
    rule: str | None = None  # "rule:N" or "split:N" that chose url, None for the default
    ip: str = ""
    method: str = "GET"
    ua: str = ""
    referer: str = ""
    lang: str = ""
    query: str = ""  # landing query string as received (QR marker already stripped)
    qr: bool = False  # the visitor came through the link's QR code
    status: int = 302  # what the edge answered


class UnknownVersion(ValueError):
    """The event carries a version this consumer does not understand."""


class _Versioned(msgspec.Struct):
    v: int


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ClickEvent)
_peek = msgspec.json.Decoder(_Versioned)


def new_event_id(now: float | None = None) -> str:
    """A UUIDv7: 48-bit unix milliseconds, then random bits; sorts by time as text and as uuid."""
    ms = int((time.time() if now is None else now) * 1000)
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | rand
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return str(uuid.UUID(int=value))


def encode(event: ClickEvent) -> bytes:
    """Serialise an event for the topic."""
    return _encoder.encode(event)


def decode(data: bytes) -> ClickEvent:
    """Decode one event; raises ``UnknownVersion`` or ``msgspec.DecodeError`` (both: dead letter)."""
    version = _peek.decode(data).v
    if version != EVENT_VERSION:
        raise UnknownVersion(f"click event version {version}")
    return _decoder.decode(data)


def partition_key(event: ClickEvent) -> bytes:
    """Kafka key: the link id, so one link's clicks stay ordered on one partition."""
    return (event.link_id or f"{event.domain}/{event.slug}").encode()
