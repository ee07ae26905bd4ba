"""Click event contract: what the edge emits for every hit, on the Kafka topic ``clicks``.

Produced by ``redirect``, consumed by ``ingest``. A leaf module: stdlib and msgspec only.
JSON on the wire (readable with any Kafka tool), keyed by link id. An event whose version
is unknown decodes with ``UnknownVersion`` and goes to the dead-letter topic.
"""

from __future__ import annotations

import itertools
import os
import time

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


# Link-preview fetchers (chat apps and social networks unfurling a pasted link), as lower-case
# user-agent tokens: one list for both sides of the click stream. The edge answers them with the
# link's Open Graph page instead of the redirect; ingest counts their hits as bots (a link posted
# in a busy Slack channel would otherwise look like dozens of clicks). Tokens are specific to the
# fetcher: in-app browsers of the same apps (Snapchat, Viber, "[Pinterest/iOS]", Teams) carry
# real people, who must be redirected and counted, and are not listed.
PREVIEW_FETCHERS = (
    "facebookexternalhit",
    "facebookcatalog",
    "facebot",
    "meta-externalagent",
    "twitterbot",
    "slackbot",
    "slack-imgproxy",
    "discordbot",
    "whatsapp",
    "telegrambot",
    "linkedinbot",
    "pinterestbot",
    "pinterest/0.",
    "redditbot",
    "skypeuripreview",
    "microsoftpreview",
    "iframely",
    "embedly",
    "vkshare",
    "mastodon",
    "bluesky",
    "google-pagerenderer",
    "googleother",
    "applebot",
    "bitlybot",
    "outbrain",
    "qwantify",
    "yahoo! slurp",
    "google-inspectiontool",
    "bingpreview",
    "cardyb",  # Bluesky's card fetcher
    "viberbot",
    "line-poker",
    "kakaotalk-scrap",
)


class UnknownVersion(ValueError):
    """The event carries a version this consumer does not understand."""


class _Versioned(msgspec.Struct):
    v: int


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ClickEvent)
_peek = msgspec.json.Decoder(_Versioned)


def _reseed() -> None:
    """A fresh process identity and counter start (at import, and in a forked child)."""
    global _PROCESS_HEX, _sequence, _prefix_ms
    bits = int.from_bytes(os.urandom(4), "big")
    # 12 random bits (rand_a), then the variant 0b10 and 14 more random bits: "xxx-yyyy"
    _PROCESS_HEX = "%03x-%04x" % (bits >> 20 & 0xFFF, 0x8000 | (bits & 0x3FFF))  # noqa: UP031
    _sequence = itertools.count(int.from_bytes(os.urandom(5), "big"))
    _prefix_ms = -1


_PROCESS_HEX = ""
_sequence = itertools.count()
_prefix_ms = -1  # the millisecond _prefix was made for: events come many to a millisecond
_prefix = ""
_reseed()
os.register_at_fork(after_in_child=_reseed)


def new_event_id(now: float | None = None) -> str:
    """A UUIDv7: 48-bit unix milliseconds, 26 random bits drawn once per process, a 48-bit counter.

    Sorts by time as text and as uuid (and by emission order within one process and millisecond).
    The counter starts at a random value; with the process bits, ids of two processes collide only
    if both the 26 bits and the counter values meet within one millisecond. Unique without a
    system call per id, and the text of one millisecond is formatted once.
    """
    global _prefix_ms, _prefix
    ms = int((time.time() if now is None else now) * 1000)
    if ms != _prefix_ms:
        _prefix_ms = ms
        _prefix = "%08x-%04x-7%s-" % (ms >> 16 & 0xFFFF_FFFF, ms & 0xFFFF, _PROCESS_HEX)  # noqa: UP031
    return _prefix + "%012x" % (next(_sequence) & 0xFFFF_FFFF_FFFF)


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
