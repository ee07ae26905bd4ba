"""Password-protected links: verify a password, the unlock cookie, and the attempt limit.

The record carries an argon2 hash only. A correct password earns a cookie signed with the
secret key and bound to the link id and its password version, so changing the password
locks every visitor out again. Wrong attempts are counted per link and client in Redis.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from enum import Enum

import redis.asyncio as aioredis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from redirect.record import LinkRecord
from redirect.resolve import REDIS_ERRORS, Unavailable

COOKIE_PREFIX = "h0p_pw_"
COOKIE_MAX_AGE_S = 86_400
MAX_PASSWORD_BYTES = 1024


class Attempt(Enum):
    OK = "ok"
    WRONG = "wrong"
    LIMITED = "limited"


def read_cookie(header: str, name: str) -> str | None:
    """One cookie's value from a Cookie header (tolerant of junk around it)."""
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"')
    return None


class PasswordGate:
    """Checks and grants access to password-protected links."""

    def __init__(self, unlock_key: bytes, redis: aioredis.Redis, attempts: int, window_s: int, secure: bool) -> None:
        self._secret = unlock_key  # Settings.derived_key("unlock-cookies")
        self.redis = redis
        self.attempts = attempts
        self.window_s = window_s
        self.secure = secure
        self._hasher = PasswordHasher()

    def cookie_name(self, record: LinkRecord) -> str:
        return COOKIE_PREFIX + record.link_id

    def _signature(self, record: LinkRecord, expires: int) -> str:
        message = f"{record.link_id}|{record.password_version}|{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:32]

    def unlocked(self, record: LinkRecord, cookie_header: str) -> bool:
        """True when the request carries a valid, unexpired unlock cookie for this link."""
        value = read_cookie(cookie_header, self.cookie_name(record)) if cookie_header else None
        if not value:
            return False
        expires_text, _, signature = value.partition(".")
        if not expires_text.isdigit() or int(expires_text) < time.time():
            return False
        return hmac.compare_digest(signature, self._signature(record, int(expires_text)))

    def unlock_cookie(self, record: LinkRecord) -> bytes:
        """The Set-Cookie header value granted after a correct password."""
        expires = int(time.time()) + COOKIE_MAX_AGE_S
        value = f"{expires}.{self._signature(record, expires)}"
        secure = "; Secure" if self.secure else ""
        return (
            f"{self.cookie_name(record)}={value}; Max-Age={COOKIE_MAX_AGE_S}; Path=/; HttpOnly; SameSite=Lax{secure}"
        ).encode()

    async def attempt(self, record: LinkRecord, client_ip: str, password: str) -> Attempt:
        """Count the attempt and verify; raises ``Unavailable`` when Redis cannot count it.

        Without Redis the limit cannot be enforced, so no password is checked (fail closed).
        """
        key = f"h0p:pwa:{record.link_id}:{client_ip}"
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, self.window_s, nx=True)
                count, _ = await pipe.execute()
        except REDIS_ERRORS as exc:
            raise Unavailable(key) from exc
        if int(count) > self.attempts:
            return Attempt.LIMITED
        if not password or len(password.encode()) > MAX_PASSWORD_BYTES or not record.password_hash:
            return Attempt.WRONG
        if not await asyncio.to_thread(self._verify, record.password_hash, password):
            return Attempt.WRONG
        try:
            await self.redis.delete(key)
        except REDIS_ERRORS:
            pass  # the counter expires by itself
        return Attempt.OK

    def retry_after(self) -> int:
        return self.window_s

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return bool(self._hasher.verify(password_hash, password))
        except (VerificationError, InvalidHashError):
            return False
