"""Dashboard sessions in Redis: idle and absolute timeouts, sign out everywhere, the sign-in throttle."""

from __future__ import annotations

import dataclasses
import secrets
import time

import msgspec

from api.dashboard import sessions
from api.services.context import ServiceContext


def _user() -> str:
    return f"user_{secrets.token_hex(6)}"


async def test_a_session_unused_past_the_idle_time_ends(ctx: ServiceContext) -> None:
    token = await sessions.create_session(ctx, _user(), "ws_1")
    ttl = await ctx.redis.ttl(f"h0p:dash:s:{sessions.hashlib.sha256(token.encode()).hexdigest()}")
    assert 0 < ttl <= ctx.settings.session_idle_s
    assert await sessions.load_session(ctx, token) is not None


async def test_a_session_ends_at_the_absolute_time_even_when_used(ctx: ServiceContext) -> None:
    user = _user()
    token = await sessions.create_session(ctx, user, "ws_1")
    session = await sessions.load_session(ctx, token)
    assert session is not None
    session.signed_in_at = time.time() - ctx.settings.session_max_s - 1  # signed in too long ago
    await sessions.save_session(ctx, token, session)
    assert await sessions.load_session(ctx, token) is None
    assert await sessions.load_session(ctx, token) is None  # and it is gone, not just refused


async def test_sign_out_everywhere_ends_every_session_of_the_user_only(ctx: ServiceContext) -> None:
    user, other = _user(), _user()
    mine = [await sessions.create_session(ctx, user, "ws_1") for _ in range(3)]
    theirs = await sessions.create_session(ctx, other, "ws_1")
    await sessions.destroy_user_sessions(ctx, user)
    assert [await sessions.load_session(ctx, t) for t in mine] == [None, None, None]
    assert await sessions.load_session(ctx, theirs) is not None


async def test_failed_sign_ins_block_the_account_then_the_client(ctx: ServiceContext) -> None:
    strict = dataclasses.replace(ctx, settings=dataclasses.replace(
        ctx.settings, signin_attempts_per_account=2, signin_attempts_per_client=3))  # fmt: skip
    client, email = f"198.51.100.{secrets.randbelow(200)}-{secrets.token_hex(3)}", f"{secrets.token_hex(4)}@x.example"
    for _ in range(2):
        assert not await sessions.signin_blocked(strict, email, client)
        await sessions.record_failed_signin(strict, email, client)
    assert await sessions.signin_blocked(strict, email.upper(), "another client")  # per account, any case
    other = f"{secrets.token_hex(4)}@x.example"
    assert not await sessions.signin_blocked(strict, other, client)
    await sessions.record_failed_signin(strict, other, client)
    assert await sessions.signin_blocked(strict, f"{secrets.token_hex(4)}@x.example", client)  # per client


async def test_a_stored_session_is_not_readable_from_the_cookie_value_alone(ctx: ServiceContext) -> None:
    token = await sessions.create_session(ctx, _user(), "ws_1")
    assert await ctx.redis.get(f"h0p:dash:s:{token}") is None  # keyed by a hash of the token
    raw = await ctx.redis.get(f"h0p:dash:s:{sessions.hashlib.sha256(token.encode()).hexdigest()}")
    assert token not in msgspec.json.decode(raw).values()
