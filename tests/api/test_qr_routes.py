"""QR codes over HTTP: what a client gets scans, revalidation is a 304, bad input is a 400 with nothing drawn."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette

from api.services.context import ServiceContext
from api.services.keys import create_key
from api.services.workspaces import Workspace, get_or_create_workspace
from tests.api.conftest import client_for
from tests.api.qr_decode import decode, sample_logo

URL = "https://example.com/spring-sale?utm_source=poster"


def error_of(r: httpx.Response) -> tuple[int, str, list[str | None]]:
    body = r.json()["error"]
    return r.status_code, body["code"], [d.get("path") for d in body.get("details") or []]


def scanned(r: httpx.Response) -> list[str]:
    assert r.status_code == 200, r.text
    return decode(r.content, r.headers["content-type"])


@pytest.mark.parametrize("fmt", ["png", "svg"])
async def test_qr_for_a_url_scans_as_that_url(api: httpx.AsyncClient, fmt: str) -> None:
    r = await api.get("/qr", params={"url": URL, "format": fmt, "size": "400", "fgColor": "#1a3d8f"})
    assert r.headers["content-type"] == {"png": "image/png", "svg": "image/svg+xml"}[fmt]
    assert scanned(r) == [URL]


async def test_link_qr_encodes_the_short_url_with_the_scan_marker(api: httpx.AsyncClient) -> None:
    link = (await api.post("/links", json={"url": "https://example.com/landing"})).json()
    expected = link["shortUrl"] + "?qr=1"
    assert scanned(await api.get(f"/links/{link['id']}/qr")) == [expected]
    assert scanned(await api.get("/qr", params={"linkId": link["id"], "format": "svg"})) == [expected]


@pytest.mark.parametrize("fmt", ["png", "svg"])
async def test_qr_with_an_uploaded_logo_scans(api: httpx.AsyncClient, fmt: str) -> None:
    logo = (await api.post("/files", files={"file": ("logo.png", sample_logo(), "image/png")})).json()
    r = await api.get("/qr", params={"url": URL, "format": fmt, "logo": logo["id"], "logoSize": "25"})
    assert scanned(r) == [URL]


async def test_etag_revalidation_answers_304_without_a_body(api: httpx.AsyncClient) -> None:
    first = await api.get("/qr", params={"url": URL})
    etag = first.headers["etag"]
    assert first.headers["cache-control"].startswith("private")
    again = await api.get("/qr", params={"url": URL}, headers={"if-none-match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    other = await api.get("/qr", params={"url": URL, "size": "513"}, headers={"if-none-match": etag})
    assert other.status_code == 200 and other.headers["etag"] != etag


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"url": URL, "fgColor": "red"}, "fgColor"),
        ({"url": URL, "bgColor": "#12"}, "bgColor"),
        ({"url": URL, "size": "5000"}, "size"),
        ({"url": URL, "size": "ten"}, "size"),
        ({"url": URL, "margin": "1"}, "margin"),
        ({"url": URL, "level": "Z"}, "level"),
        ({"url": URL, "format": "jpg"}, "format"),
        ({"url": URL, "logoSize": "40"}, "logoSize"),
        ({"url": URL, "fgColor": "#ffffff", "bgColor": "#000000"}, "fgColor"),
        ({"url": URL, "logo": "file_01NOTMINE0000000000000000"}, "logo"),
        ({"url": "javascript:alert(1)"}, "url"),
        ({}, "url"),
        ({"url": URL, "linkId": "link_x"}, "url"),
        ({"url": URL, "dpi": "300"}, "dpi"),
    ],
)
async def test_bad_input_is_400_validation_error_naming_the_parameter(
    api: httpx.AsyncClient, params: dict[str, str], path: str
) -> None:
    r = await api.get("/qr", params=params)
    assert r.headers["content-type"] == "application/json"
    assert error_of(r) == (400, "VALIDATION_ERROR", [path])


async def test_logo_of_another_workspace_is_a_validation_error(
    api: httpx.AsyncClient, api_app: Starlette, ctx: ServiceContext
) -> None:
    other = await get_or_create_workspace(ctx, "qr-routes-other")
    _, secret = await create_key(ctx, other.id, "other", None)
    async with client_for(api_app, secret) as stranger:
        theirs = (await stranger.post("/files", files={"file": ("l.png", sample_logo(), "image/png")})).json()
    assert error_of(await api.get("/qr", params={"url": URL, "logo": theirs["id"]})) == (
        400,
        "VALIDATION_ERROR",
        ["logo"],
    )


async def test_unknown_link_is_404(api: httpx.AsyncClient) -> None:
    assert error_of(await api.get("/links/link_01NOPE00000000000000000000/qr"))[:2] == (404, "NOT_FOUND")
    assert error_of(await api.get("/qr", params={"linkId": "link_01NOPE00000000000000000000"}))[:2] == (
        404,
        "NOT_FOUND",
    )
    assert error_of(await api.get("/links/link_x/qr", params={"url": URL})) == (400, "VALIDATION_ERROR", ["url"])


async def test_auth_and_scopes(api_app: Starlette, ctx: ServiceContext, workspace: Workspace) -> None:
    _, links_reader = await create_key(ctx, workspace.id, "links", ["links:read"])
    _, files_only = await create_key(ctx, workspace.id, "files", ["files:write"])
    async with client_for(api_app, files_only) as f:
        logo = (await f.post("/files", files={"file": ("l.png", sample_logo(), "image/png")})).json()
        assert error_of(await f.get("/qr", params={"url": URL}))[:2] == (403, "ACTION_NOT_ALLOWED")
    async with client_for(api_app, links_reader) as r:
        assert scanned(await r.get("/qr", params={"url": URL})) == [URL]
        # a logo is read from the workspace's files: that needs files:read as well
        assert error_of(await r.get("/qr", params={"url": URL, "logo": logo["id"]}))[:2] == (403, "ACTION_NOT_ALLOWED")
    async with client_for(api_app, None) as anonymous:
        assert error_of(await anonymous.get("/qr", params={"url": URL}))[:2] == (401, "UNAUTHORIZED")
    async with client_for(api_app, "h0p_not-a-real-key") as wrong:
        assert error_of(await wrong.get("/links/link_x/qr"))[:2] == (401, "UNAUTHORIZED")


def test_raw_routes_describe_themselves_for_the_openapi_document() -> None:
    from api.routes import files, qr

    paths = {**files.OPENAPI_PATHS, **qr.OPENAPI_PATHS}
    assert set(paths) == {"/files", "/files/{id}/content", "/qr", "/links/{id}/qr"}
    qr_params = {p["name"]: p for p in paths["/qr"]["get"]["parameters"]}
    assert qr_params["margin"]["schema"]["minimum"] == 4
    assert set(paths["/qr"]["get"]["responses"]["200"]["content"]) == {"image/png", "image/svg+xml"}
    assert "multipart/form-data" in paths["/files"]["post"]["requestBody"]["content"]


async def test_doc_lists_qr_and_file_content_routes(api: httpx.AsyncClient) -> None:
    doc = (await api.get("/doc")).json()
    assert {"/qr", "/links/{id}/qr", "/files/{id}/content"} <= set(doc["paths"])
    assert "post" in doc["paths"]["/files"]


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/qr", {"linkId": "link_\x00x"}, 400),
        ("/qr", {"url": URL, "logo": "file_\x00x"}, 400),
        ("/links/link_%00x/qr", {}, 404),
        ("/links/" + "x" * 101 + "/qr", {}, 404),
        ("/files/file_%00x/content", {}, 404),
        ("/files/file_%00x/content", {"sig": "0" * 32}, 404),
    ],
)
async def test_nul_characters_and_overlong_ids_are_refused_not_a_500(
    api: httpx.AsyncClient, path: str, params: dict[str, str], status: int
) -> None:
    assert (await api.get(path, params=params)).status_code == status
