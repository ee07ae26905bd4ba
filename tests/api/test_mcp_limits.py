"""Over stdio too, listing tools is a request like any other: a loop of tools/list hits the limit."""

from __future__ import annotations

import asyncio
import time

import pytest
from mcp import MCPError

from api.services.context import ServiceContext
from api.services.workspaces import Workspace, set_plan
from h0p_settings import Settings
from tests.api import mcp_harness
from tests.api.mcp_harness import ApiServer, mcp_session, new_key

api_server = mcp_harness.api_server


async def test_tools_list_over_stdio_is_charged_to_the_key(
    ctx: ServiceContext, workspace: Workspace, settings: Settings, api_server: ApiServer
) -> None:
    await set_plan(ctx, workspace.id, "free")  # 2 requests per second
    key = await new_key(ctx, workspace)
    async with mcp_session("stdio", key, settings, api_server) as session:
        await asyncio.sleep(1 - time.time() % 1 + 0.02)  # a fresh one-second window
        await session.list_tools()
        await session.list_tools()
        with pytest.raises(MCPError) as refused:
            await session.list_tools()
    assert refused.value.error.message.startswith("RATE_LIMITED")
