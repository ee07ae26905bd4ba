"""``h0p mcp``: the MCP server over stdio for desktop clients, acting with ``H0P_API_KEY``.

The process opens its own Postgres/Redis connections and runs the same server as ``/mcp``.
The key is checked once at start-up (a desktop client shows stderr: a wrong key should be
said there, not discovered at the first tool call) and again on every call, like an HTTP
request, so a revoked key stops working at once and its scopes and plan stay current.
stdout carries only MCP messages; logs go to stderr: one INFO line at start-up saying whom the
server acts for and what its short URLs look like (the settings a client config most often
gets wrong), and nothing per call.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import asyncpg
import redis.exceptions
from mcp.server import ServerRequestContext
from mcp.server.stdio import stdio_server

from api.errors import Unauthorized
from api.mcp.server import build_server
from api.services.context import ServiceContext, close_context, open_context
from api.services.keys import Principal, authenticate
from api.services.workspaces import get_workspace
from h0p_settings import Settings

log = logging.getLogger("h0p.mcp")


async def serve_stdio(settings: Settings) -> None:
    """Serve MCP on stdin/stdout until the client closes stdin; Unauthorized if the key is not valid."""
    ctx = await open_context(settings, pool_size=4)
    try:
        principal = await authenticate(ctx, settings.api_key)
        workspace = await get_workspace(ctx, principal.workspace_id)
        log.info(
            "serving MCP on stdio for workspace %r with key %s (scopes: %s); short URLs look like %s",
            workspace.name, principal.key_id, ", ".join(sorted(principal.scopes)),
            settings.short_url(settings.default_domain, "<slug>"),
        )  # fmt: skip

        async def caller_of(rctx: ServerRequestContext[Any, Any]) -> tuple[ServiceContext, Principal]:
            return ctx, await authenticate(ctx, settings.api_key)

        server = build_server(caller_of)
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())
    finally:
        await close_context(ctx)


def run_stdio(settings: Settings) -> None:
    """Entry point of ``h0p mcp``: exits 2 without a key, 1 with a key that is not valid."""
    logging.basicConfig(stream=sys.stderr, level=settings.log_level.upper(), format="h0p mcp: %(message)s")
    if not settings.api_key:
        print("h0p mcp: set H0P_API_KEY to the API key the MCP client acts with", file=sys.stderr)
        raise SystemExit(2)
    try:
        asyncio.run(serve_stdio(settings))
    except Unauthorized:
        print("h0p mcp: H0P_API_KEY is not a valid API key (revoked, or from another database?)", file=sys.stderr)
        raise SystemExit(1) from None
    except (OSError, TimeoutError, asyncpg.PostgresError, redis.exceptions.ConnectionError) as exc:
        # A desktop client shows one line of stderr: name what is unreachable, not a traceback.
        print(f"h0p mcp: cannot reach Postgres or Redis: {type(exc).__name__}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        pass


serve = run_stdio  # the name api/cli.py's service table calls
