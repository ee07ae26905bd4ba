"""QR codes for a workspace: logos come from its own files, links encode their short URL with the marker."""

from __future__ import annotations

import dataclasses

import pytest

from api.errors import NotFound, ValidationFailed
from api.schemas import LinkCreate
from api.services import files, qr
from api.services.context import ServiceContext
from api.services.links import create_link
from api.services.workspaces import Workspace, get_or_create_workspace
from tests.api.qr_decode import decode, sample_logo

URL = "https://example.com/spring-sale"


@pytest.mark.parametrize("fmt", ["png", "svg"])
async def test_code_with_an_uploaded_logo_scans_and_changes_with_the_logo(
    ctx: ServiceContext, workspace: Workspace, fmt: str
) -> None:
    logo = await files.upload_file(ctx, workspace.id, sample_logo())
    options = qr.qr_options(URL, format=fmt, logo=logo.id, logo_size=25)
    image = await qr.generate_qr(ctx, workspace.id, options)
    assert decode(image.content, image.media_type) == [URL]
    other_logo = await files.upload_file(ctx, workspace.id, sample_logo("JPEG", (300, 120)))
    other = await qr.generate_qr(ctx, workspace.id, dataclasses.replace(options, logo=other_logo.id))
    assert decode(other.content, other.media_type) == [URL]
    assert other.etag != image.etag


async def test_etag_is_known_before_drawing_and_matches_the_drawn_image(
    ctx: ServiceContext, workspace: Workspace
) -> None:
    logo = await files.upload_file(ctx, workspace.id, sample_logo())
    options = qr.qr_options(URL, logo=logo.id)
    job = await qr.prepare_qr(ctx, workspace.id, options)
    assert job.etag == (await qr.generate_qr(ctx, workspace.id, options)).etag


async def test_logo_of_another_workspace_is_a_validation_error_on_logo(
    ctx: ServiceContext, workspace: Workspace
) -> None:
    logo = await files.upload_file(ctx, workspace.id, sample_logo())
    stranger = await get_or_create_workspace(ctx, f"qr-stranger-{workspace.id}")
    for missing in (logo.id, "file_01DOESNOTEXIST000000000000"):
        with pytest.raises(ValidationFailed) as caught:
            await qr.generate_qr(ctx, stranger.id, qr.qr_options(URL, logo=missing))
        assert caught.value.details and caught.value.details[0]["path"] == "logo"


async def test_deleted_logo_is_a_validation_error(ctx: ServiceContext, workspace: Workspace) -> None:
    logo = await files.upload_file(ctx, workspace.id, sample_logo())
    await files.delete_file(ctx, workspace.id, logo.id)
    with pytest.raises(ValidationFailed) as caught:
        await qr.generate_qr(ctx, workspace.id, qr.qr_options(URL, logo=logo.id))
    assert [d["path"] for d in caught.value.details or []] == ["logo"]


async def test_link_code_encodes_its_short_url_with_the_qr_marker(ctx: ServiceContext, workspace: Workspace) -> None:
    link = await create_link(ctx, workspace.id, LinkCreate(url=URL))
    data = await qr.link_qr_url(ctx, workspace.id, link.id)
    assert data == link.short_url + "?qr=1"
    image = await qr.generate_qr(ctx, workspace.id, qr.qr_options(data, format="svg"))
    assert decode(image.content, image.media_type) == [data]


async def test_link_of_another_workspace_is_not_found(ctx: ServiceContext, workspace: Workspace) -> None:
    link = await create_link(ctx, workspace.id, LinkCreate(url=URL))
    stranger = await get_or_create_workspace(ctx, f"qr-link-stranger-{workspace.id}")
    with pytest.raises(NotFound):
        await qr.link_qr_url(ctx, stranger.id, link.id)
