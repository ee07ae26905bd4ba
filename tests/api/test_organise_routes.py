"""Folders, tags, API keys and the workspace over HTTP."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette

from api.services.context import ServiceContext
from api.services.keys import create_key
from api.services.workspaces import Workspace
from tests.api.conftest import client_for


async def test_folders_crud_with_unique_names(api: httpx.AsyncClient) -> None:
    r = await api.post("/folders", json={"name": "Campaigns"})
    assert r.status_code == 201
    folder = r.json()
    assert (await api.post("/folders", json={"name": "Campaigns"})).status_code == 409
    link = (await api.post("/links", json={"url": "https://example.com/", "folderId": folder["id"]})).json()
    assert (await api.get(f"/folders/{folder['id']}")).json()["links"] == 1
    renamed = await api.patch(f"/folders/{folder['id']}", json={"name": "Old campaigns"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "Old campaigns"
    assert (await api.get("/folders")).json()["total"] == 1
    assert (await api.delete(f"/folders/{folder['id']}")).status_code == 200
    assert (await api.get(f"/links/{link['id']}")).json()["folderId"] is None  # the link stays
    assert (await api.get(f"/folders/{folder['id']}")).status_code == 404


async def test_a_folder_name_is_unique_per_workspace_only(
    api: httpx.AsyncClient, api_app: Starlette, ctx: ServiceContext, workspace: Workspace
) -> None:
    from api.services.workspaces import get_or_create_workspace

    other = await get_or_create_workspace(ctx, workspace.name + "-b")
    _, secret = await create_key(ctx, other.id, "b", None)
    assert (await api.post("/folders", json={"name": "Shared name"})).status_code == 201
    async with client_for(api_app, secret) as client:
        assert (await client.post("/folders", json={"name": "Shared name"})).status_code == 201


async def test_deleting_a_tag_detaches_it_from_links(api: httpx.AsyncClient) -> None:
    a = (await api.post("/tags", json={"name": "a", "color": "red"})).json()
    b = (await api.post("/tags", json={"name": "b"})).json()
    assert b["color"] == "gray"
    assert (await api.post("/tags", json={"name": "a"})).status_code == 409
    assert (await api.post("/tags", json={"name": "c", "color": "chartreuse"})).status_code == 400
    link = (await api.post("/links", json={"url": "https://example.com/", "tagIds": [a["id"], b["id"]]})).json()
    assert sorted(link["tagIds"]) == sorted([a["id"], b["id"]])
    assert (await api.get(f"/tags/{a['id']}")).json()["links"] == 1
    assert (await api.patch(f"/tags/{a['id']}", json={"name": "b"})).status_code == 409
    assert (await api.patch(f"/tags/{a['id']}", json={"color": "green"})).json()["color"] == "green"
    assert (await api.delete(f"/tags/{a['id']}")).status_code == 200
    assert (await api.get(f"/links/{link['id']}")).json()["tagIds"] == [b["id"]]
    assert (await api.get("/tags")).json()["total"] == 1


async def test_a_new_key_is_shown_once_and_revocation_is_immediate(api: httpx.AsyncClient, api_app: Starlette) -> None:
    r = await api.post("/keys", json={"name": "zapier", "scopes": ["links:read"]})
    assert r.status_code == 201
    created = r.json()
    assert created["key"].startswith("h0p_") and created["hint"] == created["key"][-4:]
    listed = (await api.get("/keys")).json()
    assert listed["total"] == 2 and listed["page"] == 0 and listed["limit"] == 10
    assert created["id"] in [k["id"] for k in listed["data"]] and all("key" not in k for k in listed["data"])
    async with client_for(api_app, created["key"]) as client:
        assert (await client.get("/links")).status_code == 200
        assert [k for k in (await api.get("/keys")).json()["data"] if k["id"] == created["id"]][0]["lastUsedAt"]
        assert (await api.delete(f"/keys/{created['id']}")).status_code == 200
        assert (await client.get("/links")).status_code == 401


async def test_a_key_cannot_grant_scopes_it_does_not_have(
    api_app: Starlette, ctx: ServiceContext, workspace: Workspace
) -> None:
    _, secret = await create_key(ctx, workspace.id, "limited", ["keys:write", "links:read"])
    async with client_for(api_app, secret) as client:
        r = await client.post("/keys", json={"name": "escalate", "scopes": ["domains:write"]})
        assert r.status_code == 403 and r.json()["error"]["code"] == "ACTION_NOT_ALLOWED"
        r = await client.post("/keys", json={"name": "same", "scopes": ["links:read"]})
        assert r.status_code == 201
        r = await client.post("/keys", json={"name": "bad", "scopes": ["links:everything"]})
        assert r.status_code == 400


async def test_workspace_shows_plan_and_usage(api: httpx.AsyncClient, workspace: Workspace) -> None:
    await api.post("/links", json={"url": "https://example.com/"})
    await api.post("/tags", json={"name": "t"})
    r = await api.get("/workspace")
    assert r.status_code == 200
    info = r.json()
    assert info["id"] == workspace.id and info["plan"]["name"] == "self-hosted"
    assert info["plan"]["linksPerMonth"] is None and "custom_domains" in info["plan"]["features"]
    assert info["usage"] == {"links": 1, "linksThisMonth": 1, "domains": 0, "keys": 1, "folders": 0, "tags": 1}
