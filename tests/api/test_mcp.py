"""MCP tools end to end, each behaviour on both transports (Streamable HTTP and stdio).

An agent's view: the SDK's own client calls the tools of a running API process (``/mcp``) or
of ``python -m api.mcp`` over stdio; the links it makes are checked on a running edge.
"""

from __future__ import annotations

import asyncio
import time

import httpx2
import mcp_types as types
import pytest
from mcp import ClientSession, MCPError

from api.services.context import ServiceContext
from api.services.workspaces import Workspace, set_plan
from h0p_settings import Settings
from tests.api import mcp_harness
from tests.api.mcp_harness import LINK_TOOLS, ApiServer, UvicornThread, data, error, mcp_session, new_key

# The harness's fixtures, used in this module by name.
api_server = mcp_harness.api_server
edge_server = mcp_harness.edge_server
transport = mcp_harness.transport


async def test_tools_are_listed_with_object_schemas_examples_and_scopes(
    transport: str, ctx: ServiceContext, workspace: Workspace, settings: Settings, api_server: ApiServer
) -> None:
    key = await new_key(ctx, workspace)
    async with mcp_session(transport, key, settings, api_server) as session:
        listed = (await session.list_tools()).tools
    by_name = {t.name: t for t in listed}
    assert LINK_TOOLS <= set(by_name)
    for tool in listed:
        assert tool.input_schema["type"] == "object"
        assert tool.description and "Example arguments: {" in tool.description
        assert "scope" in tool.description
    create = by_name["create_link"].input_schema
    assert create["required"] == ["url"]
    assert {"slug", "utm_campaign", "rules", "tagIds", "expiresAt"} <= set(create["properties"])
    assert by_name["delete_link"].annotations is not None and by_name["delete_link"].annotations.destructive_hint


async def test_link_lifecycle_create_get_update_list_delete(
    transport: str, ctx: ServiceContext, workspace: Workspace, settings: Settings, api_server: ApiServer
) -> None:
    key = await new_key(ctx, workspace)
    slug = f"mcp-{transport}-life"
    async with mcp_session(transport, key, settings, api_server) as session:
        created = data(
            await session.call_tool(
                "create_link",
                {"url": "https://example.com/spring", "slug": slug, "utm_campaign": "spring", "title": "Spring"},
            )
        )
        assert created["slug"] == slug and created["utm_campaign"] == "spring"
        assert created["shortUrl"] == settings.short_url(settings.default_domain, slug)

        by_id = data(await session.call_tool("get_link", {"id": created["id"]}))
        by_slug = data(await session.call_tool("get_link", {"slug": slug}))
        assert by_id == by_slug == created

        updated = data(
            await session.call_tool(
                "update_link", {"id": created["id"], "url": "https://example.com/summer", "title": None}
            )
        )
        assert updated["url"] == "https://example.com/summer" and updated["title"] is None
        assert updated["utm_campaign"] == "spring"  # absent fields are kept

        listed = data(await session.call_tool("list_links", {"search": slug}))
        assert [link["id"] for link in listed["data"]] == [created["id"]] and listed["total"] == 1

        assert data(await session.call_tool("delete_link", {"id": created["id"]})) == {"id": created["id"]}
        gone = error(await session.call_tool("get_link", {"id": created["id"]}))
    assert gone["code"] == "NOT_FOUND"


async def test_key_without_write_scope_can_read_but_not_create(
    transport: str, ctx: ServiceContext, workspace: Workspace, settings: Settings, api_server: ApiServer
) -> None:
    key = await new_key(ctx, workspace, ["links:read"])
    async with mcp_session(transport, key, settings, api_server) as session:
        denied = error(await session.call_tool("create_link", {"url": "https://example.com/x"}))
        listed = data(await session.call_tool("list_links", {}))
    assert denied["code"] == "ACTION_NOT_ALLOWED" and "links:write" in denied["message"]
    assert listed["total"] == 0  # and nothing was written


