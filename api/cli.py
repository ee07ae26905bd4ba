"""The ``h0p`` command: operator tasks (migrate, keys, links) and one entry point per service.

Commands call the same service layer as the HTTP API, so a link made here is validated,
stored and written through to the cache exactly like one made with ``POST /links``.
Output contract (scripts rely on it): stdout carries only the result (a key, a short URL);
everything else goes to stderr. Exit codes: 0 ok, 1 a domain or connection error (one line),
2 bad usage or a bad setting (one line).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import msgspec
import redis.exceptions

from api import db
from api.errors import H0pError, NotFound, from_msgspec, status_and_code
from api.services.context import ServiceContext, close_context, open_context
from h0p_settings import Settings, SettingsError, load_settings_or_exit, require_private_secret

if TYPE_CHECKING:
    from api.services.workspaces import Workspace

T = TypeVar("T")

DEFAULT_WORKSPACE = "demo"


class CommandFailed(Exception):
    """A failure to report as one line on stderr with exit code 1."""


def _redact(url: str) -> str:
    # A database or Redis URL may carry a password; error lines must never show it.
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


async def _with_context(settings: Settings, work: Callable[[ServiceContext], Awaitable[T]]) -> T:
    ctx = await open_context(settings, pool_size=2)
    try:
        return await work(ctx)
    finally:
        await close_context(ctx)


def _run(settings: Settings, coro: Awaitable[T]) -> T:
    """Run one coroutine, turning unreachable dependencies into a one-line ``CommandFailed``."""

    async def guarded() -> T:
        return await coro

    try:
        return asyncio.run(guarded())
    except (TimeoutError, OSError, asyncpg.PostgresConnectionError) as exc:
        raise CommandFailed(f"cannot reach Postgres at {_redact(settings.database_url)}: {exc}") from None
    except asyncpg.InvalidCatalogNameError:
        raise CommandFailed("the database does not exist yet: run `h0p migrate` first") from None
    except asyncpg.UndefinedTableError:
        raise CommandFailed("the database has no schema yet: run `h0p migrate` first") from None
    except redis.exceptions.ConnectionError as exc:
        raise CommandFailed(f"cannot reach Redis at {_redact(settings.redis_url)}: {exc}") from None


# --- commands ---------------------------------------------------------------------------


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    applied = _run(settings, db.migrate(settings.database_url))
    for name in applied:
        print(f"applied {name}", file=sys.stderr)
    if not applied:
        print("database schema is up to date", file=sys.stderr)
    if args.skip_topics:
        return 0
    from api.topics import TopicsFailed, ensure_topics

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # a broker away is our one line, not its log
    try:
        results = asyncio.run(ensure_topics(settings))
    except TopicsFailed as exc:
        raise CommandFailed(f"{exc} (the database is migrated; run again, or pass --skip-topics)") from None
    for result in results:
        if result.created:
            replication, insync = settings.kafka_replication, min(settings.kafka_min_insync, settings.kafka_replication)
            print(
                f"created topic {result.topic} ({result.partitions} partitions, replication {replication},"
                f" min.insync.replicas {insync})",
                file=sys.stderr,
            )
        else:
            print(result.warning or f"topic {result.topic} exists ({result.partitions} partitions)", file=sys.stderr)
    return 0


def _scopes(raw: Sequence[str] | None) -> list[str] | None:
    if raw is None:
        return None
    # Accept "a,b c" as well as "a b c": both spellings show up in shell scripts.
    return [s for item in raw for s in item.split(",") if s.strip()]


async def _workspace(ctx: ServiceContext, name: str, create: bool) -> tuple[Workspace, bool]:
    """The workspace called ``name`` and whether this call created it; only created when asked."""
    from api.services import workspaces

    if create:
        return await workspaces.ensure_workspace(ctx, name)
    try:
        return await workspaces.get_workspace_by_name(ctx, name), False
    except NotFound:
        # A typo must not quietly make a second, empty workspace.
        raise CommandFailed(f"no workspace named {name!r}; pass --create-workspace to create it") from None


def cmd_keys_create(settings: Settings, args: argparse.Namespace) -> int:
    from api.services import keys

    async def work(ctx: ServiceContext) -> str | None:
        create = args.create_workspace or args.if_new_workspace
        workspace, created = await _workspace(ctx, args.workspace, create)
        if args.if_new_workspace and not created:
            return None
        _, secret = await keys.create_key(ctx, workspace.id, args.name, _scopes(args.scopes))
        return secret

    secret = _run(settings, _with_context(settings, work))
    if secret is None:
        print(f"workspace {args.workspace!r} already exists: no key created", file=sys.stderr)
    else:
        print(secret)
    return 0


def cmd_links_create(settings: Settings, args: argparse.Namespace) -> int:
    from api.schemas import LinkCreate
    from api.services import domains, links

    raw = {"url": args.url, "slug": args.slug, "domain": args.domain}
    try:
        data = msgspec.convert({k: v for k, v in raw.items() if v is not None}, LinkCreate)
    except msgspec.ValidationError as exc:
        raise _domain_failure(from_msgspec(exc)) from None

    async def work(ctx: ServiceContext) -> str:
        workspace, _ = await _workspace(ctx, args.workspace, args.create_workspace)
        if data.domain:  # the API accepts a pending domain (links wait for verification); here it is a mistake
            await domains.require_verified(ctx, workspace.id, data.domain)
        link = await links.create_link(ctx, workspace.id, data)
        return link.short_url

    print(_run(settings, _with_context(settings, work)))
    return 0


def cmd_users_create(settings: Settings, args: argparse.Namespace) -> int:
    from api.services import users

    password = settings.user_password
    if not password:
        if not sys.stdin.isatty():
            raise CommandFailed("set H0P_USER_PASSWORD, or run in a terminal to be asked for the password")
        password = getpass.getpass("Password for the new user: ")
        if getpass.getpass("Repeat the password: ") != password:
            raise CommandFailed("the two passwords differ")

    async def work(ctx: ServiceContext) -> str:
        workspace, _ = await _workspace(ctx, args.workspace, args.create_workspace)
        user = await users.create_user(ctx, args.email, password, workspace.id, args.role)
        return user.email

    email = _run(settings, _with_context(settings, work))
    print(f"user {email} created, {args.role} of workspace {args.workspace!r}", file=sys.stderr)
    return 0


def _listens(service: str, settings: Settings) -> bool:
    """True if ``h0p SERVICE`` opens a socket on H0P_BIND_HOST (ingest only for its metrics)."""
    if service == "mcp":
        return False
    return service != "ingest" or settings.ingest_metrics_port != 0


def _serve(service: str, module: str) -> Callable[[Settings, argparse.Namespace], int]:
    # Imported on demand: `h0p migrate` must not pay for (or depend on) the servers' imports.
    def run(settings: Settings, args: argparse.Namespace) -> int:
        import importlib

        if _listens(service, settings):
            try:
                require_private_secret(settings)
            except SettingsError as exc:
                print(f"h0p: configuration error: {exc}", file=sys.stderr)
                return 2

        serve: Callable[..., None] = importlib.import_module(module).serve
        if service in SCALED:
            worker = None
            if args.worker_index is not None:
                from h0p_workers import Worker

                worker = Worker(args.worker_index, args.worker_dir, args.supervisor_pid)
            serve(settings, workers=args.workers, worker=worker)
        else:
            serve(settings)
        return 0

    return run


# One line per long-running service: `h0p NAME` calls ``serve(settings)`` of the module.
SERVICES: dict[str, tuple[str, str]] = {
    "redirect": ("redirect.app", "run the redirect edge (port H0P_REDIRECT_PORT)"),
    "api": ("api.app", "run the management API (port H0P_API_PORT)"),
    "ingest": ("ingest.consumer", "run the click consumer (topic H0P_KAFKA_TOPIC)"),
    "mcp": ("api.mcp.stdio", "run the MCP server on stdin/stdout, acting with H0P_API_KEY"),
    "webhooks": ("webhooks.dispatcher", "run a webhook delivery process (any number may run at once)"),
}


# Services that run as several processes sharing their port (`--workers`, h0p_workers).
SCALED = {"redirect": "H0P_EDGE_WORKERS", "api": "H0P_API_WORKERS"}


def _workers(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
    if not 1 <= value <= 1024:
        raise argparse.ArgumentTypeError(f"{raw!r}: expected a number from 1 to 1024")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="h0p", description="H0p link management: operator commands and services.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "migrate", help="create the database if missing, apply pending migrations, create the Kafka topics"
    )
    p.add_argument("--skip-topics", action="store_true", help="leave the Kafka topics alone (made some other way)")
    p.set_defaults(func=cmd_migrate)

    keys_p = sub.add_parser("keys", help="API keys")
    keys_sub = keys_p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    p = keys_sub.add_parser("create", help="create an API key and print it (shown once)")
    p.add_argument("--workspace", default=DEFAULT_WORKSPACE, help="an existing workspace's name (default: demo)")
    p.add_argument("--create-workspace", action="store_true", help="create the workspace if it does not exist")
    p.add_argument("--name", default="cli", help="a label to tell keys apart (default: cli)")
    p.add_argument("--scopes", nargs="+", metavar="SCOPE", help="scopes, comma or space separated (default: all)")
    p.add_argument(
        "--if-new-workspace",
        action="store_true",
        help="create the workspace and a key only if the workspace does not exist yet (used by `make run`)",
    )
    p.set_defaults(func=cmd_keys_create)

    links_p = sub.add_parser("links", help="short links")
    links_sub = links_p.add_subparsers(dest="links_command", required=True, metavar="ACTION")
    p = links_sub.add_parser("create", help="create a short link and print its short URL")
    p.add_argument("url", help="the destination (absolute http or https URL)")
    p.add_argument("--slug", help="custom slug (default: 7 random characters)")
    p.add_argument("--domain", help="a verified custom domain of the workspace (default: H0P_DEFAULT_DOMAIN)")
    p.add_argument("--workspace", default=DEFAULT_WORKSPACE, help="an existing workspace's name (default: demo)")
    p.add_argument("--create-workspace", action="store_true", help="create the workspace if it does not exist")
    p.set_defaults(func=cmd_links_create)

    users_p = sub.add_parser("users", help="dashboard users")
    users_sub = users_p.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    p = users_sub.add_parser(
        "create", help="create a dashboard user (password from H0P_USER_PASSWORD, else asked without echo)"
    )
    p.add_argument("email", help="the email the user signs in with")
    p.add_argument("--workspace", default=DEFAULT_WORKSPACE, help="workspace name (default: demo)")
    p.add_argument("--create-workspace", action="store_true", help="create the workspace if it does not exist")
    p.add_argument(
        "--role", choices=("owner", "member"), default="owner", help="role in the workspace (default: owner)"
    )
    p.set_defaults(func=cmd_users_create)

    for name, (module, help_text) in SERVICES.items():
        p = sub.add_parser(name, help=help_text)
        p.set_defaults(func=_serve(name, module))
        if name in SCALED:
            p.add_argument(
                "--workers",
                type=_workers,
                metavar="N",
                help=f"processes sharing the port under one supervisor (default: {SCALED[name]}; 1: a single process)",
            )
            # Set by the supervisor on the workers it starts; not for operators.
            p.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
            p.add_argument("--worker-dir", help=argparse.SUPPRESS)
            p.add_argument("--supervisor-pid", type=int, help=argparse.SUPPRESS)
    return parser


def _domain_failure(exc: H0pError) -> CommandFailed:
    _, code = status_and_code(exc)
    details = exc.details or []
    detail = "; ".join(f"{d['path']}: {d['message']}" if d.get("path") else str(d["message"]) for d in details)
    return CommandFailed(f"{code}: {detail or exc.message}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``h0p`` console script; returns the process exit code."""
    args = build_parser().parse_args(argv)
    settings = load_settings_or_exit()
    func: Callable[[Settings, argparse.Namespace], int] = args.func
    try:
        return func(settings, args)
    except H0pError as exc:
        print(f"h0p: {_domain_failure(exc)}", file=sys.stderr)
        return 1
    except CommandFailed as exc:
        print(f"h0p: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
