"""Postgres: the database itself, the connection pool, and numbered SQL migrations."""

from __future__ import annotations

import re
from importlib import resources
from urllib.parse import urlsplit, urlunsplit

import asyncpg

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_LOCK_ID = 0x6830_7001  # advisory lock: one migrator at a time across processes


def _admin_url(database_url: str) -> tuple[str, str]:
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/") or "postgres"
    return urlunsplit(parts._replace(path="/postgres")), name


async def ensure_database(database_url: str, timeout: float = 10.0) -> bool:
    """Create the database named in ``database_url`` if it is missing; True if created."""
    admin_url, name = _admin_url(database_url)
    conn = await asyncpg.connect(admin_url, timeout=timeout)
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        except asyncpg.DuplicateDatabaseError:
            return False  # another process won the race
        return True
    finally:
        await conn.close()


async def drop_database(database_url: str, timeout: float = 10.0) -> None:
    """Drop the database (tests); other sessions on it are ended first."""
    admin_url, name = _admin_url(database_url)
    conn = await asyncpg.connect(admin_url, timeout=timeout)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def migration_files() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) for every migration shipped in ``api/migrations``, in order."""
    out = []
    for entry in resources.files("api.migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            out.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    out.sort()
    versions = [v for v, _, _ in out]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a number: {versions}")
    return out


async def migrate(database_url: str, timeout: float = 10.0) -> list[str]:
    """Create the database if needed and apply pending migrations; returns the names applied."""
    await ensure_database(database_url, timeout)
    conn = await asyncpg.connect(database_url, timeout=timeout)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version int PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name)
            applied.append(name)
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    finally:
        await conn.close()
    return applied


async def create_pool(database_url: str, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose every query has a timeout (no call may wait forever)."""
    pool = await asyncpg.create_pool(
        database_url, min_size=min_size, max_size=max_size, timeout=5.0, command_timeout=30.0
    )
    assert pool is not None
    return pool
