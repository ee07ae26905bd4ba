"""What is particular to each MCP transport: HTTP authentication and protocol versions, stdio start-up."""

from __future__ import annotations

import asyncio
import os
import sys

import httpx2
from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client

from api.services.context import ServiceContext
from api.services.workspaces import Workspace
from h0p_settings import Settings
from tests.api import mcp_harness
from tests.api.mcp_harness import REPO, ApiServer, data, error, new_key, stdio_env

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


async def test_stdio_server_with_a_wrong_key_exits_with_a_message(settings: Settings) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "api.mcp",
        cwd=REPO,
        env={**os.environ, **stdio_env(settings, "h0p_wrong")},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    assert stdout == b""  # nothing but MCP messages may ever reach stdout
    assert b"H0P_API_KEY is not a valid API key" in stderr


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
