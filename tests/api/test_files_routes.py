"""Files over HTTP: multipart upload, list, metadata, content (keyed or public), delete; auth and scopes."""

from __future__ import annotations

import dataclasses
import io

import httpx
import pytest
from PIL import Image
from starlette.applications import Starlette

from api.app import create_app
from api.services.context import ServiceContext
from api.services.keys import create_key
from api.services.workspaces import Workspace, get_or_create_workspace, set_plan
from h0p_settings import Settings
from tests.api.conftest import client_for


def png(color: tuple[int, int, int] = (20, 140, 60), size: tuple[int, int] = (32, 24)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


async def upload(
    client: httpx.AsyncClient, data: bytes, name: str = "logo.png", ctype: str = "image/png"
) -> httpx.Response:
    return await client.post("/files", files={"file": (name, data, ctype)})


def error_of(r: httpx.Response) -> tuple[int, str, list[str | None]]:
    body = r.json()["error"]
    return r.status_code, body["code"], [d.get("path") for d in body.get("details") or []]


async def test_upload_then_read_list_download_and_delete(api: httpx.AsyncClient) -> None:
    r = await upload(api, png(), name="brand.png", ctype="application/octet-stream")
    assert r.status_code == 201
    created = r.json()
    assert created["id"].startswith("file_")
    assert (created["name"], created["contentType"], created["width"], created["height"]) == (
        "brand.png",
        "image/png",
        32,
        24,
    )
    assert (await api.get(f"/files/{created['id']}")).json() == created
    listed = (await api.get("/files")).json()
    assert (listed["total"], listed["page"], listed["limit"]) == (1, 0, 10)
    assert listed["data"] == [created]
    content = await api.get(f"/files/{created['id']}/content")
    assert content.status_code == 200 and content.headers["content-type"] == "image/png"
    assert content.headers["etag"] == f'"{created["sha256"]}"'
    assert content.headers["x-content-type-options"] == "nosniff"
    with Image.open(io.BytesIO(content.content)) as im:
        assert im.size == (32, 24)
    again = await api.get(f"/files/{created['id']}/content", headers={"if-none-match": content.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    deleted = await api.delete(f"/files/{created['id']}")
    assert deleted.status_code == 200 and deleted.json() == {"id": created["id"]}
    assert error_of(await api.get(f"/files/{created['id']}"))[:2] == (404, "NOT_FOUND")
    assert (await api.get(f"/files/{created['id']}/content")).status_code == 404


async def test_public_url_serves_the_image_without_a_key_and_only_with_the_right_signature(
    api: httpx.AsyncClient, api_app: Starlette
) -> None:
    created = (await upload(api, png())).json()
    path = created["url"].split("://", 1)[1].split("/", 1)[1]
    async with client_for(api_app, None) as anonymous:
        r = await anonymous.get("/" + path)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert "immutable" in r.headers["cache-control"] and "public" in r.headers["cache-control"]
        assert (await anonymous.get("/" + path, headers={"if-none-match": r.headers["etag"]})).status_code == 304
        forged = await anonymous.get(f"/files/{created['id']}/content?sig=" + "0" * 32)
        assert error_of(forged)[:2] == (404, "NOT_FOUND")
        keyless = await anonymous.get(f"/files/{created['id']}/content")
        assert error_of(keyless)[:2] == (401, "UNAUTHORIZED")
        assert error_of(await anonymous.get("/files"))[:2] == (401, "UNAUTHORIZED")
    await api.delete(f"/files/{created['id']}")
    async with client_for(api_app, None) as anonymous:
        assert (await anonymous.get("/" + path)).status_code == 404


@pytest.mark.parametrize(
    ("data", "name", "ctype"),
    [
        (b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>", "x.svg", "image/svg+xml"),
        (b"MZ\x90\x00 definitely a program", "logo.png", "image/png"),
        (b"", "empty.png", "image/png"),
    ],
    ids=["svg", "exe-named-png", "empty"],
)
async def test_upload_of_a_non_image_is_a_validation_error_and_stores_nothing(
    api: httpx.AsyncClient, data: bytes, name: str, ctype: str
) -> None:
    assert error_of(await upload(api, data, name, ctype)) == (400, "VALIDATION_ERROR", ["file"])
    assert (await api.get("/files")).json()["total"] == 0


async def test_upload_must_be_multipart_with_a_file_field(api: httpx.AsyncClient) -> None:
    assert error_of(await api.post("/files", json={"file": "aGVsbG8="}))[:2] == (400, "VALIDATION_ERROR")
    r = await api.post("/files", data={"name": "no file here"}, files={"other": ("a.png", png(), "image/png")})
    assert error_of(r) == (400, "VALIDATION_ERROR", ["file"])


async def test_oversized_upload_is_refused_before_it_is_decoded(api: httpx.AsyncClient, api_settings: Settings) -> None:
    too_big = b"\x89PNG\r\n\x1a\n" + b"\0" * (api_settings.file_max_bytes + 100 * 1024)
    r = await upload(api, too_big)
    assert error_of(r) == (400, "VALIDATION_ERROR", ["file"])
    assert "larger than" in r.json()["error"]["message"]


async def test_list_limit_above_50_is_a_validation_error(api: httpx.AsyncClient) -> None:
    assert error_of(await api.get("/files?limit=51"))[:2] == (400, "VALIDATION_ERROR")
    assert (await api.get("/files?limit=50&page=3")).json() == {"data": [], "page": 3, "limit": 50, "total": 0}


async def test_scopes_read_and_write_are_enforced(
    api_app: Starlette, ctx: ServiceContext, workspace: Workspace
) -> None:
    _, reader = await create_key(ctx, workspace.id, "reader", ["files:read"])
    _, links_only = await create_key(ctx, workspace.id, "links", ["links:write"])
    _, writer = await create_key(ctx, workspace.id, "writer", ["files:write"])
    async with client_for(api_app, writer) as w:
        created = (await upload(w, png())).json()
        assert (await w.get(f"/files/{created['id']}")).status_code == 200  # write includes read
    async with client_for(api_app, reader) as r:
        assert error_of(await upload(r, png())) == (403, "ACTION_NOT_ALLOWED", [])
        assert error_of(await r.delete(f"/files/{created['id']}"))[:2] == (403, "ACTION_NOT_ALLOWED")
        assert (await r.get(f"/files/{created['id']}/content")).status_code == 200
    async with client_for(api_app, links_only) as x:
        for response in (await x.get("/files"), await x.get(f"/files/{created['id']}/content"), await upload(x, png())):
            assert error_of(response)[:2] == (403, "ACTION_NOT_ALLOWED")


async def test_another_workspace_gets_404_for_my_file(
    api: httpx.AsyncClient, api_app: Starlette, ctx: ServiceContext
) -> None:
    created = (await upload(api, png())).json()
    other = await get_or_create_workspace(ctx, "files-routes-other")
    _, secret = await create_key(ctx, other.id, "other", None)
    async with client_for(api_app, secret) as stranger:
        for r in (
            await stranger.get(f"/files/{created['id']}"),
            await stranger.get(f"/files/{created['id']}/content"),
            await stranger.delete(f"/files/{created['id']}"),
        ):
            assert error_of(r)[:2] == (404, "NOT_FOUND")


async def test_plan_without_files_gets_feature_not_available(
    api: httpx.AsyncClient, ctx: ServiceContext, workspace: Workspace
) -> None:
    await set_plan(ctx, workspace.id, "free")
    assert error_of(await upload(api, png()))[:2] == (403, "FEATURE_NOT_AVAILABLE")


async def test_upload_past_the_quota_is_plan_limit_reached(
    api_settings: Settings, ctx: ServiceContext, workspace: Workspace
) -> None:
    app = create_app(dataclasses.replace(api_settings, file_quota_bytes=len(png()) + 10))
    _, secret = await create_key(ctx, workspace.id, "quota", None)
    async with app.router.lifespan_context(app), client_for(app, secret) as client:
        assert (await upload(client, png())).status_code == 201
        r = await upload(client, png((200, 10, 10)))
        assert error_of(r)[:2] == (403, "PLAN_LIMIT_REACHED")
        assert (await client.get("/files")).json()["total"] == 1
