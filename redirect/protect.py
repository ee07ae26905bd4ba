"""Password-protected links: verify a password, the unlock cookie, and the attempt limits.

The record carries an argon2 hash only. A correct password earns a cookie signed with the
secret key and bound to the link id and its password version, so changing the password
locks every visitor out again. Guessing is bounded three ways: attempts per link and client
(an IPv6 client is its /64: one host holds billions of addresses), attempts per link from
everyone (past the budget the link's form locks, twice as long each time), and argon2 checks
running at once in this process (each takes ~64 MiB and a core for ~50 ms, in threads of
their own so the event loop goes on answering; one more is refused with 429, never queued).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import time
from concurrent.futures import ThreadPoolExecutor
from enum import Enum
from typing import NamedTuple

import redis.asyncio as aioredis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from redirect.client import client_group
from redirect.record import LinkRecord
from redirect.resolve import REDIS_ERRORS, Unavailable

COOKIE_PREFIX = "h0p_pw_"
COOKIE_MAX_AGE_S = 86_400
MAX_PASSWORD_BYTES = 1024
LOCK_BASE_S = 60  # the first lock of a link whose attempt budget is spent; it doubles per lock
LOCK_MAX_S = 3600
STRIKES_TTL_S = 86_400  # a link's lock count is forgotten after a quiet day
BUSY_RETRY_S = 1

# One round trip, atomic: is the link locked; count the client; count the link, locking it
# once over budget. Returns {verdict, retry-after ms}: 0 go on, 1 client limited, 2 link locked.
# Every key shares the link's hash tag, so the script also runs on Redis Cluster.
_COUNT = """
local locked = redis.call('PTTL', KEYS[3])
if locked > 0 then return {2, locked} end
local c = redis.call('INCR', KEYS[1])
if c == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
if c > tonumber(ARGV[1]) then return {1, redis.call('PTTL', KEYS[1])} end
local n = redis.call('INCR', KEYS[2])
if n == 1 then redis.call('EXPIRE', KEYS[2], ARGV[2]) end
if n > tonumber(ARGV[3]) then
  local strikes = redis.call('INCR', KEYS[4])
  redis.call('EXPIRE', KEYS[4], ARGV[6])
  local lock = math.floor(math.min(tonumber(ARGV[4]) * 2 ^ (strikes - 1), tonumber(ARGV[5])))
  redis.call('SET', KEYS[3], strikes, 'EX', lock)
  redis.call('DEL', KEYS[2])
  return {2, lock * 1000}
end
return {0, 0}
"""
# A right password: the client starts afresh and gives its attempt back to the link's budget.
_REFUND = """
redis.call('DEL', KEYS[1])
if redis.call('GET', KEYS[2]) then redis.call('DECR', KEYS[2]) end
return 0
"""


class Attempt(Enum):
    OK = "ok"
    WRONG = "wrong"
    LIMITED = "limited"  # this client, or everyone on this link: ``retry_after_s``
    BUSY = "busy"  # this process is checking as many passwords as it may


class Verdict(NamedTuple):
    result: Attempt
    retry_after_s: int = 0


def read_cookie(header: str, name: str) -> str | None:
    """One cookie's value from a Cookie header (tolerant of junk around it)."""
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"')
    return None


class PasswordGate:
    """Checks and grants access to password-protected links."""

    def __init__(
        self, unlock_key: bytes, redis: aioredis.Redis, attempts: int, window_s: int, secure: bool,
        link_attempts: int = 100, checks: int = 2,
    ) -> None:  # fmt: skip
        self._secret = unlock_key  # Settings.derived_key("unlock-cookies")
        self.redis = redis
        self.attempts = attempts
        self.window_s = window_s
        self.link_attempts = link_attempts
        self.secure = secure
        self.max_checks = checks
        self.checks_in_flight = 0
        self._hasher = PasswordHasher()
        self._executor = ThreadPoolExecutor(max_workers=checks, thread_name_prefix="h0p-argon2")
        self._count = redis.register_script(_COUNT)
        self._refund = redis.register_script(_REFUND)

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

    def lock_key(self, record: LinkRecord) -> str:
        """The Redis key that exists while the link's form is locked."""
        return f"h0p:pw:{{{record.link_id}}}:lock"

    async def attempt(self, record: LinkRecord, client_ip: str, password: str) -> Verdict:
        """Count the attempt and verify; raises ``Unavailable`` when Redis cannot count it.

        Without Redis the limits cannot be enforced, so no password is checked (fail closed).
        """
        if self.checks_in_flight >= self.max_checks:
            return Verdict(Attempt.BUSY, BUSY_RETRY_S)  # refused before counting: the client loses nothing
        self.checks_in_flight += 1  # held from here: the Redis round trip must not let more in
        try:
            return await self._attempt(record, client_group(client_ip), password)
        finally:
            self.checks_in_flight -= 1

    async def _attempt(self, record: LinkRecord, client: str, password: str) -> Verdict:
        tag = f"h0p:pw:{{{record.link_id}}}"
        keys = [f"{tag}:c:{client}", f"{tag}:n", self.lock_key(record), f"{tag}:strikes"]
        args = [self.attempts, self.window_s, self.link_attempts, LOCK_BASE_S, LOCK_MAX_S, STRIKES_TTL_S]
        try:
            verdict, wait_ms = await self._count(keys=keys, args=args)
        except REDIS_ERRORS as exc:
            raise Unavailable(keys[0]) from exc
        if int(verdict):
            return Verdict(Attempt.LIMITED, max(1, math.ceil(int(wait_ms) / 1000)))
        if not password or len(password.encode()) > MAX_PASSWORD_BYTES or not record.password_hash:
            return Verdict(Attempt.WRONG)
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(self._executor, self._verify, record.password_hash, password):
            return Verdict(Attempt.WRONG)
        try:
            await self._refund(keys=keys[:2])
        except REDIS_ERRORS:
            pass  # the counters expire by themselves
        return Verdict(Attempt.OK)

    def close(self) -> None:
        """Stop the argon2 threads (a check running finishes; none waits to start)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return bool(self._hasher.verify(password_hash, password))
        except (VerificationError, InvalidHashError):
            return False
