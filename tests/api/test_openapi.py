"""The OpenAPI document and Swagger UI, and a schemathesis run of the live API against /doc."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import swagger_ui_bundle  # type: ignore[import-untyped]
from starlette.applications import Starlette

from api.app import all_endpoints, raw_openapi_paths
from api.services.context import ServiceContext
from api.services.keys import create_key
from api.services.workspaces import get_or_create_workspace
from h0p_settings import Settings
from tests.services import free_port, wait_for_port


async def test_doc_is_openapi_3_with_every_route_and_error(api: httpx.AsyncClient) -> None:
    r = await api.get("/doc", headers={"x-api-key": ""})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc = r.json()
    assert doc["openapi"].startswith("3.0")
    served = {(e.method.lower(), e.path) for e in all_endpoints()}
    served |= {(m, p) for p, ops in raw_openapi_paths().items() for m in ops}
    assert {("get", "/qr"), ("post", "/files"), ("get", "/analytics/export")} <= served
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == served
    create = doc["paths"]["/links"]["post"]
    assert "example" in create["requestBody"]["content"]["application/json"]
    assert {"201", "400", "401", "403", "409", "429", "500"} <= set(create["responses"])
    assert "X-RateLimit-Remaining" in create["responses"]["201"]["headers"]
    link = doc["components"]["schemas"]["Link"]["properties"]
    assert {"shortUrl", "utm_source", "tagIds", "expiresAt"} <= set(link)


async def test_doc_declares_both_ways_of_sending_the_key_on_every_operation(api: httpx.AsyncClient) -> None:
    doc = (await api.get("/doc")).json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["apiKey"] == {"type": "apiKey", "in": "header", "name": "x-api-key"}
    assert schemes["bearerAuth"]["type"] == "http" and schemes["bearerAuth"]["scheme"] == "bearer"
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            assert op["security"] == [{"apiKey": []}, {"bearerAuth": []}], (method, path)
    assert "Authorization: Bearer" in doc["info"]["description"]


async def test_doc_states_slug_case_sensitivity_reserved_slugs_and_split_rules(api: httpx.AsyncClient) -> None:
    doc = (await api.get("/doc")).json()
    for schema in ("LinkCreate", "LinkUpdate", "Link"):
        props = doc["components"]["schemas"][schema]["properties"]
        slug, split = props["slug"]["description"], props["split"]["description"]
        assert "Case-sensitive" in slug and all(f"`{s}`" in slug for s in ("healthz", "ui", "doc", "links"))
        assert "2 to 4" in split and "sum to 100" in split
    info = [p for p in doc["paths"]["/links/info"]["get"]["parameters"] if p["name"] == "slug"][0]
    assert "Case-sensitive" in info["description"]


async def test_a_slug_differing_only_in_case_is_another_link(api: httpx.AsyncClient) -> None:
    lower = await api.post("/links", json={"url": "https://example.com/a", "slug": "case-sale"})
    upper = await api.post("/links", json={"url": "https://example.com/b", "slug": "Case-Sale"})
    assert (lower.status_code, upper.status_code) == (201, 201), upper.text
    found = await api.get("/links/info", params={"slug": "Case-Sale"})
    assert found.json()["url"] == "https://example.com/b"
    reserved = await api.post("/links", json={"url": "https://example.com/", "slug": "HealthZ"})
    assert reserved.status_code == 400 and reserved.json()["error"]["details"][0]["path"] == "slug"


def _asset_urls(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/ui/[^"]+)"', page)


async def test_swagger_ui_is_served_with_local_assets(api: httpx.AsyncClient) -> None:
    page = await api.get("/ui")
    assert page.status_code == 200 and "swagger-ui" in page.text
    assert "://" not in page.text  # no CDN: every asset comes from this server
    assets = _asset_urls(page.text)
    assert {a.rsplit("/", 1)[1] for a in assets} == {
        "swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "init.js"
    }  # fmt: skip
    for asset in assets:
        r = await api.get(asset)
        assert r.status_code == 200 and len(r.content) > 100, asset
    assert "/doc" in (await api.get("/ui/init.js")).text


async def test_swagger_assets_are_gzipped_under_a_versioned_url_cached_for_a_year(api: httpx.AsyncClient) -> None:
    bundle = next(a for a in _asset_urls((await api.get("/ui")).text) if a.endswith("swagger-ui-bundle.js"))
    assert re.fullmatch(r"/ui/assets/swagger-ui-\d+\.\d+\.\d+/swagger-ui-bundle\.js", bundle)
    on_disk = (Path(swagger_ui_bundle.swagger_ui_path) / "swagger-ui-bundle.js").read_bytes()

    async with api.stream("GET", bundle, headers={"accept-encoding": "gzip"}) as gzipped:
        wire = b"".join([chunk async for chunk in gzipped.aiter_raw()])
    assert gzipped.status_code == 200
    assert gzipped.headers["content-encoding"] == "gzip"
    assert gzipped.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert gzip.decompress(wire) == on_disk and len(wire) < len(on_disk) // 2

    assert int(gzipped.headers["content-length"]) == len(wire)

    plain = await api.get(bundle, headers={"accept-encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == on_disk
    assert plain.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert plain.headers["content-type"].startswith("text/javascript")

    folder = bundle.rsplit("/", 1)[0]
    for missing in (f"{folder}/nope.js", f"{folder}/..%2F..%2F__init__.py", "/ui/assets/swagger-ui-bundle.js"):
        gone = await api.get(missing)
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "NOT_FOUND", missing


async def test_the_root_points_api_clients_to_doc_and_sends_browsers_to_the_dashboard(api_app: Starlette) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api_app), base_url="http://t") as client:
        as_client = await client.get("/")
        as_browser = await client.get("/", headers={"accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert as_client.status_code == 200 and as_client.headers["content-type"] == "application/json"
    assert as_client.json()["doc"] == "/doc" and as_client.json()["ui"] == "/ui"
    assert as_client.json()["dashboard"] == "/app/"
    assert as_browser.status_code == 303 and as_browser.headers["location"] == "/app/"


async def test_healthz_needs_no_key(api_app: Starlette) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api_app), base_url="http://t") as client:
        r = await client.get("/healthz")
    assert r.status_code == 200 and r.text == "ok"


@dataclass
class RunningApi:
    url: str
    keys: dict[str, str]  # workspace name -> an all-scopes key of it


@pytest.fixture(scope="session")
async def api_server(api_settings: Settings, ctx: ServiceContext) -> AsyncIterator[RunningApi]:
    """The API as a real uvicorn process (what production runs), with two workspaces' all-scopes keys."""
    keys = {}
    for name in ("alice", "bob"):
        workspace = await get_or_create_workspace(ctx, f"schemathesis-{name}-{os.getpid()}")
        keys[name] = (await create_key(ctx, workspace.id, "schemathesis", None))[1]
    port = free_port()
    env = {
        **os.environ,
        "H0P_DATABASE_URL": api_settings.database_url,
        "H0P_REDIS_URL": api_settings.redis_url,
        "H0P_API_PORT": str(port),
        "H0P_BIND_HOST": "127.0.0.1",
        "H0P_RATE_LIMITS_ENABLED": "false",
        "H0P_DNS_RESOLVER": api_settings.dns_resolver,  # never query real DNS for generated names
        "H0P_FILES_DIR": api_settings.files_dir,
        "H0P_LOG_LEVEL": "warning",
    }
    code = "from api.app import serve; from h0p_settings import load_settings_or_exit; serve(load_settings_or_exit())"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)  # noqa: ASYNC220 - returns at once
    try:
        wait_for_port(port, timeout=30)
        yield RunningApi(f"http://127.0.0.1:{port}", keys)
    finally:
        proc.terminate()
        # uvicorn drains on SIGTERM, then re-raises the signal: -15 is its clean exit
        assert proc.wait(timeout=20) in (0, -15)