async def test_invalid_arguments_are_validation_errors_with_field_paths(
    transport: str, ctx: ServiceContext, workspace: Workspace, settings: Settings, api_server: ApiServer
) -> None:
    key = await new_key(ctx, workspace)
    async with mcp_session(transport, key, settings, api_server) as session:
        wrong_type = error(await session.call_tool("create_link", {"url": 42}))
        unknown_field = error(await session.call_tool("create_link", {"url": "https://example.com", "colour": "red"}))
        unsafe = error(await session.call_tool("create_link", {"url": "javascript:alert(1)"}))
        bad_rule = error(
            await session.call_tool(
                "create_link",
                {"url": "https://example.com", "rules": [{"conditions": [{"type": "planet"}], "url": "https://x.org"}]},
            )
        )
        no_target = error(await session.call_tool("get_link", {}))
        too_many = error(await session.call_tool("list_links", {"limit": 51}))
    for err in (wrong_type, unknown_field, unsafe, bad_rule, no_target, too_many):
        assert err["code"] == "VALIDATION_ERROR", err
    assert wrong_type["details"][0]["path"] == "url"
    assert "colour" in unknown_field["message"]
    assert unsafe["details"][0]["path"] == "url"
    assert bad_rule["details"][0]["path"].startswith("rules[0].conditions[0]")
    assert too_many["details"][0]["path"] == "limit"


async def test_nul_and_overlong_arguments_are_validation_errors_naming_the_argument(
    transport: str, ctx: ServiceContext, workspace: Workspace, settings: Settings, api_server: ApiServer
) -> None:
    # The routes refuse these (400 or 404) before any SQL; a NUL reaching Postgres was an internal error.
    key = await new_key(ctx, workspace)
    async with mcp_session(transport, key, settings, api_server) as session:
        calls = [
            ("get_link", {"id": "link_\x00x"}, "id"),
            ("get_link", {"slug": "spring\x00"}, "slug"),
            ("delete_link", {"id": "\x00"}, "id"),
            ("update_link", {"id": "link_\x00", "title": "x"}, "id"),
            ("get_analytics", {"utm_source": "news\x00letter"}, "utm_source"),
            ("get_analytics", {"linkId": "l" * 2049}, "linkId"),
            ("get_link", {"id": "l" * 101}, "id"),
        ]
        results = [(error(await session.call_tool(name, args)), path) for name, args, path in calls]
    for err, path in results:
        assert err["code"] == "VALIDATION_ERROR", err
        assert err["details"][0]["path"] == path, err


async def test_unknown_ids_are_not_found(
    transport: str, ctx: ServiceContext, workspace: Workspace, settings: Settings, api_server: ApiServer
) -> None:
    key = await new_key(ctx, workspace)
    missing = "link_00000000000000000000000000"
    async with mcp_session(transport, key, settings, api_server) as session:
        results = [
            await session.call_tool("get_link", {"id": missing}),
            await session.call_tool("get_link", {"slug": "no-such-slug-anywhere"}),
            await session.call_tool("update_link", {"id": missing, "title": "x"}),
            await session.call_tool("delete_link", {"id": missing}),
        ]
    assert [error(r)["code"] for r in results] == ["NOT_FOUND"] * 4


async def test_bulk_create_reports_each_item_and_writes_the_good_ones(
    transport: str, ctx: ServiceContext, workspace: Workspace, settings: Settings, api_server: ApiServer
) -> None:
    key = await new_key(ctx, workspace)
    slug = f"mcp-{transport}-bulk"
    async with mcp_session(transport, key, settings, api_server) as session:
        result = data(
            await session.call_tool(
                "bulk_create_links",
                {
                    "links": [
                        {"url": "https://example.com/a", "slug": slug},
                        {"url": "https://example.com/b", "slug": slug},
                    ]
                },
            )
        )
        listed = data(await session.call_tool("list_links", {}))
    first, second = result["data"]
    assert first["slug"] == slug and second["error"]["code"] == "ALREADY_EXIST"
    assert result["created"] == 1 and listed["total"] == 1


