"""The MCP tests' harness: the API and the edge under uvicorn, and SDK client sessions on both transports.

``http`` talks to ``/mcp`` of the real API app (``api.app.create_app``) served by uvicorn on a
free port; ``stdio`` spawns ``h0p mcp`` (as ``python -m api.cli mcp``) with the test
session's database and Redis in its environment. Test modules import the fixtures by name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import mcp_types as types
import pytest
import uvicorn
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from api.services import keys
from api.services.context import ServiceContext
from api.services.workspaces import Workspace
from h0p_settings import Settings
from tests.services import free_port

REPO = Path(__file__).resolve().parents[2]
TRANSPORTS = ["http", "stdio"]
H0P_MCP = ["-m", "api.cli", "mcp"]  # `h0p mcp` through the console script's own entry point
LINK_TOOLS = {"create_link", "get_link", "update_link", "delete_link", "list_links", "bulk_create_links"}


# --- the API process and the clients -------------------------------------------------------


# The agents in these tests call faster than the default 5/s; the rate-limit test uses the free plan's own limit.
GENEROUS_LIMITS = {"H0P_RATE_LIMIT_PER_SECOND": "1000", "H0P_RATE_LIMIT_PER_MINUTE": "100000"}


def generous(settings: Settings) -> Settings:
    return dataclasses.replace(settings, rate_limit_per_second=1000, rate_limit_per_minute=100_000)


class UvicornThread:
    """An ASGI app under uvicorn in a thread of this process (its own event loop, its own pools)."""

    def __init__(self, app: Any, name: str) -> None:
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=name, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> UvicornThread:
        self.thread.start()
        for _ in range(300):
            if self.server.started:
                return self
            if not self.thread.is_alive():
                break
            self.thread.join(0.05)
        raise RuntimeError(f"{self.thread.name} did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class ApiServer(UvicornThread):
    """The API process (``api.app``), whose ``/mcp`` the HTTP transport talks to."""

    def __init__(self, settings: Settings) -> None:
        from api.app import create_app

        super().__init__(create_app(generous(settings)), "api-under-test")

    @property
    def mcp_url(self) -> str:
        return f"{self.base_url}/mcp"


@pytest.fixture(scope="session")
def api_server(settings: Settings) -> Iterator[ApiServer]:
    server = ApiServer(settings)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def edge_server(settings: Settings) -> Iterator[UvicornThread]:
    from redirect.app import create_app

    server = UvicornThread(create_app(settings), "edge-under-test").start()
    yield server
    server.stop()


def stdio_env(settings: Settings, api_key: str) -> dict[str, str]:
    """The environment of ``h0p mcp`` pointing at this test session's services."""
    return {
        "H0P_DATABASE_URL": settings.database_url,
        "H0P_REDIS_URL": settings.redis_url,
        "H0P_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "H0P_SECRET_KEY": settings.secret_key,
        "H0P_DEFAULT_DOMAIN": settings.default_domain,
        "H0P_REDIRECT_PORT": str(settings.redirect_port),
        "H0P_LOG_LEVEL": "warning",
        "H0P_API_KEY": api_key,
        **GENEROUS_LIMITS,
    }


@contextlib.asynccontextmanager
async def mcp_session(transport: str, key: str, settings: Settings, api: ApiServer) -> AsyncIterator[ClientSession]:
    """An initialized SDK client session acting with ``key`` over ``transport``."""
    async with contextlib.AsyncExitStack() as stack:
        if transport == "http":
            http = await stack.enter_async_context(httpx2.AsyncClient(headers={"x-api-key": key}, timeout=30))
            read, write = await stack.enter_async_context(streamable_http_client(api.mcp_url, http_client=http))
        else:
            params = StdioServerParameters(command=sys.executable, args=H0P_MCP, env=stdio_env(settings, key), cwd=REPO)
            read, write = await stack.enter_async_context(stdio_client(params))
        session = await stack.enter_async_context(ClientSession(read, write, read_timeout_seconds=30))
        await session.initialize()
        yield session


async def new_key(ctx: ServiceContext, workspace: Workspace, scopes: list[str] | None = None) -> str:
    _, secret = await keys.create_key(ctx, workspace.id, "mcp-test", scopes)
    return secret


def data(result: types.CallToolResult) -> dict[str, Any]:
    """A successful call's JSON (asserting it succeeded, with the error in the failure message)."""
    assert not result.is_error, result.content
    assert result.structured_content is not None
    text = result.content[0]
    assert isinstance(text, types.TextContent)
    assert json.loads(text.text) == result.structured_content  # agents that read only text see the same
    return dict(result.structured_content)


def error(result: types.CallToolResult) -> dict[str, Any]:
    """A failed call's ``error`` object (code, message, details)."""
    assert result.is_error, result.content
    assert result.structured_content is not None
    text = result.content[0]
    assert isinstance(text, types.TextContent) and "Traceback" not in text.text
    err: dict[str, Any] = result.structured_content["error"]
    return err


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)