# Every schemathesis check but one. `positive_data_acceptance` expects any request the schema
# admits to succeed, and the schema cannot state the API's semantic rules: a destination must be
# an http(s) URL on a public host, a folder or tag id must exist in the workspace, an upsert
# needs `externalId`, a date range must end after it starts, a QR `logo` must be an uploaded
# image. Those are documented 400s with field paths (tests/api/test_*_routes.py check them).
EXCLUDED_CHECKS = "positive_data_acceptance"


@pytest.mark.slow
def test_schemathesis_with_every_check_and_two_workspaces_finds_nothing(api_server: RunningApi, tmp_path: Path) -> None:
    """Every phase (examples, coverage, fuzzing, stateful) and every other check, among them
    object_level_authorization between two workspaces, use_after_free and the Allow header."""
    auth = {"auth": [
        {"name": name, "fixedHeaders": [{"name": "x-api-key", "value": key}]} for name, key in api_server.keys.items()
    ]}  # fmt: skip
    (tmp_path / "auth.json").write_text(json.dumps(auth))
    (tmp_path / "schemathesis.toml").write_text(
        f'[auth.wfc]\npath = "{tmp_path / "auth.json"}"\npeers = {json.dumps(list(api_server.keys))}\n'
    )
    # One worker: two threads' ast.parse (hypothesis describing a lambda) race on CPython
    # 3.11's shared AST recursion counter, "SystemError: AST constructor recursion depth
    # mismatch" (python/cpython#106905), which failed a CI run.
    run = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(tmp_path / "schemathesis.toml"),
            "run", f"{api_server.url}/doc", "--checks", "all", "--exclude-checks", EXCLUDED_CHECKS,
            "--max-examples", "10", "--seed", "20261203", "--generation-database", "none",
            "--max-time", "100", "--workers", "1", "--no-color", "--request-timeout", "10",
        ],
        cwd=tmp_path, capture_output=True, text=True, timeout=200,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-2000:]
    assert "will not run" not in run.stdout  # object_level_authorization ran: both peers were used
    operations = len(all_endpoints()) + sum(len(ops) for ops in raw_openapi_paths().values())
    assert re.search(r"Tested: (\d+)", run.stdout) and f"Tested: {operations}" in run.stdout, run.stdout[-3000:]
