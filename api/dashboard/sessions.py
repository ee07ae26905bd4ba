"""Dashboard sessions, server-side in Redis, and the sign-in throttle.

The cookie holds a random token; Redis holds ``sha256(token)`` → the session (user, current
workspace, CSRF token, sign-in time), expiring after ``session_idle_s`` unused and refused
``session_max_s`` after sign-in. Each user's session keys are listed in a set, so "sign out
everywhere" and a password change end them all.
"""

from __future__ import annotations

import hashlib
import secrets
import time

import msgspec

from api.services.context import ServiceContext

COOKIE = "h0p_session"
_PREFIX = "h0p:dash"


class Session(msgspec.Struct, kw_only=True):
    user_id: str
    workspace_id: str
    csrf: str
    signed_in_at: float


def _key(token: str) -> str:
    return f"{_PREFIX}:s:{hashlib.sha256(token.encode()).hexdigest()}"


def _user_key(user_id: str) -> str:
    return f"{_PREFIX}:u:{user_id}"


async def create_session(ctx: ServiceContext, user_id: str, workspace_id: str) -> str:
    """A new session (a new token: sign-in rotates it); returns the cookie's token."""
    token = secrets.token_urlsafe(32)
    session = Session(
        user_id=user_id, workspace_id=workspace_id, csrf=secrets.token_urlsafe(32), signed_in_at=time.time()
    )
    key = _key(token)
    async with ctx.redis.pipeline(transaction=True) as pipe:
        pipe.set(key, msgspec.json.encode(session), ex=ctx.settings.session_idle_s)
        pipe.sadd(_user_key(user_id), key)
        pipe.expire(_user_key(user_id), ctx.settings.session_max_s)
        await pipe.execute()
    return token


async def load_session(ctx: ServiceContext, token: str | None) -> Session | None:
    """The session of the cookie's token, its idle time renewed; None if absent or too old."""
    if not token or len(token) > 100:
        return None
    key = _key(token)
    raw = await ctx.redis.get(key)
    if raw is None:
        return None
    session = msgspec.json.decode(raw, type=Session)
    if time.time() - session.signed_in_at > ctx.settings.session_max_s:
        await ctx.redis.delete(key)
        return None
    await ctx.redis.expire(key, ctx.settings.session_idle_s)
    return session


async def save_session(ctx: ServiceContext, token: str, session: Session) -> None:
    """Store a changed session (the workspace switched), keeping its idle expiry."""
    await ctx.redis.set(_key(token), msgspec.json.encode(session), ex=ctx.settings.session_idle_s)


async def destroy_session(ctx: ServiceContext, token: str, user_id: str) -> None:
    """Sign out: the token no longer opens anything."""
    key = _key(token)
    await ctx.redis.delete(key)
    await ctx.redis.srem(_user_key(user_id), key)


async def destroy_user_sessions(ctx: ServiceContext, user_id: str) -> None:
    """Sign out everywhere: every session of the user ends."""
    keys = [k.decode() if isinstance(k, bytes) else k for k in await ctx.redis.smembers(_user_key(user_id))]
    await ctx.redis.delete(_user_key(user_id), *keys)


# --- sign-in throttle -------------------------------------------------------------------


def _throttle_keys(email: str, client: str) -> tuple[str, str]:
    account = hashlib.sha256(email.strip().lower().encode()).hexdigest()
    return f"{_PREFIX}:fail:a:{account}", f"{_PREFIX}:fail:c:{client}"


async def signin_blocked(ctx: ServiceContext, email: str, client: str) -> bool:
    """True when the account or the client used up its failed attempts for the window."""
    account_key, client_key = _throttle_keys(email, client)
    account, by_client = await ctx.redis.mget(account_key, client_key)
    s = ctx.settings
    return int(account or 0) >= s.signin_attempts_per_account or int(by_client or 0) >= s.signin_attempts_per_client


async def record_failed_signin(ctx: ServiceContext, email: str, client: str) -> None:
    """Count a failed sign-in for the account and for the client (windows start at the first failure)."""
    window = ctx.settings.signin_window_s
    async with ctx.redis.pipeline(transaction=True) as pipe:
        for key in _throttle_keys(email, client):
            pipe.incr(key)
            pipe.expire(key, window, nx=True)
        await pipe.execute()


# --- one-time messages ------------------------------------------------------------------


async def set_flash(ctx: ServiceContext, token: str, message: str) -> None:
    """A message for the next page of this session only (a new key's secret after the redirect)."""
    await ctx.redis.set(_key(token) + ":flash", message, ex=300)


async def pop_flash(ctx: ServiceContext, token: str) -> str | None:
    """The session's one-time message, deleted as it is read."""
    raw = await ctx.redis.getdel(_key(token) + ":flash")
    return raw.decode() if isinstance(raw, bytes) else raw
