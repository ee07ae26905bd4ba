"""Webhook MCP tools end to end on both transports: create, list, update, deliveries, delete."""

from __future__ import annotations

from api.services.context import ServiceContext
from api.services.workspaces import Workspace
from h0p_settings import Settings
from tests.api import mcp_harness
from tests.api.mcp_harness import ApiServer, data, error, mcp_session, new_key

api_server = mcp_harness.api_server
transport = mcp_harness.transport


async def test_an_agent_manages_webhooks_through_mcp(
    transport: str, ctx: ServiceContext, workspace: Workspace, settings: Settings, api_server: ApiServer
) -> None:
    key = await new_key(ctx, workspace)
    async with mcp_session(transport, key, settings, api_server) as session:
        created = data(
            await session.call_tool(
                "create_webhook", {"url": "https://93.184.216.34/h0p", "events": ["link.created", "link.clicked"]}
            )
        )
        assert created["secret"].startswith("whsec_") and created["events"] == ["link.clicked", "link.created"]
        listed = data(await session.call_tool("list_webhooks", {}))
        assert [w["id"] for w in listed["data"]] == [created["id"]] and "secret" not in listed["data"][0]
        updated = data(await session.call_tool("update_webhook", {"id": created["id"], "disabled": True}))
        assert updated["disabled"] and updated["disabledReason"] == "disabled by a user"
        deliveries = data(await session.call_tool("list_webhook_deliveries", {"id": created["id"]}))
        assert deliveries["total"] == 0
        refused = error(await session.call_tool("create_webhook", {"url": "http://10.0.0.1/", "events": ["ping"]}))
        assert refused["code"] == "VALIDATION_ERROR"
        assert data(await session.call_tool("delete_webhook", {"id": created["id"]})) == {"id": created["id"]}
        assert error(await session.call_tool("list_webhook_deliveries", {"id": created["id"]}))["code"] == "NOT_FOUND"
