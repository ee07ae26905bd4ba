"""The OpenAPI document and Swagger UI, and a schemathesis run of the live API against /doc."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
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
    assert create["security"] == [{"apiKey": []}] and "example" in create["requestBody"]["content"]["application/json"]
    assert {"201", "400", "401", "403", "409", "429", "500"} <= set(create["responses"])
    assert "X-RateLimit-Remaining" in create["responses"]["201"]["headers"]
    link = doc["components"]["schemas"]["Link"]["properties"]
    assert {"shortUrl", "utm_source", "tagIds", "expiresAt"} <= set(link)
    assert doc["components"]["securitySchemes"]["apiKey"] == {"type": "apiKey", "in": "header", "name": "x-api-key"}


async def test_swagger_ui_is_served_with_local_assets(api: httpx.AsyncClient) -> None:
    page = await api.get("/ui")
    assert page.status_code == 200 and "swagger-ui" in page.text
    assert "://" not in page.text  # no CDN: every asset comes from this server
    for asset in ("/ui/assets/swagger-ui-bundle.js", "/ui/assets/swagger-ui.css", "/ui/init.js"):
        r = await api.get(asset)
        assert r.status_code == 200 and len(r.content) > 100, asset
    assert "/doc" in (await api.get("/ui/init.js")).text


async def test_healthz_needs_no_key(api_app: Starlette) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api_app), base_url="http://t") as client:
        r = await client.get("/healthz")
    assert r.status_code == 200 and r.text == "ok"


@dataclass
class RunningApi:
    url: str
    key: str


@pytest.fixture(scope="session")
async def api_server(api_settings: Settings, ctx: ServiceContext) -> AsyncIterator[RunningApi]:
    """The API as a real uvicorn process (what production runs), with an all-scopes key."""
    workspace = await get_or_create_workspace(ctx, f"schemathesis-{os.getpid()}")
    _, secret = await create_key(ctx, workspace.id, "schemathesis", None)
    port = free_port()
    env = {
        **os.environ,
        "H0P_DATABASE_URL": api_settings.database_url,
        "H0P_REDIS_URL": api_settings.redis_url,
        "H0P_API_PORT": str(port),
        "H0P_BIND_HOST": "127.0.0.1",
        "H0P_RATE_LIMITS_ENABLED": "false",
        "H0P_DNS_RESOLVER": api_settings.dns_resolver,  # never query real DNS for generated names
        "H0P_LOG_LEVEL": "warning",
    }
    code = "from api.app import serve; from h0p_settings import load_settings_or_exit; serve(load_settings_or_exit())"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)  # noqa: ASYNC220 - returns at once
    try:
        wait_for_port(port, timeout=30)
        yield RunningApi(f"http://127.0.0.1:{port}", secret)
    finally:
        proc.terminate()
        # uvicorn drains on SIGTERM, then re-raises the signal: -15 is its clean exit
        assert proc.wait(timeout=20) in (0, -15)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


@pytest.fixture(scope="session")
def live_schema(api_server: RunningApi) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{api_server.url}/doc")


@pytest.mark.slow
@pytest.mark.parametrize("operation", [f"{e.method} {e.path}" for e in all_endpoints()])
def test_the_api_answers_every_generated_request_within_its_schema(
    operation: str, live_schema: schemathesis.BaseSchema, api_server: RunningApi
) -> None:
    """Schemathesis generates requests for each operation of /doc: no 500, no response outside the schema."""
    # Operations are walked here rather than with schemathesis' pytest plugin, whose
    # from_fixture() fails under pytest 9 ("'Function' object has no attribute '_nodeid'").
    method, path = operation.split(" ", 1)
    api_operation = live_schema[path][method]

    @hypothesis.given(case=api_operation.as_strategy())
    @hypothesis.settings(
        max_examples=30, deadline=None, derandomize=True, database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )  # fmt: skip
    def run(case: Any) -> None:
        case.call_and_validate(base_url=api_server.url, headers={"x-api-key": api_server.key}, checks=CHECKS)

    run()
