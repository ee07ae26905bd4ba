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
        H0P_KAFKA_PARTITIONS=str(settings.kafka_partitions),
        H0P_KAFKA_REPLICATION=str(settings.kafka_replication),
        H0P_KAFKA_MIN_INSYNC=str(settings.kafka_min_insync),
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
    result = await h0p(
        "keys", "create", "--workspace", workspace, "--create-workspace", "--scopes", "links:read,links:write", env=env
    )

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
    result = await h0p(
        "keys", "create", "--workspace", "cli-bad-scope", "--create-workspace", "--scopes", "links:fly", env=env
    )

    assert result.code == 1
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "VALIDATION_ERROR" in result.stderr and "links:fly" in result.stderr


async def test_links_create_prints_a_short_url_that_the_edge_redirects(settings: Settings) -> None:
    port = free_port()
    env = env_for(settings, H0P_REDIRECT_PORT=str(port), H0P_DEFAULT_DOMAIN="localhost")
    slug = f"cli-{random.randrange(10**9)}"
    result = await h0p(
        "links", "create", "https://example.com/from-the-cli", "--slug", slug, "--create-workspace", env=env
    )

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
    first = await h0p("links", "create", "https://example.com/a", "--slug", slug, "--create-workspace", env=env)
    second = await h0p("links", "create", "https://example.com/b", "--slug", slug, env=env)

    assert first.code == 0, first.stderr
    assert second.code == 1
    assert second.stdout == ""
    assert second.stderr.startswith("h0p: ALREADY_EXIST")
    assert len(second.stderr.strip().splitlines()) == 1


async def test_links_create_refuses_a_destination_that_is_not_http(env: dict[str, str]) -> None:
    result = await h0p("links", "create", "javascript:alert(1)", "--create-workspace", env=env)

    assert result.code == 1
    assert result.stdout == ""
    assert "VALIDATION_ERROR" in result.stderr


@pytest.mark.parametrize("command", [["keys", "create"], ["links", "create", "https://example.com/typo"]])
async def test_an_unknown_workspace_is_refused_unless_asked_to_create_it(
    env: dict[str, str], pool: asyncpg.Pool, command: list[str]
) -> None:
    typo = f"cli-typo-{random.randrange(10**9)}"
    refused = await h0p(*command, "--workspace", typo, env=env)

    assert refused.code == 1 and refused.stdout == ""
    assert refused.stderr.strip() == f"h0p: no workspace named {typo!r}; pass --create-workspace to create it"
    assert await pool.fetchval("SELECT count(*) FROM workspaces WHERE name = $1", typo) == 0

    created = await h0p(*command, "--workspace", typo, "--create-workspace", env=env)
    assert created.code == 0, created.stderr
    assert await pool.fetchval("SELECT count(*) FROM workspaces WHERE name = $1", typo) == 1
    again = await h0p(*command, "--workspace", typo, env=env)  # it exists now: no flag needed
    assert again.code == 0, again.stderr


async def test_links_create_refuses_a_domain_that_is_not_verified(env: dict[str, str], pool: asyncpg.Pool) -> None:
    workspace = f"cli-domains-{random.randrange(10**9)}"
    made = await h0p("keys", "create", "--workspace", workspace, "--create-workspace", env=env)
    assert made.code == 0, made.stderr
    ws_id = await pool.fetchval("SELECT id FROM workspaces WHERE name = $1", workspace)
    host = f"cli-{random.randrange(10**9)}.example.com"
    await pool.execute(
        "INSERT INTO domains (id, workspace_id, hostname, verification_token) VALUES ($1, $2, $3, 'token')",
        f"dom_cli{random.randrange(10**9)}",
        ws_id,
        host,
    )
    args = ("links", "create", "https://example.com/", "--workspace", workspace, "--domain", host, "--slug", "d")

    pending = await h0p(*args, env=env)
    assert pending.code == 1 and pending.stdout == ""
    assert pending.stderr.startswith("h0p: VALIDATION_ERROR: domain: ") and "not verified" in pending.stderr
    assert await pool.fetchval("SELECT count(*) FROM links WHERE domain = $1", host) == 0
    unknown = await h0p(*args[:-4], "--domain", f"not-mine-{host}", env=env)
    assert unknown.code == 1 and "not a domain of this workspace" in unknown.stderr

    await pool.execute("UPDATE domains SET verified_at = now() WHERE hostname = $1", host)
    verified = await h0p(*args, env=env)
    assert verified.code == 0, verified.stderr
    assert verified.stdout.startswith(f"http://{host}/d")


async def test_h0p_ingest_says_at_info_where_it_consumes_from_and_when_it_stops(settings: Settings) -> None:
    password = f"pw-{random.randrange(10**9)}"
    database = settings.database_url.replace("postgres@", f"postgres:{password}@", 1)  # trust auth ignores it
    group = f"cli-ingest-{random.randrange(10**9)}"
    env = env_for(settings, H0P_DATABASE_URL=database, H0P_KAFKA_GROUP=group, H0P_INGEST_METRICS_PORT="0")
    proc = await asyncio.create_subprocess_exec(
        str(H0P), "ingest", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stderr is not None
    lines: list[str] = []

    async def read_until(text: str) -> None:
        while not any(text in line for line in lines):
            line = (await proc.stderr.readline()).decode()  # type: ignore[union-attr]
            assert line, f"h0p ingest exited before saying {text!r}: {lines}"
            lines.append(line)

    try:
        await asyncio.wait_for(read_until(f"ingest consuming {settings.kafka_topic} as group {group}"), 60)
    finally:
        proc.send_signal(signal.SIGTERM)
    _, rest = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    starting = next(line for line in lines if "ingest starting" in line)
    assert " INFO " in starting and settings.kafka_bootstrap in starting and group in starting
    assert "PostgreSQL 127.0.0.1:5432/" in starting
    everything = "".join(lines) + rest.decode()
    assert password not in everything
    assert "INFO h0p.ingest: ingest stopped: " in everything


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


async def test_users_create_takes_the_password_from_the_environment_and_prints_nothing_secret(
    env: dict[str, str], pool: asyncpg.Pool
) -> None:
    workspace, email = f"cli-users-{random.randrange(10**9)}", f"cli-{random.randrange(10**9)}@example.com"
    password = "a password from the environment"
    result = await h0p("users", "create", email, "--workspace", workspace, "--create-workspace", "--role", "member",
                       env={**env, "H0P_USER_PASSWORD": password})  # fmt: skip
    assert result.code == 0, result.stderr
    assert result.stdout == "" and password not in result.stderr
    row = await pool.fetchrow(
        "SELECT u.password_hash, m.role FROM users u JOIN memberships m ON m.user_id = u.id WHERE u.email = $1", email
    )
    assert row is not None and row["role"] == "member" and password not in row["password_hash"]
    again = await h0p("users", "create", email, "--workspace", workspace, env={**env, "H0P_USER_PASSWORD": password})
    assert again.code == 1 and "ALREADY_EXIST" in again.stderr


async def test_users_create_without_a_password_or_a_terminal_fails_with_one_line(env: dict[str, str]) -> None:
    result = await h0p("users", "create", "nobody@example.com", "--workspace", "demo", env=env)
    assert result.code == 1
    assert result.stderr.strip() == "h0p: set H0P_USER_PASSWORD, or run in a terminal to be asked for the password"
