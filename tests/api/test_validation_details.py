"""Every validation error names the field it is about, whatever went wrong with the request."""

from __future__ import annotations

from typing import Any

import httpx
import pytest


def only_detail(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert len(error["details"]) == 1, error
    detail: dict[str, Any] = error["details"][0]
    return detail


async def test_a_missing_required_field_is_named_in_the_detail_path(api: httpx.AsyncClient) -> None:
    detail = only_detail(await api.post("/links", json={"slug": "no-url"}))
    assert detail["path"] == "url" and "missing required field" in detail["message"]


async def test_a_missing_field_inside_a_list_is_named_with_its_index(api: httpx.AsyncClient) -> None:
    rules = [{"conditions": [{"type": "os", "value": "iOS"}]}]  # a rule without its url
    detail = only_detail(await api.post("/links", json={"url": "https://example.com/", "rules": rules}))
    assert detail["path"] == "rules[0].url"


async def test_a_missing_query_parameter_is_named_in_the_detail_path(api: httpx.AsyncClient) -> None:
    assert only_detail(await api.get("/links/info"))["path"] == "slug"


async def test_a_query_parameter_a_route_does_not_take_is_named(api: httpx.AsyncClient) -> None:
    assert only_detail(await api.get("/workspace", params={"verbose": "1"}))["path"] == "verbose"


@pytest.mark.parametrize(
    ("content", "content_type"),
    [(b"{not json", "application/json"), (b"[]", "application/json"), (b"url=x", "text/plain")],
    ids=["malformed", "not-an-object", "not-json"],
)
async def test_a_body_that_is_wrong_as_a_whole_is_reported_on_the_body(
    api: httpx.AsyncClient, content: bytes, content_type: str
) -> None:
    response = await api.post("/links", content=content, headers={"content-type": content_type})
    assert only_detail(response)["path"] == "body"


async def test_a_bulk_item_missing_its_url_says_which_field(api: httpx.AsyncClient) -> None:
    response = await api.post("/links/bulk", json=[{"url": "https://example.com/"}, {"slug": "bulk-no-url"}])
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and [d["path"] for d in error["details"]] == ["[1].url"]
