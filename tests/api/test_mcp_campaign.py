"""An agent running a campaign from tool calls alone: tags, folders, domains, links, QR codes."""

from __future__ import annotations

import asyncio
import base64

import httpx2
import mcp_types as types
import pytest
from mcp import ClientSession

from api.schemas import DomainCreate
from api.services import domains
from api.services.context import ServiceContext
from api.services.qr import with_qr_marker
from api.services.workspaces import Workspace
from h0p_settings import Settings
from ingest.consumer import running_consumer
from tests.api import mcp_harness
from tests.api.mcp_harness import ApiServer, UvicornThread, data, error, mcp_session, new_key
from tests.api.qr_decode import decode

# The harness's fixtures, used in this module by name.
api_server = mcp_harness.api_server
edge_server = mcp_harness.edge_server
transport = mcp_harness.transport


async def test_qr_code_of_a_link_is_a_png_image_that_scans_to_its_short_url(
    transport: str, ctx: ServiceContext, workspace: Workspace, settings: Settings, api_server: ApiServer
) -> None:
    key = await new_key(ctx, workspace)
    async with mcp_session(transport, key, settings, api_server) as session:
        link = data(await session.call_tool("create_link", {"url": "https://example.com/qr"}))
        result = await session.call_tool("get_qr_code", {"linkId": link["id"], "size": 300, "fgColor": "#1a237e"})
        svg = await session.call_tool("get_qr_code", {"url": "https://example.com/poster", "format": "svg"})
        inverted = error(await session.call_tool("get_qr_code", {"linkId": link["id"], "fgColor": "#ffffff"}))
    assert not result.is_error
    image = result.content[0]
    assert isinstance(image, types.ImageContent) and image.mime_type == "image/png"
    assert decode(base64.b64decode(image.data), "image/png") == [with_qr_marker(link["shortUrl"])]
    markup = svg.content[0]
    assert isinstance(markup, types.TextContent) and markup.text.lstrip().startswith("<")
    assert decode(markup.text.encode(), "image/svg+xml") == ["https://example.com/poster"]
    assert inverted["code"] == "VALIDATION_ERROR" and inverted["details"][0]["path"] == "fgColor"


async def test_agent_tags_and_files_campaign_links_and_finds_them_again(
    transport: str, ctx: ServiceContext, workspace: Workspace, settings: Settings, api_server: ApiServer
) -> None:
    await domains.add_domain(ctx, workspace.id, DomainCreate(domain=f"go-{transport}.example.com"))
    key = await new_key(ctx, workspace)
    async with mcp_session(transport, key, settings, api_server) as session:
        tag = data(await session.call_tool("create_tag", {"name": "spring", "color": "green"}))
        folder = data(await session.call_tool("create_folder", {"name": "Spring campaign"}))
        link = data(
            await session.call_tool(
                "create_link",
                {
                    "url": "https://example.com/spring",
                    "tagIds": [tag["id"]],
                    "folderId": folder["id"],
                    "utm_source": "newsletter",
                    "utm_campaign": "spring",
                },
            )
        )
        data(await session.call_tool("create_link", {"url": "https://example.com/other"}))
        in_folder = data(await session.call_tool("list_links", {"folderId": folder["id"]}))
        tagged = data(await session.call_tool("list_links", {"tagIds": tag["id"]}))
        tag_list = data(await session.call_tool("list_tags", {}))
        folder_list = data(await session.call_tool("list_folders", {"limit": 50}))
        domain_list = data(await session.call_tool("list_domains", {}))
        duplicate = error(await session.call_tool("create_tag", {"name": "spring"}))
        bad_colour = error(await session.call_tool("create_tag", {"name": "autumn", "color": "mauve"}))
    assert link["tagIds"] == [tag["id"]] and link["folderId"] == folder["id"]
    assert [x["id"] for x in in_folder["data"]] == [link["id"]] == [x["id"] for x in tagged["data"]]
    assert [(t["name"], t["color"], t["links"]) for t in tag_list["data"]] == [("spring", "green", 1)]
    assert [(f["name"], f["links"]) for f in folder_list["data"]] == [("Spring campaign", 1)]
    assert [(d["domain"], d["verified"]) for d in domain_list["data"]] == [(f"go-{transport}.example.com", False)]
    assert duplicate["code"] == "ALREADY_EXIST"
    assert bad_colour["code"] == "VALIDATION_ERROR" and bad_colour["details"][0]["path"] == "color"


