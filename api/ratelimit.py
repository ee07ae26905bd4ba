"""Rate limits per API key in Redis: a per-second and a per-minute window, checked atomically.

One Lua script reads the server's clock, checks both windows and counts the request only if
both allow it, so any number of API processes sharing one Redis enforce the same limit and a
refused request does not use up the minute. Limits come from the key's plan, else from the
settings (default 5/s and 100/min); ``settings.rate_limits_enabled=False`` turns them off.

Headers describe the window closest to refusing (fewest requests left; on a tie the one that
resets later): ``X-RateLimit-Limit``, ``-Remaining`` and ``-Reset`` (epoch seconds);
a refusal adds ``Retry-After`` (seconds). If Redis is unreachable requests are let through.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import redis.exceptions

from api.errors import RateLimited
from api.services.context import ServiceContext
from api.services.keys import Principal

log = logging.getLogger("h0p.api.ratelimit")

# KEYS: second-window prefix, minute-window prefix (same hash tag). ARGV: per second, per minute.
_SCRIPT = """
local now = tonumber(redis.call('TIME')[1])
local sk = KEYS[1] .. now
local mk = KEYS[2] .. math.floor(now / 60)
local s = tonumber(redis.call('GET', sk) or '0')
local m = tonumber(redis.call('GET', mk) or '0')
local allowed = 0
if s < tonumber(ARGV[1]) and m < tonumber(ARGV[2]) then
  s = redis.call('INCR', sk)
  redis.call('EXPIRE', sk, 3)
  m = redis.call('INCR', mk)
  redis.call('EXPIRE', mk, 63)
  allowed = 1
end
return {allowed, s, m, now}
"""
_last_warning = 0.0


@dataclass(frozen=True, slots=True)
class RateState:
    """Where a caller stands in its tightest window."""

    limit: int
    remaining: int
    reset: int  # epoch seconds when that window starts over
    now: int

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }


def limits_for(ctx: ServiceContext, principal: Principal | None) -> tuple[int, int]:
    """(per second, per minute) for the caller: its plan's override, else the settings."""
    s = ctx.settings
    plan = principal.plan if principal is not None else None
    per_second = plan.rate_limit_per_second if plan and plan.rate_limit_per_second else s.rate_limit_per_second
    per_minute = plan.rate_limit_per_minute if plan and plan.rate_limit_per_minute else s.rate_limit_per_minute
    return per_second, per_minute


async def charge_bucket(ctx: ServiceContext, bucket: str, per_second: int, per_minute: int) -> RateState | None:
    """Count one request against ``bucket``; RateLimited if a window is full; None if not enforced."""
    global _last_warning
    if not ctx.settings.rate_limits_enabled:
        return None
    prefix = f"h0p:rl:{{{bucket}}}"
    try:
        allowed, s, m, now = await ctx.redis.eval(_SCRIPT, 2, prefix + ":s:", prefix + ":m:", per_second, per_minute)
    except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
        if time.monotonic() - _last_warning > 10:  # an outage must not flood the log
            _last_warning = time.monotonic()
            log.warning("rate limits not enforced: Redis unavailable (%s)", type(exc).__name__)
        return None
    second = RateState(per_second, max(0, per_second - s), now + 1, now)
    minute = RateState(per_minute, max(0, per_minute - m), (now // 60 + 1) * 60, now)
    if allowed:
        state = min((second, minute), key=lambda w: (w.remaining, -w.reset))
        return state
    refused = [w for w, count in ((second, s), (minute, m)) if count >= w.limit]
    state = max(refused, key=lambda w: w.reset)
    state = RateState(state.limit, 0, state.reset, now)
    raise RateLimited(max(1, state.reset - now), headers=state.headers())


async def charge(ctx: ServiceContext, principal: Principal) -> RateState | None:
    """Count one request of ``principal`` (per key); RateLimited when over its limit."""
    per_second, per_minute = limits_for(ctx, principal)
    return await charge_bucket(ctx, f"key:{principal.key_id}", per_second, per_minute)


async def charge_anonymous(ctx: ServiceContext, client: str) -> RateState | None:
    """Count a request without a valid key, per client address (slows down key guessing)."""
    per_second, per_minute = limits_for(ctx, None)
    return await charge_bucket(ctx, f"ip:{client}", per_second, per_minute)
