"""What is particular to each MCP transport: HTTP authentication and protocol versions, stdio start-up."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import threading
from pathlib import Path

import httpx2
import pytest
from mcp import Client, ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from api.mcp.tools import TOOLS
from api.services import keys
from api.services.context import ServiceContext
from api.services.workspaces import Workspace
from h0p_settings import Settings
from tests.api import mcp_harness
from tests.api.mcp_harness import H0P_MCP, REPO, ApiServer, data, error, mcp_session, new_key, stdio_env

# The harness's fixtures, used in this module by name.
api_server = mcp_harness.api_server


async def test_http_without_a_valid_key_is_401_with_the_api_error_body(api_server: ApiServer) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"accept": "application/json, text/event-stream"}
    async with httpx2.AsyncClient(timeout=10) as http:
        missing = await http.post(api_server.mcp_url, json=body, headers=headers)
        wrong = await http.post(api_server.mcp_url, json=body, headers={**headers, "x-api-key": "h0p_not-a-key"})
    for response in (missing, wrong):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "UNAUTHORIZED"


async def test_http_accepts_the_key_as_a_bearer_token(
    ctx: ServiceContext, workspace: Workspace, api_server: ApiServer
) -> None:
    key = await new_key(ctx, workspace)
    async with (
        httpx2.AsyncClient(headers={"authorization": f"Bearer {key}"}, timeout=30) as http,
        streamable_http_client(api_server.mcp_url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        listed = data(await session.call_tool("list_links", {}))
    assert listed == {"data": [], "page": 0, "limit": 10, "total": 0}


@pytest.mark.parametrize(
    ("key", "status", "message"),
    [("", 2, b"set H0P_API_KEY"), ("h0p_wrong", 1, b"H0P_API_KEY is not a valid API key")],
    ids=["missing", "wrong"],
)
async def test_h0p_mcp_without_a_valid_key_exits_with_one_line(
    settings: Settings, key: str, status: int, message: bytes
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *H0P_MCP,
        cwd=REPO,
        env={**os.environ, **stdio_env(settings, key)},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == status
    assert stdout == b""  # nothing but MCP messages may ever reach stdout
    assert message in stderr and stderr.count(b"\n") == 1


async def test_h0p_mcp_stops_acting_at_once_when_its_key_is_revoked(
    ctx: ServiceContext, workspace: Workspace, settings: Settings, api_server: ApiServer
) -> None:
    key = await new_key(ctx, workspace)
    async with mcp_session("stdio", key, settings, api_server) as session:
        before = data(await session.call_tool("list_links", {}))
        (listed,) = await keys.list_keys(ctx, workspace.id)
        await keys.delete_key(ctx, workspace.id, listed.id)
        after = error(await session.call_tool("list_links", {}))
    assert before["total"] == 0 and after["code"] == "UNAUTHORIZED"


async def test_http_serves_a_client_negotiating_the_newest_protocol(
    ctx: ServiceContext, workspace: Workspace, api_server: ApiServer
) -> None:
    key = await new_key(ctx, workspace)
    async with (
        httpx2.AsyncClient(headers={"x-api-key": key}, timeout=30) as http,
        Client(streamable_http_client(api_server.mcp_url, http_client=http)) as client,
    ):
        created = data(await client.call_tool("create_link", {"url": "https://example.com/modern"}))
        missing = error(await client.call_tool("get_link", {"id": "link_00000000000000000000000000"}))
        version = client.protocol_version
    assert version == "2026-07-28"  # the per-request protocol, not the initialize handshake
    assert created["url"] == "https://example.com/modern" and missing["code"] == "NOT_FOUND"


class _Awaited(logging.Handler):
    """Sets ``event`` when a record containing ``text`` is logged (from any thread)."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.DEBUG)
        self.text, self.event = text, threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()


def _post_and_hang_up(port: int, request: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)


async def test_http_requests_log_nothing_at_info_and_a_client_hanging_up_is_one_debug_line(
    ctx: ServiceContext,
    workspace: Workspace,
    settings: Settings,
    api_server: ApiServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = await new_key(ctx, workspace)
    caplog.set_level(logging.INFO)
    async with mcp_session("http", key, settings, api_server) as session:
        data(await session.call_tool("list_links", {}))
    chatter = [r.getMessage() for r in caplog.records if r.name.startswith("mcp.") and r.levelno >= logging.INFO]
    assert chatter == []  # was "Terminating session: None" at INFO for every request

    caplog.set_level(logging.DEBUG)
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "list_links", "arguments": {}}}'
    head = (
        f"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\nx-api-key: {key}\r\ncontent-type: application/json\r\n"
        f"accept: application/json, text/event-stream\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode()
    seen = _Awaited("disconnected")
    logging.getLogger().addHandler(seen)  # the SDK's logger (gone mid-answer) or ours (gone mid-body)
    try:
        await asyncio.to_thread(_post_and_hang_up, api_server.port, head + body[:20])  # gone mid-body
        assert await asyncio.to_thread(seen.event.wait, 30), "the server never noticed the client leave"
    finally:
        logging.getLogger().removeHandler(seen)
    hung_up = [r for r in caplog.records if "disconnected" in r.getMessage() and r.name.startswith(("mcp.", "h0p."))]
    assert [(r.levelno, r.exc_info) for r in hung_up] == [(logging.DEBUG, None)]
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert problems == [], [r.getMessage() for r in problems]


async def test_h0p_mcp_says_once_at_info_whom_it_acts_for_and_how_short_urls_look(
    ctx: ServiceContext, workspace: Workspace, settings: Settings, tmp_path: Path
) -> None:
    key = await new_key(ctx, workspace, ["links:read", "links:write"])
    env = {**stdio_env(settings, key), "H0P_LOG_LEVEL": "info", "H0P_PUBLIC_PORT": "8443"}
    params = StdioServerParameters(command=sys.executable, args=H0P_MCP, env=env, cwd=REPO)
    with (tmp_path / "stderr").open("w+") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            made = data(await session.call_tool("create_link", {"url": "https://example.com/", "slug": "stdio-log"}))
            data(await session.call_tool("list_links", {}))
        errlog.seek(0)
        lines = errlog.read().splitlines()
    short = f"http://{settings.default_domain}:8443/"
    assert made["shortUrl"] == short + "stdio-log"
    (key_info,) = await keys.list_keys(ctx, workspace.id)
    assert lines == [
        f"h0p mcp: serving MCP on stdio for workspace {workspace.name!r} with key {key_info.id}"
        f" (scopes: links:read, links:write); short URLs look like {short}<slug>"
    ]


def test_the_readme_lists_every_tool_and_the_settings_that_shape_stdio_answers() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("**Over stdio**") : readme.index("## The `h0p` command")]
    assert [t.name for t in TOOLS if f"`{t.name}`" not in section] == []
    # Short URLs, QR codes and domain records are built from these in the stdio process itself.
    shaping = ["H0P_DEFAULT_DOMAIN", "H0P_PUBLIC_SCHEME", "H0P_PUBLIC_PORT", "H0P_REDIRECT_PORT", "H0P_EDGE_HOSTNAME"]
    snippet = section[section.index('{"mcpServers"') :]
    assert [name for name in shaping if f'"{name}"' not in snippet] == []
