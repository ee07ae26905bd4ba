"""Links over HTTP: status codes, error bodies, field names, lists, bulk and upsert."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from api.services import links as links_service
from api.services.context import ServiceContext
from api.services.keys import create_key
from api.services.workspaces import Workspace, set_plan
from tests.api.conftest import client_for


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    err: dict[str, Any] = body["error"]
    assert set(err) <= {"code", "message", "details"} and err["message"]
    return err


async def test_create_returns_201_with_the_link_in_camel_case(api: httpx.AsyncClient) -> None:
    r = await api.post("/links", json={"url": "https://example.com/a", "slug": "http-1", "utm_source": "mail"})
    assert r.status_code == 201
    link = r.json()
    assert link["slug"] == "http-1" and link["shortUrl"].endswith("/http-1")
    assert link["utm_source"] == "mail" and link["statusCode"] == 302 and link["forwardQuery"] is True
    assert link["id"].startswith("link_") and "password" not in link and link["passwordProtected"] is False
    assert r.headers["content-type"] == "application/json"


async def test_missing_or_wrong_key_is_401_unauthorized(api_app: Starlette) -> None:
    for secret in (None, "h0p_not-a-real-key", "garbage"):
        async with client_for(api_app, secret) as client:
            r = await client.get("/links")
        assert r.status_code == 401 and error_of(r)["code"] == "UNAUTHORIZED"


async def test_bearer_authorization_is_accepted_too(
    api_app: Starlette, ctx: ServiceContext, workspace: Workspace
) -> None:
    _, secret = await create_key(ctx, workspace.id, "sdk", ["links:read"])
    async with client_for(api_app, None) as client:
        r = await client.get("/links", headers={"authorization": f"Bearer {secret}"})
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("content", "headers", "path"),
    [
        (b'{"url": "https://example.com/"', {"content-type": "application/json"}, None),
        (b'{"url": "https://example.com/"}', {"content-type": "text/plain"}, None),
        (b'{"url": "https://example.com/"}', {}, None),
        (b'{"url": "https://example.com/", "colour": "red"}', {"content-type": "application/json"}, "colour"),
        (b'{"url": "https://example.com/", "statusCode": 303}', {"content-type": "application/json"}, "statusCode"),
        (b'{"url": 42}', {"content-type": "application/json"}, "url"),
        (b'{"slug": "x"}', {"content-type": "application/json"}, None),
        (
            b'{"url": "https://example.com/", "rules": [{"conditions": [{"type": "planet"}], "url": "u"}]}',
            {"content-type": "application/json"},
            "rules[0].conditions[0].type",
        ),
        (b'{"url": "http://127.1/"}', {"content-type": "application/json"}, "url"),
    ],
)
async def test_bad_bodies_are_400_validation_error_with_field_paths(
    api: httpx.AsyncClient, content: bytes, headers: dict[str, str], path: str | None
) -> None:
    r = await api.post("/links", content=content, headers=headers)
    assert r.status_code == 400
    err = error_of(r)
    assert err["code"] == "VALIDATION_ERROR"
    if path is not None:
        assert [d["path"] for d in err["details"]] == [path]


async def test_unknown_field_error_names_the_field(api: httpx.AsyncClient) -> None:
    r = await api.post("/links", json={"url": "https://example.com/", "colour": "red"})
    assert "colour" in error_of(r)["message"]


async def test_duplicate_slug_is_409_already_exist(api: httpx.AsyncClient) -> None:
    assert (await api.post("/links", json={"url": "https://example.com/", "slug": "twice"})).status_code == 201
    r = await api.post("/links", json={"url": "https://example.com/", "slug": "twice"})
    assert r.status_code == 409 and error_of(r)["code"] == "ALREADY_EXIST"


async def test_unknown_link_and_unknown_route_are_404_not_found(api: httpx.AsyncClient) -> None:
    for path in ("/links/link_nope", "/nothing-here"):
        r = await api.get(path)
        assert r.status_code == 404 and error_of(r)["code"] == "NOT_FOUND"


async def test_wrong_method_is_405_in_the_error_shape(api: httpx.AsyncClient) -> None:
    r = await api.put("/links")
    assert r.status_code == 405 and "allow" in r.headers and error_of(r)["code"] == "METHOD_NOT_ALLOWED"


async def test_a_key_without_the_scope_is_403_action_not_allowed(
    api_app: Starlette, ctx: ServiceContext, workspace: Workspace
) -> None:
    _, secret = await create_key(ctx, workspace.id, "reader", ["links:read"])
    async with client_for(api_app, secret) as client:
        assert (await client.get("/links")).status_code == 200
        r = await client.post("/links", json={"url": "https://example.com/"})
        assert r.status_code == 403 and error_of(r)["code"] == "ACTION_NOT_ALLOWED"
        for path in ("/domains", "/tags", "/folders", "/keys", "/workspace"):
            r = await client.get(path)
            assert r.status_code == 403 and error_of(r)["code"] == "ACTION_NOT_ALLOWED", path


async def test_plan_limits_are_403_plan_limit_reached_and_feature_not_available(
    api: httpx.AsyncClient, ctx: ServiceContext, workspace: Workspace
) -> None:
    await set_plan(ctx, workspace.id, "free")
    rules = [{"conditions": [{"type": "device", "value": "mobile"}], "url": "https://m.example.com/"}]
    r = await api.post("/links", json={"url": "https://example.com/", "rules": rules})
    assert r.status_code == 403 and error_of(r)["code"] == "FEATURE_NOT_AVAILABLE"
    for _ in range(25):
        assert (await api.post("/links", json={"url": "https://example.com/"})).status_code == 201
    r = await api.post("/links", json={"url": "https://example.com/"})
    assert r.status_code == 403 and error_of(r)["code"] == "PLAN_LIMIT_REACHED"


async def test_an_unexpected_failure_is_500_internal_error_without_a_trace(
    api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object) -> None:
        raise RuntimeError("secret internals at /srv/h0p/api.py line 12")

    monkeypatch.setattr(links_service, "get_link", broken)
    r = await api.get("/links/link_x")
    assert r.status_code == 500
    assert error_of(r) == {"code": "INTERNAL_ERROR", "message": "something went wrong on our end"}
    assert "secret" not in r.text and "Traceback" not in r.text


async def test_get_patch_delete_round_trip(api: httpx.AsyncClient) -> None:
    link = (await api.post("/links", json={"url": "https://example.com/", "title": "T"})).json()
    assert (await api.get(f"/links/{link['id']}")).json() == link
    r = await api.patch(f"/links/{link['id']}", json={"title": None, "expiresAt": "2031-01-01T00:00:00Z"})
    assert r.status_code == 200 and r.json()["title"] is None and r.json()["expiresAt"] == "2031-01-01T00:00:00Z"
    r = await api.delete(f"/links/{link['id']}")
    assert r.status_code == 200 and r.json() == {"id": link["id"]}
    assert (await api.get(f"/links/{link['id']}")).status_code == 404


async def test_info_finds_a_link_by_domain_and_slug(api: httpx.AsyncClient, ctx: ServiceContext) -> None:
    link = (await api.post("/links", json={"url": "https://example.com/", "slug": "Info-1"})).json()
    r = await api.get("/links/info", params={"slug": "Info-1", "domain": ctx.settings.default_domain})
    assert r.status_code == 200 and r.json()["id"] == link["id"]
    assert (await api.get("/links/info", params={"slug": "info-1"})).status_code == 404
    assert (await api.get("/links/info")).status_code == 400


async def test_list_pages_from_0_with_default_limit_10_and_total(api: httpx.AsyncClient) -> None:
    for i in range(23):
        assert (await api.post("/links", json={"url": f"https://example.com/{i}", "slug": f"page-{i:02d}"})).is_success
    first = (await api.get("/links")).json()
    assert (first["page"], first["limit"], first["total"], len(first["data"])) == (0, 10, 23, 10)
    assert first["data"][0]["slug"] == "page-22"  # newest first
    last = (await api.get("/links", params={"page": 2})).json()
    assert [d["slug"] for d in last["data"]] == ["page-02", "page-01", "page-00"]
    beyond = (await api.get("/links", params={"page": 3})).json()
    assert beyond["data"] == [] and beyond["total"] == 23
    all_50 = (await api.get("/links", params={"limit": 50, "order": "asc"})).json()
    assert len(all_50["data"]) == 23 and all_50["data"][0]["slug"] == "page-00"


@pytest.mark.parametrize("params", [{"limit": 51}, {"limit": 0}, {"page": -1}, {"limit": "ten"}, {"sort": "slug"}])
async def test_bad_list_parameters_are_400(api: httpx.AsyncClient, params: dict[str, Any]) -> None:
    r = await api.get("/links", params=params)
    assert r.status_code == 400 and error_of(r)["code"] == "VALIDATION_ERROR"


async def test_list_filters_by_search_tag_folder_archived_and_sorts_by_clicks(
    api: httpx.AsyncClient, ctx: ServiceContext
) -> None:
    tag = (await api.post("/tags", json={"name": "promo"})).json()
    folder = (await api.post("/folders", json={"name": "Q3"})).json()
    a = (await api.post("/links", json={"url": "https://shop.example.com/", "title": "Summer 100%"})).json()
    b = (await api.post("/links", json={"url": "https://example.com/b", "tagIds": [tag["id"]]})).json()
    c = (
        await api.post("/links", json={"url": "https://example.com/c", "folderId": folder["id"], "archived": True})
    ).json()
    await ctx.pool.execute("UPDATE link_counters SET clicks = 5 WHERE link_id = $1", b["id"])
    await ctx.pool.execute("UPDATE link_counters SET clicks = 9 WHERE link_id = $1", c["id"])

    async def ids(**params: Any) -> list[str]:
        return [d["id"] for d in (await api.get("/links", params=params)).json()["data"]]

    assert await ids(search="shop") == [a["id"]]
    assert await ids(search="100%") == [a["id"]]  # % is literal, not a wildcard
    assert await ids(tagIds=tag["id"]) == [b["id"]]
    assert await ids(folderId=folder["id"]) == [c["id"]]
    assert await ids(archived="true") == [c["id"]]
    assert await ids(sort="clicks") == [c["id"], b["id"], a["id"]]


async def test_bulk_creates_what_it_can_and_reports_each_failure(api: httpx.AsyncClient, ctx: ServiceContext) -> None:
    await api.post("/links", json={"url": "https://example.com/", "slug": "bulk-taken"})
    items = [
        {"url": "https://example.com/1", "slug": "bulk-ok"},
        {"url": "https://example.com/2", "slug": "bulk-taken"},
        {"url": "http://169.254.169.254/", "slug": "bulk-unsafe"},
        {"url": "https://example.com/4", "tagIds": ["tag_missing"], "slug": "bulk-tagless"},
        {"url": "https://example.com/6", "slug": "bulk-last"},
    ]
    r = await api.post("/links/bulk", json=items)
    assert r.status_code == 200
    results = r.json()
    assert len(results) == 5 and results[0]["slug"] == "bulk-ok" and results[4]["slug"] == "bulk-last"
    codes = [x["error"]["code"] for x in results[1:4]]
    assert codes == ["ALREADY_EXIST", "VALIDATION_ERROR", "VALIDATION_ERROR"]
    slugs = {r["slug"] for r in await ctx.pool.fetch("SELECT slug FROM links WHERE slug LIKE 'bulk-%'")}
    assert slugs == {"bulk-ok", "bulk-taken", "bulk-last"}  # the failed items wrote nothing


async def test_bulk_with_an_item_outside_the_schema_is_400_naming_the_item_and_creates_nothing(
    api: httpx.AsyncClient, ctx: ServiceContext
) -> None:
    items = [
        {"url": "https://example.com/1", "slug": "shape-ok"},
        {"url": "https://example.com/5", "slug": "shape-bad", "statusCode": 303},
    ]
    r = await api.post("/links/bulk", json=items)
    assert r.status_code == 400 and error_of(r)["code"] == "VALIDATION_ERROR"
    assert [d["path"] for d in error_of(r)["details"]] == ["[1].statusCode"]
    assert await ctx.pool.fetchval("SELECT count(*) FROM links WHERE slug LIKE 'shape-%'") == 0


async def test_bulk_of_more_than_100_is_400(api: httpx.AsyncClient) -> None:
    r = await api.post("/links/bulk", json=[{"url": "https://example.com/"}] * 101)
    assert r.status_code == 400 and error_of(r)["code"] == "VALIDATION_ERROR"


async def test_upsert_creates_then_replaces_by_external_id(api: httpx.AsyncClient) -> None:
    body = {"url": "https://example.com/v1", "externalId": "post-7", "title": "v1", "comments": "c"}
    first = await api.put("/links/upsert", json=body)
    assert first.status_code == 201
    second = await api.put("/links/upsert", json={"url": "https://example.com/v2", "externalId": "post-7"})
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"] and second.json()["slug"] == first.json()["slug"]
    assert (second.json()["url"], second.json()["title"], second.json()["comments"]) == (
        "https://example.com/v2",
        None,
        None,
    )
    r = await api.put("/links/upsert", json={"url": "https://example.com/"})
    assert r.status_code == 400 and error_of(r)["details"][0]["path"] == "externalId"


async def test_list_total_follows_creates_deletes_and_forced_domain_deletes(
    api: httpx.AsyncClient, ctx: ServiceContext, workspace: Workspace
) -> None:
    host = f"total-{workspace.id[-8:].lower()}.example.com"
    domain = (await api.post("/domains", json={"domain": host})).json()
    made = [(await api.post("/links", json={"url": "https://example.com/", "domain": host})).json() for _ in range(3)]
    made += [(await api.post("/links", json={"url": "https://example.com/"})).json() for _ in range(2)]
    assert (await api.get("/links")).json()["total"] == 5
    await api.delete(f"/links/{made[-1]['id']}")
    assert (await api.get("/links")).json()["total"] == 4
    await api.delete(f"/domains/{domain['id']}", params={"force": "true"})
    assert (await api.get("/links")).json()["total"] == 1
    assert (await api.get("/workspace")).json()["usage"]["links"] == 1


async def test_nul_characters_are_400_not_a_database_error(api: httpx.AsyncClient) -> None:
    r = await api.post("/links", json={"url": "https://example.com/", "title": "a\u0000b"})
    assert r.status_code == 400 and error_of(r)["details"] == [
        {"path": "title", "message": "text must not contain NUL characters"}
    ]
    r = await api.post("/links", json={"url": "https://example.com/", "rules": [
        {"conditions": [{"type": "city", "value": ["Paris", "x\u0000"]}], "url": "https://example.fr/"}
    ]})  # fmt: skip
    assert r.status_code == 400 and error_of(r)["details"][0]["path"] == "rules[0].conditions[0].value[1]"
    assert (await api.get("/links", params={"search": "a\u0000"})).status_code == 400
    assert (await api.get("/links/link_%00x")).status_code == 404


DEVICE_WORDS = ("desktop", "mobile", "phone", "smartphone", "tablet", "tv", "console", "bot", "other")


async def test_a_device_rule_naming_no_device_class_is_400_with_its_path_and_changes_nothing(
    api: httpx.AsyncClient,
) -> None:
    """`device=laptop` would never match a visitor: refused, on create and on update, with the field's path."""
    rules = [
        {
            "conditions": [{"type": "os", "value": "Windows"}, {"type": "device", "value": "laptop"}],
            "url": "https://pc.example.com/",
        }
    ]
    r = await api.post("/links", json={"url": "https://example.com/", "slug": "laptop-rule", "rules": rules})
    assert r.status_code == 400
    err = error_of(r)
    assert err["code"] == "VALIDATION_ERROR"
    assert [d["path"] for d in err["details"]] == ["rules[0].conditions[1].value"]
    assert all(word in err["details"][0]["message"] for word in DEVICE_WORDS)
    assert (await api.get("/links/laptop-rule")).status_code == 404
    link = (await api.post("/links", json={"url": "https://example.com/", "slug": "laptop-patch"})).json()
    r = await api.patch(f"/links/{link['id']}", json={"rules": rules})
    assert r.status_code == 400 and [d["path"] for d in error_of(r)["details"]] == ["rules[0].conditions[1].value"]
    assert (await api.get(f"/links/{link['id']}")).json()["rules"] == []


@pytest.mark.parametrize(
    ("said", "stored"),
    [("phone", "mobile"), ("Smartphone", "mobile"), ("MOBILE", "mobile"), ("tv", "tv"), ("desktop", "desktop")],
)
async def test_device_rule_aliases_are_accepted_and_stored_as_the_class_analytics_uses(
    api: httpx.AsyncClient, said: str, stored: str
) -> None:
    rules = [{"conditions": [{"type": "device", "value": [said]}], "url": "https://d.example.com/"}]
    r = await api.post("/links", json={"url": "https://example.com/", "rules": rules})
    assert r.status_code == 201, r.text
    assert r.json()["rules"][0]["conditions"][0]["value"] == [stored]


async def test_the_openapi_schema_names_the_device_values_a_rule_accepts(api: httpx.AsyncClient) -> None:
    doc = (await api.get("/doc", headers={"x-api-key": ""})).json()
    value = doc["components"]["schemas"]["RuleCondition"]["properties"]["value"]
    assert all(f"`{word}`" in value["description"] for word in DEVICE_WORDS), value
