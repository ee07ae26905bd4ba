"""Rate limits in Redis: per key and per workspace, a per-second and a per-minute window each.

A request with a key is charged to two buckets: the key's own and its workspace's, so minting
more keys does not multiply what a workspace may send. One Lua script reads the server's clock,
checks every window of every bucket and counts the request in all of them only if all allow
it, so any number of API processes sharing one Redis enforce the same limits and a refused
request uses up nothing. Limits come from the plan, else from the settings (per key default
5/s and 100/min, per workspace 10/s and 300/min; a workspace is never held tighter than one of
its keys); ``settings.rate_limits_enabled=False`` turns them off. Requests without a valid key
are charged to a bucket of the client address with the per-key limits.

Headers describe the window closest to refusing (fewest requests left; on a tie the one that
resets later): ``X-RateLimit-Limit``, ``-Remaining`` and ``-Reset`` (epoch seconds);
a refusal adds ``Retry-After`` (seconds). If Redis is unreachable requests are let through.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis.exceptions

from api.errors import RateLimited
from api.services.context import ServiceContext
from api.services.keys import Principal

log = logging.getLogger("h0p.api.ratelimit")

# KEYS: per bucket a second-window and a minute-window prefix (one hash tag for all, so a
# Redis Cluster keeps them in one slot). ARGV: per bucket its per-second and per-minute limit.
# Returns {allowed, now, count of each window in KEYS order (after counting, if allowed)}.
_SCRIPT = """
local now = tonumber(redis.call('TIME')[1])
local names, counts = {}, {}
local allowed = 1
for i = 1, #KEYS, 2 do
  names[i] = KEYS[i] .. now
  names[i + 1] = KEYS[i + 1] .. math.floor(now / 60)
  for j = i, i + 1 do
    counts[j] = tonumber(redis.call('GET', names[j]) or '0')
    if counts[j] >= tonumber(ARGV[j]) then allowed = 0 end
  end
end
if allowed == 1 then
  for j = 1, #KEYS do
    counts[j] = redis.call('INCR', names[j])
    redis.call('EXPIRE', names[j], j % 2 == 1 and 3 or 63)
  end
end
local out = {allowed, now}
for j = 1, #KEYS do out[#out + 1] = counts[j] end
return out
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


@dataclass(frozen=True, slots=True)
class Bucket:
    """One counter of requests: a name under a hash tag and its two limits."""

    tag: str  # requests of one tag are checked in one script call (one Redis Cluster slot)
    name: str
    per_second: int
    per_minute: int


def limits_for(ctx: ServiceContext, principal: Principal | None) -> tuple[int, int]:
    """(per second, per minute) for the caller's key: its plan's override, else the settings."""
    s = ctx.settings
    plan = principal.plan if principal is not None else None
    per_second = plan.rate_limit_per_second if plan and plan.rate_limit_per_second else s.rate_limit_per_second
    per_minute = plan.rate_limit_per_minute if plan and plan.rate_limit_per_minute else s.rate_limit_per_minute
    return per_second, per_minute


def workspace_limits_for(ctx: ServiceContext, principal: Principal) -> tuple[int, int]:
    """(per second, per minute) for the caller's workspace: the plan's, else the settings; never below a key's."""
    s, plan = ctx.settings, principal.plan
    per_second = plan.workspace_rate_limit_per_second or s.workspace_rate_limit_per_second
    per_minute = plan.workspace_rate_limit_per_minute or s.workspace_rate_limit_per_minute
    key_second, key_minute = limits_for(ctx, principal)
    # A workspace with one key must get that key's whole limit (a plan raising per-key limits
    # would otherwise be capped by the default workspace bucket).
    return max(per_second, key_second), max(per_minute, key_minute)


async def charge_buckets(ctx: ServiceContext, buckets: Sequence[Bucket]) -> RateState | None:
    """Count one request against every bucket; RateLimited (nothing counted) if any window is full."""
    global _last_warning
    if not ctx.settings.rate_limits_enabled:
        return None
    keys: list[str] = []
    limits: list[int] = []
    for b in buckets:
        prefix = f"h0p:rl:{{{b.tag}}}:{b.name}"
        keys += [prefix + ":s:", prefix + ":m:"]
        limits += [b.per_second, b.per_minute]
    try:
        allowed, now, *counts = await ctx.redis.eval(_SCRIPT, len(keys), *keys, *limits)
    except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
        if time.monotonic() - _last_warning > 10:  # an outage must not flood the log
            _last_warning = time.monotonic()
            log.warning("rate limits not enforced: Redis unavailable (%s)", type(exc).__name__)
        return None
    windows = []
    for i, limit in enumerate(limits):
        reset = now + 1 if i % 2 == 0 else (now // 60 + 1) * 60
        windows.append((RateState(limit, max(0, limit - counts[i]), reset, now), counts[i]))
    if allowed:
        return min((w for w, _ in windows), key=lambda w: (w.remaining, -w.reset))
    full = max((w for w, count in windows if count >= w.limit), key=lambda w: w.reset)
    state = RateState(full.limit, 0, full.reset, now)
    raise RateLimited(max(1, state.reset - now), headers=state.headers())


async def charge(ctx: ServiceContext, principal: Principal) -> RateState | None:
    """Count one request of ``principal`` to its key and its workspace; RateLimited when over a limit."""
    per_second, per_minute = limits_for(ctx, principal)
    ws_second, ws_minute = workspace_limits_for(ctx, principal)
    tag = f"ws:{principal.workspace_id}"
    return await charge_buckets(
        ctx,
        (
            Bucket(tag, f"key:{principal.key_id}", per_second, per_minute),
            Bucket(tag, "all", ws_second, ws_minute),
        ),
    )


async def charge_anonymous(ctx: ServiceContext, client: str) -> RateState | None:
    """Count a request without a valid key, per client address (slows down key guessing)."""
    per_second, per_minute = limits_for(ctx, None)
    return await charge_buckets(ctx, (Bucket(f"ip:{client}", "all", per_second, per_minute),))
