"""A link whose preview image is an uploaded file: fetchers get the card, and can load the image."""

from __future__ import annotations

import dataclasses
import html
import io
import re
import uuid
from collections.abc import AsyncIterator

import httpx
import msgspec
import pytest
from PIL import Image

from api.app import create_app as create_api
from api.errors import ValidationFailed
from api.schemas import LinkCreate
from api.services import files, links
from api.services.context import ServiceContext, close_context, open_context
from api.services.workspaces import get_or_create_workspace
from h0p_settings import Settings
from redirect.app import create_app as create_edge

SLACK = "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


@pytest.fixture
async def ctx(settings: Settings) -> AsyncIterator[ServiceContext]:
    c = await open_context(dataclasses.replace(settings, api_public_url="http://api.test"))
    yield c
    await close_context(c)


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (120, 63), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


async def test_an_uploaded_preview_image_is_served_to_fetchers_without_a_key(ctx: ServiceContext) -> None:
    workspace = await get_or_create_workspace(ctx, f"preview-{uuid.uuid4().hex[:8]}")
    image = await files.upload_file(ctx, workspace.id, _png(), "card.png")
    slug = f"card-{uuid.uuid4().hex[:6]}"
    data = msgspec.convert(
        {"url": "https://example.com/launch", "slug": slug, "ogTitle": "Launch <day>", "ogImage": image.id},
        LinkCreate,
    )
    link = await links.create_link(ctx, workspace.id, data)
    assert link.og_image is not None and link.og_image.startswith("http://api.test/files/")

    edge_app = create_edge(ctx.settings)
    await edge_app.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=edge_app), base_url="http://localhost") as edge:
            card = await edge.get(f"/{slug}", headers={"user-agent": SLACK})
            person = await edge.get(f"/{slug}", headers={"user-agent": FIREFOX})
    finally:
        await edge_app.stop()
    assert person.status_code == 302 and person.headers["location"] == "https://example.com/launch"
    assert card.status_code == 200
    assert "Launch &lt;day&gt;" in card.text  # escaped, never raw markup
    found = re.search(r'<meta property="og:image" content="([^"]+)"', card.text)
    assert found is not None
    image_url = html.unescape(found.group(1))
    assert image_url == link.og_image

    api_app = create_api(ctx.settings)
    async with (
        api_app.router.lifespan_context(api_app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=api_app), base_url="http://api.test") as anonymous,
    ):
        fetched = await anonymous.get(image_url.removeprefix("http://api.test"))
        assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(fetched.content)).size == (120, 63)


async def test_a_preview_image_must_be_a_file_of_the_same_workspace(ctx: ServiceContext) -> None:
    owner = await get_or_create_workspace(ctx, f"owner-{uuid.uuid4().hex[:8]}")
    other = await get_or_create_workspace(ctx, f"other-{uuid.uuid4().hex[:8]}")
    image = await files.upload_file(ctx, owner.id, _png())
    data = msgspec.convert({"url": "https://example.com/", "ogImage": image.id}, LinkCreate)
    with pytest.raises(ValidationFailed) as info:
        await links.create_link(ctx, other.id, data)
    assert info.value.details == [{"path": "ogImage", "message": f"no uploaded file {image.id!r} in this workspace"}]
