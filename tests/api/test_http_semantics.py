"""HTTP as clients expect it: 405 lists every method of the resource, a parameter is given once."""

from __future__ import annotations

import httpx
import pytest


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/links", "GET, HEAD, POST"),
        ("/links/link_x", "DELETE, GET, HEAD, PATCH"),
        ("/links/bulk", "POST"),  # not /links/{id}'s methods, though its pattern matches
    ],
)
async def test_a_wrong_method_is_405_with_every_method_of_the_resource_in_allow(
    api: httpx.AsyncClient, path: str, allowed: str
) -> None:
    r = await api.request("OPTIONS", path)
    assert r.status_code == 405 and r.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert r.headers["allow"] == allowed


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("interval=7d&interval=30d", "interval"),
        ("groupBy=count&interval=7d&groupBy=countries", "groupBy"),
        ("interval=null", "interval"),  # msgspec's lax reading would take the text `null` for None
    ],
)
async def test_a_parameter_given_twice_or_as_null_is_400_naming_it(
    api: httpx.AsyncClient, query: str, named: str
) -> None:
    before = await api.get("/analytics?interval=7d")
    assert before.status_code == 200
    r = await api.get(f"/analytics?{query}")
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert [d["path"] for d in error["details"]] == [named]


async def test_a_raw_route_refuses_a_repeated_parameter_too(api: httpx.AsyncClient) -> None:
    r = await api.get("/qr?url=https://example.com/&url=https://example.org/")
    assert r.status_code == 400 and r.json()["error"]["details"][0]["path"] == "url"
