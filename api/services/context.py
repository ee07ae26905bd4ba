"""What every service function receives: the settings and the connections it may use."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis

from api import db
from h0p_settings import Settings


@dataclass(frozen=True, slots=True)
class ServiceContext:
    settings: Settings
    pool: asyncpg.Pool
    redis: aioredis.Redis


async def open_context(settings: Settings, pool_size: int = 10) -> ServiceContext:
    """Connect to Postgres and Redis (every Redis call with a timeout: the default waits forever)."""
    pool = await db.create_pool(settings.database_url, max_size=pool_size)
    redis = aioredis.Redis.from_url(
        settings.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0, health_check_interval=30
    )
    return ServiceContext(settings=settings, pool=pool, redis=redis)


async def close_context(ctx: ServiceContext) -> None:
    """Close what ``open_context`` opened."""
    await ctx.redis.aclose()
    await ctx.pool.close()
