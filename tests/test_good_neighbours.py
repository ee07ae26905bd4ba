"""The suite leaves the machine's own services alone: people run `make test` beside a stack."""

from __future__ import annotations

import redis.asyncio as aioredis

from h0p_settings import Settings
from tests.redis_server import RedisServer


async def test_the_session_uses_a_redis_server_of_its_own_never_the_machines(
    settings: Settings, redis_server: RedisServer
) -> None:
    # Before: a random db 1-15 of the machine's Redis, flushed at start; a stack using it lost its cache.
    r = aioredis.Redis.from_url(settings.redis_url)
    try:
        info = await r.info("server")
    finally:
        await r.aclose()
    assert info["tcp_port"] == redis_server.port
    assert redis_server.proc is not None and info["process_id"] == redis_server.proc.pid
