"""Reading an ASGI request for the hot path: the slug from the raw path, the host, the headers.

Anything malformed raises ``BadRequest`` (answered 400/414), never an unexpected exception.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

MAX_SLUG = 190

_HEX = frozenset(b"0123456789abcdefABCDEF")
_PLAIN_SLUG = re.compile(rb"[A-Za-z0-9_.~!$&'()*+,;=:@/-]*")
_HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?)*")
_IPV6 = re.compile(r"\[[0-9a-f:.]+\]")


class BadRequest(Exception):
    """The request cannot name a short link; ``status`` is 400 or 414."""

    def __init__(self, status: int = 400) -> None:
        super().__init__(status)
        self.status = status


def _percent_decode(data: bytes) -> bytes:
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        byte = data[i]
        if byte == 0x25:  # "%"
            if i + 2 >= n or data[i + 1] not in _HEX or data[i + 2] not in _HEX:
                raise BadRequest()
            out.append(int(data[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(byte)
            i += 1
    return bytes(out)


def parse_slug(raw_path: bytes) -> str:
    """The slug named by a raw request path ("" for the domain root).

    Percent-encoding must be valid, the result valid UTF-8 without control characters;
    one trailing slash is ignored ("/abc/" is "abc").
    """
    path = raw_path.split(b"?", 1)[0]
    if not path.startswith(b"/"):
        raise BadRequest()
    body = path[1:]
    if len(body) > MAX_SLUG * 12:  # longest possible encoding of MAX_SLUG characters
        raise BadRequest(414)
    if _PLAIN_SLUG.fullmatch(body):
        slug = body.decode("ascii")
    else:
        try:
            slug = _percent_decode(body).decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest() from None
        if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or 0xD800 <= ord(c) < 0xE000 for c in slug):
            raise BadRequest()
    if slug.endswith("/"):
        slug = slug[:-1]
    if len(slug) > MAX_SLUG:
        raise BadRequest(414)
    if "//" in slug or slug.startswith("/"):
        raise BadRequest()
    return slug


def normalise_host(raw: str) -> str:
    """Lower-case host without port or trailing dot; "" when the header is not a host name."""
    host = raw.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        host = host[: end + 1] if end > 0 else ""
        return host if _IPV6.fullmatch(host) else ""
    host = host.rsplit(":", 1)[0] if ":" in host else host
    host = host.rstrip(".")
    if not host or len(host) > 253 or not _HOSTNAME.fullmatch(host):
        return ""
    return host


class Headers:
    """The few request headers the edge reads, found in one pass."""

    __slots__ = ("accept_language", "cookie", "forwarded_for", "host", "referer", "user_agent")

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]) -> None:
        self.host = self.user_agent = self.referer = self.accept_language = self.cookie = ""
        self.forwarded_for: str | None = None
        for name, value in raw:
            # header names arrive lower-cased (ASGI); values are bytes of any kind: latin-1 never fails
            if name == b"host":
                self.host = value.decode("latin-1")
            elif name == b"user-agent":
                self.user_agent = value.decode("latin-1")[:1024]
            elif name == b"referer":
                self.referer = value.decode("latin-1")[:2048]
            elif name == b"accept-language":
                self.accept_language = value.decode("latin-1")[:512]
            elif name == b"cookie":
                self.cookie = value.decode("latin-1")[:8192]
            elif name == b"x-forwarded-for":
                text = value.decode("latin-1")
                self.forwarded_for = text if self.forwarded_for is None else f"{self.forwarded_for},{text}"


def raw_path_of(scope: Mapping[str, Any]) -> bytes:
    raw = scope.get("raw_path")
    if isinstance(raw, bytes) and raw:
        return raw
    path = scope.get("path", "/")
    return str(path).encode("utf-8", "surrogateescape")
