"""Resource ids: a type prefix and a ULID (time-sortable, 26 Crockford base32 characters)."""

from __future__ import annotations

import os
import secrets
import string
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_BASE62 = string.digits + string.ascii_letters


def new_id(prefix: str) -> str:
    """``prefix_`` + ULID, e.g. ``link_01JD5X…``: unique, and sorts by creation time."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        value, rest = divmod(value, 32)
        chars.append(_CROCKFORD[rest])
    return f"{prefix}_{''.join(reversed(chars))}"


def random_slug(length: int = 7) -> str:
    """A random base62 slug (62**7 ≈ 3.5e12 values; callers retry on the rare collision)."""
    return "".join(secrets.choice(_BASE62) for _ in range(length))