async def test_plan_limits_tools_like_routes_feature_outside_plan_is_refused(
    transport: str, ctx: ServiceContext, workspace: Workspace, settings: Settings, api_server: ApiServer
) -> None:
    await set_plan(ctx, workspace.id, "free")  # no routing rules on the free plan
    key = await new_key(ctx, workspace)
    rule = {"conditions": [{"type": "os", "value": "iOS"}], "url": "https://apps.apple.com/app/id1"}
    async with mcp_session(transport, key, settings, api_server) as session:
        await past_the_handshake(session)
        refused = error(await session.call_tool("create_link", {"url": "https://example.com", "rules": [rule]}))
    assert refused["code"] == "FEATURE_NOT_AVAILABLE"


async def test_a_link_made_over_mcp_redirects_on_the_edge_and_follows_updates(
    transport: str,
    ctx: ServiceContext,
    workspace: Workspace,
    settings: Settings,
    api_server: ApiServer,
    edge_server: UvicornThread,
) -> None:
    key = await new_key(ctx, workspace)
    slug = f"mcp-{transport}-edge"
    host = {"host": settings.default_domain}
    async with (
        mcp_session(transport, key, settings, api_server) as session,
        httpx2.AsyncClient(base_url=edge_server.base_url, headers=host, timeout=10) as edge,
    ):
        link = data(await session.call_tool("create_link", {"url": "https://example.com/first", "slug": slug}))
        first = await edge.get(f"/{slug}")
        data(await session.call_tool("update_link", {"id": link["id"], "url": "https://example.com/second"}))
        second = await poll_location(edge, slug, "https://example.com/second")
        data(await session.call_tool("delete_link", {"id": link["id"]}))
        gone = await edge.get(f"/{slug}")
    assert first.status_code == 302 and first.headers["location"] == "https://example.com/first"
    assert second == "https://example.com/second"
    assert gone.status_code == 404


async def poll_location(edge: httpx2.AsyncClient, slug: str, expected: str, within_s: float = 1.0) -> str | None:
    """The edge's Location for ``slug`` once it is ``expected``, or the last one seen after ``within_s``."""
    deadline = asyncio.get_running_loop().time() + within_s
    location = None
    while True:
        location = (await edge.get(f"/{slug}")).headers.get("location")
        if location == expected or asyncio.get_running_loop().time() > deadline:
            return location
        await asyncio.sleep(0.02)


async def past_the_handshake(session: ClientSession) -> None:
    """List the tools (the client caches them) and wait for a new one-second window: the handshake
    and the listing are charged like any request, and a 2/s plan spends a second on each."""
    await asyncio.sleep(1 - time.time() % 1 + 0.02)
    await session.list_tools()
    await asyncio.sleep(1 - time.time() % 1 + 0.02)


async def test_tool_calls_count_against_the_keys_rate_limit(
    transport: str, ctx: ServiceContext, workspace: Workspace, settings: Settings, api_server: ApiServer
) -> None:
    await set_plan(ctx, workspace.id, "free")  # 2 requests per second
    key = await new_key(ctx, workspace)
    async with mcp_session(transport, key, settings, api_server) as session:
        await past_the_handshake(session)
        results = [await session.call_tool("list_links", {}) for _ in range(5)]
    assert not results[0].is_error and not results[1].is_error
    refused = [error(r) for r in results if r.is_error]
    # five calls take well under a second, so they span at most two one-second windows
    assert refused and all(e["code"] == "RATE_LIMITED" and e["retryAfter"] >= 1 for e in refused)


async def test_unknown_tool_is_a_protocol_error_naming_the_tool(
    transport: str, ctx: ServiceContext, workspace: Workspace, settings: Settings, api_server: ApiServer
) -> None:
    key = await new_key(ctx, workspace)
    async with mcp_session(transport, key, settings, api_server) as session:
        with pytest.raises(MCPError) as raised:
            await session.call_tool("launch_rocket", {})
    assert raised.value.error.code == types.INVALID_PARAMS and "launch_rocket" in raised.value.error.message
