"""The `h0p` command as an operator runs it: a subprocess, configured only by H0P_* variables."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from api import db
from h0p_settings import Settings
from tests.services import free_port, wait_for_port

H0P = Path(sys.executable).parent / "h0p"


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str


def env_for(settings: Settings, **overrides: str) -> dict[str, str]:
    """The environment a process needs to join this test session's stack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("H0P_")}
    env.update(
        H0P_DATABASE_URL=settings.database_url,
        H0P_REDIS_URL=settings.redis_url,
        H0P_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        H0P_KAFKA_TOPIC=settings.kafka_topic,
        H0P_KAFKA_DEAD_LETTER_TOPIC=settings.kafka_dead_letter_topic,
        H0P_KAFKA_GROUP=settings.kafka_group,
        H0P_SPOOL_DIR=settings.spool_dir,
        H0P_FILES_DIR=settings.files_dir,
        H0P_SECRET_KEY=settings.secret_key,
        H0P_DEFAULT_DOMAIN=settings.default_domain,
        H0P_REDIRECT_PORT=str(settings.redirect_port),
        H0P_EDGE_METRICS_PORT="0",
    )
    env.update(overrides)
    return env


async def h0p(*args: str, env: dict[str, str]) -> Result:
    proc = await asyncio.create_subprocess_exec(
        str(H0P), *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    return env_for(settings)


def test_the_console_script_is_installed() -> None:
    assert H0P.exists(), "pip install -e . should install the h0p console script"


async def test_migrate_creates_the_database_and_is_safe_to_run_twice(settings: Settings) -> None:
    url = settings.database_url.rsplit("/", 1)[0] + f"/h0p_test_cli_{os.getpid()}_{random.randrange(10**6)}"
    env = env_for(settings, H0P_DATABASE_URL=url)
    try:
        first = await h0p("migrate", env=env)
        second = await h0p("migrate", env=env)
        assert (first.code, second.code) == (0, 0), first.stderr + second.stderr
        assert "applied 0001_core.sql" in first.stderr
        assert "up to date" in second.stderr
        assert first.stdout == second.stdout == ""
        conn = await asyncpg.connect(url)
        try:
            applied = await conn.fetchval("SELECT count(*) FROM schema_migrations")
            assert applied == len(db.migration_files())
        finally:
            await conn.close()
    finally:
        await db.drop_database(url)


async def test_keys_create_prints_only_a_key_that_is_stored_hashed(env: dict[str, str], pool: asyncpg.Pool) -> None:
    workspace = f"cli-keys-{random.randrange(10**9)}"
    result = await h0p("keys", "create", "--workspace", workspace, "--scopes", "links:read,links:write", env=env)

    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    secret = lines[0]
    assert len(secret) >= 32 and " " not in secret
    rows = await pool.fetch(
        "SELECT k.*, w.name AS workspace FROM api_keys k JOIN workspaces w ON w.id = k.workspace_id WHERE w.name = $1",
        workspace,
    )
    assert len(rows) == 1
    assert sorted(rows[0]["scopes"]) == ["links:read", "links:write"]
    assert all(secret not in str(value) for value in rows[0].values()), "the secret itself must not be stored"


async def test_keys_create_if_new_workspace_prints_a_key_only_the_first_time(env: dict[str, str]) -> None:
    workspace = f"cli-once-{random.randrange(10**9)}"
    first = await h0p("keys", "create", "--workspace", workspace, "--if-new-workspace", env=env)
    second = await h0p("keys", "create", "--workspace", workspace, "--if-new-workspace", env=env)

    assert (first.code, second.code) == (0, 0)
    assert len(first.stdout.split()) == 1
    assert second.stdout == ""
    assert "already exists" in second.stderr


async def test_keys_create_with_an_unknown_scope_fails_with_one_line(env: dict[str, str]) -> None:
    result = await h0p("keys", "create", "--workspace", "cli-bad-scope", "--scopes", "links:fly", env=env)

    assert result.code == 1
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "VALIDATION_ERROR" in result.stderr and "links:fly" in result.stderr


async def test_links_create_prints_a_short_url_that_the_edge_redirects(settings: Settings) -> None:
    port = free_port()
    env = env_for(settings, H0P_REDIRECT_PORT=str(port), H0P_DEFAULT_DOMAIN="localhost")
    slug = f"cli-{random.randrange(10**9)}"
    result = await h0p("links", "create", "https://example.com/from-the-cli", "--slug", slug, env=env)

    assert result.code == 0, result.stderr
    assert result.stdout == f"http://localhost:{port}/{slug}\n"

    edge = await asyncio.create_subprocess_exec(str(H0P), "redirect", env=env, stdout=asyncio.subprocess.DEVNULL)
    try:
        await asyncio.to_thread(wait_for_port, port, 30.0)
        async with httpx.AsyncClient() as client:
            response = await client.get(result.stdout.strip(), follow_redirects=False)
        assert response.status_code == 302
        assert response.headers["location"] == "https://example.com/from-the-cli"
    finally:
        edge.terminate()
        # uvicorn re-raises the signal it handled once it has drained: -SIGTERM is a clean stop.
        assert await asyncio.wait_for(edge.wait(), timeout=30) in (0, -signal.SIGTERM)


async def test_links_create_with_a_taken_slug_fails_with_one_line(env: dict[str, str]) -> None:
    slug = f"cli-dup-{random.randrange(10**9)}"
    first = await h0p("links", "create", "https://example.com/a", "--slug", slug, env=env)
    second = await h0p("links", "create", "https://example.com/b", "--slug", slug, env=env)

    assert first.code == 0, first.stderr
    assert second.code == 1
    assert second.stdout == ""
    assert second.stderr.startswith("h0p: ALREADY_EXIST")
    assert len(second.stderr.strip().splitlines()) == 1


async def test_links_create_refuses_a_destination_that_is_not_http(env: dict[str, str]) -> None:
    result = await h0p("links", "create", "javascript:alert(1)", env=env)

    assert result.code == 1
    assert result.stdout == ""
    assert "VALIDATION_ERROR" in result.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [("H0P_API_PORT", "eighty"), ("H0P_DATABASE_URL", "mysql://x/y"), ("H0P_CLICK_EVENTS", "maybe")],
)
async def test_a_bad_setting_is_one_line_and_exit_code_2(env: dict[str, str], name: str, value: str) -> None:
    result = await h0p("migrate", env={**env, name: value})

    assert result.code == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert name in result.stderr


async def test_an_unreachable_database_is_one_line_without_the_password(settings: Settings) -> None:
    port = free_port()
    env = env_for(settings, H0P_DATABASE_URL=f"postgresql://postgres:s3cret-pw@127.0.0.1:{port}/h0p")
    result = await h0p("keys", "create", env=env)

    assert result.code == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "cannot reach Postgres" in result.stderr
    assert "s3cret-pw" not in result.stderr


async def test_keys_create_before_any_migration_says_to_run_migrate(settings: Settings) -> None:
    url = settings.database_url.rsplit("/", 1)[0] + f"/h0p_test_cli_missing_{random.randrange(10**9)}"
    result = await h0p("keys", "create", env=env_for(settings, H0P_DATABASE_URL=url))

    assert result.code == 1
    assert result.stderr.strip() == "h0p: the database does not exist yet: run `h0p migrate` first"