async def test_tag_folder_domain_and_logo_tools_need_their_routes_scopes(
    transport: str, ctx: ServiceContext, workspace: Workspace, settings: Settings, api_server: ApiServer
) -> None:
    key = await new_key(ctx, workspace, ["links:write", "tags:read", "folders:read"])
    async with mcp_session(transport, key, settings, api_server) as session:
        tag = error(await session.call_tool("create_tag", {"name": "x"}))
        folder = error(await session.call_tool("create_folder", {"name": "x"}))
        domains_denied = error(await session.call_tool("list_domains", {}))
        logo_denied = error(
            await session.call_tool("get_qr_code", {"url": "https://example.com", "logo": "file_0123456789abcdef"})
        )
        tags_listed = data(await session.call_tool("list_tags", {}))
    assert tag["code"] == folder["code"] == domains_denied["code"] == "ACTION_NOT_ALLOWED"
    assert logo_denied["code"] == "ACTION_NOT_ALLOWED" and "files:read" in logo_denied["message"]
    assert tags_listed["total"] == 0


IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
DESKTOP = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)


@pytest.mark.slow  # a consumer group join on the broker takes seconds
async def test_agent_reads_the_clicks_of_its_link_through_the_whole_pipeline(
    transport: str,
    ctx: ServiceContext,
    workspace: Workspace,
    settings: Settings,
    api_server: ApiServer,
    edge_server: UvicornThread,
) -> None:
    key = await new_key(ctx, workspace)
    async with (
        mcp_session(transport, key, settings, api_server) as session,
        httpx2.AsyncClient(base_url=edge_server.base_url, headers={"host": settings.default_domain}) as edge,
        running_consumer(settings),
    ):
        link = data(await session.call_tool("create_link", {"url": "https://example.com/a", "utm_campaign": "spring"}))
        for agent in (IPHONE, DESKTOP, DESKTOP):
            assert (await edge.get(f"/{link['slug']}", headers={"user-agent": agent})).status_code == 302
        assert (await edge.get(f"/{link['slug']}?qr=1", headers={"user-agent": IPHONE})).status_code == 302
        total = await poll_clicks(session, link["id"], expected=4)
        devices = data(await session.call_tool("get_analytics", {"groupBy": "devices", "linkId": link["id"]}))
        scans = data(await session.call_tool("get_analytics", {"linkId": link["id"], "qr": True, "interval": "1y"}))
        campaigns = data(await session.call_tool("get_analytics", {"groupBy": "utm_campaigns", "linkId": link["id"]}))
        bad = error(await session.call_tool("get_analytics", {"groupBy": "planets"}))
    assert total == 4
    assert devices["data"] == [{"device": "desktop", "clicks": 2}, {"device": "mobile", "clicks": 2}]  # ties by name
    assert scans == {"clicks": 1}
    assert campaigns["data"] == [{"utm_campaign": "spring", "clicks": 4}]
    assert bad["code"] == "VALIDATION_ERROR" and bad["details"][0]["path"] == "groupBy"


async def poll_clicks(session: ClientSession, link_id: str, expected: int, within_s: float = 30.0) -> int:
    """The link's click count once it reaches ``expected`` (ingest is asynchronous), or the last one seen."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        clicks = int(data(await session.call_tool("get_analytics", {"linkId": link_id}))["clicks"])
        if clicks >= expected or asyncio.get_running_loop().time() > deadline:
            return clicks
        await asyncio.sleep(0.2)
