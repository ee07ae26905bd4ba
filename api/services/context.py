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
    # Analytics reads only (H0P_READ_DATABASE_URL, a streaming replica); None: they use ``pool``.
    read_pool: asyncpg.Pool | None = None

    @property
    def reader(self) -> asyncpg.Pool:
        """The pool analytics queries run on: the read replica's if there is one. Never write through it."""
        return self.pool if self.read_pool is None else self.read_pool


async def open_context(settings: Settings, pool_size: int = 10) -> ServiceContext:
    """Connect to Postgres and Redis (every Redis call with a timeout: the default waits forever)."""
    pool = await db.create_pool(settings.database_url, max_size=pool_size)
    redis = aioredis.Redis.from_url(
        settings.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0, health_check_interval=30
    )
    read_pool = None
    if settings.read_database_url:  # min_size=0: the API starts (and writes) while the replica is away
        read_pool = await db.create_pool(settings.read_database_url, min_size=0, max_size=pool_size)
    return ServiceContext(settings=settings, pool=pool, redis=redis, read_pool=read_pool)


async def close_context(ctx: ServiceContext) -> None:
    """Close what ``open_context`` opened."""
    await ctx.redis.aclose()
    await ctx.pool.close()
    if ctx.read_pool is not None:
        await ctx.read_pool.close()
