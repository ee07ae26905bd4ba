"""Looking a link up by domain and slug finds only the caller's own: over the routes and over MCP."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from api.services.context import ServiceContext
from api.services.keys import create_key
from api.services.workspaces import Workspace, get_or_create_workspace
from h0p_settings import Settings
from tests.api import mcp_harness
from tests.api.conftest import client_for
from tests.api.mcp_harness import ApiServer, data, error, mcp_session, new_key

# The harness's fixtures, used in this module by name.
api_server = mcp_harness.api_server
transport = mcp_harness.transport


@pytest.fixture
async def other(ctx: ServiceContext) -> Workspace:
    return await get_or_create_workspace(ctx, f"isolation-{secrets.token_hex(6)}")


@pytest.fixture
async def other_api(api_app: Starlette, ctx: ServiceContext, other: Workspace) -> AsyncIterator[httpx.AsyncClient]:
    _, secret = await create_key(ctx, other.id, "test", None)
    async with client_for(api_app, secret) as client:
        yield client


async def test_links_info_does_not_find_another_workspaces_slug(
    api: httpx.AsyncClient, other_api: httpx.AsyncClient
) -> None:
    slug = f"mine-{secrets.token_hex(4)}"
    made = await api.post("/links", json={"url": "https://example.com/private", "slug": slug})
    assert made.status_code == 201, made.text

    assert (await api.get("/links/info", params={"slug": slug})).json()["id"] == made.json()["id"]
    theirs = await other_api.get("/links/info", params={"slug": slug})
    assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "NOT_FOUND"
    listed = await other_api.get("/links", params={"search": slug})
    assert listed.json()["total"] == 0


async def test_links_info_on_a_shared_custom_domain_does_not_find_another_workspaces_slug(
    api: httpx.AsyncClient, other_api: httpx.AsyncClient
) -> None:
    host = f"shared-{secrets.token_hex(4)}.example.com"
    for client in (api, other_api):  # two pending claims on one host
        assert (await client.post("/domains", json={"domain": host})).status_code == 201
    made = await api.post("/links", json={"url": "https://example.com/", "domain": host, "slug": "x"})
    assert made.status_code == 201, made.text

    theirs = await other_api.get("/links/info", params={"domain": host, "slug": "x"})
    assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "NOT_FOUND"
    assert (await other_api.get("/links", params={"domain": host})).json()["total"] == 0
    assert (await api.get("/links", params={"domain": host})).json()["total"] == 1


async def test_mcp_get_link_by_slug_does_not_find_another_workspaces_link(
    transport: str,
    ctx: ServiceContext,
    workspace: Workspace,
    other: Workspace,
    settings: Settings,
    api_server: ApiServer,
) -> None:
    slug = f"mcp-mine-{transport}-{secrets.token_hex(4)}"
    async with mcp_session(transport, await new_key(ctx, workspace), settings, api_server) as session:
        made = data(await session.call_tool("create_link", {"url": "https://example.com/private", "slug": slug}))
        assert data(await session.call_tool("get_link", {"slug": slug}))["id"] == made["id"]
    async with mcp_session(transport, await new_key(ctx, other), settings, api_server) as session:
        theirs = error(await session.call_tool("get_link", {"slug": slug}))
    assert theirs["code"] == "NOT_FOUND"
