"""The management API process: a Starlette app built from the route modules, and its server.

To add routes, write a module in ``api/routes/`` with ``ENDPOINTS: list[Endpoint]`` (served
and documented in /doc) and, for anything that is not JSON in/JSON out, ``ROUTES`` (plain
Starlette routes, not documented), then add it to ``ROUTE_MODULES`` below.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import ModuleType
from typing import Any

import msgspec
import swagger_ui_bundle  # type: ignore[import-untyped]
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from api import cache_sync, db
from api.dashboard import dashboard_mount
from api.endpoints import Endpoint, error_response, json_response
from api.errors import H0pError, InternalError, NotFound, ValidationFailed
from api.mcp.endpoint import McpEndpoint
from api.metrics import MetricsServer
from api.openapi import SWAGGER_INIT, openapi_document, swagger_page
from api.services.context import close_context, open_context
from api.services.plans import all_plans
from api.static_assets import VersionedAssets
from h0p_settings import Settings
from h0p_workers import Supervisor, Worker, check_port_free, die_with_parent, reuseport_socket, worker_command

log = logging.getLogger("h0p.api")

# The API's route modules, in the order their routes are matched and documented.
ROUTE_MODULES = (
    "api.routes.links",
    "api.routes.domains",
    "api.routes.folders",
    "api.routes.tags",
    "api.routes.keys",
    "api.routes.workspace",
    "api.routes.files",
    "api.routes.qr",
    "api.routes.analytics",
    "api.routes.webhooks",
)


# Swagger UI's files under a URL that names their version (the bundle's folder, e.g.
# swagger-ui-4.15.5): an upgrade changes the URL, so browsers may keep each file forever.
SWAGGER_ASSETS = "/ui/assets/" + os.path.basename(swagger_ui_bundle.swagger_ui_path)


def _modules() -> list[ModuleType]:
    return [importlib.import_module(name) for name in ROUTE_MODULES]


def all_endpoints() -> list[Endpoint]:
    """Every documented endpoint of the API."""
    return [e for m in _modules() for e in getattr(m, "ENDPOINTS", ())]


def raw_openapi_paths() -> dict[str, dict[str, Any]]:
    """The OpenAPI paths that non-JSON route modules (QR images, uploads, exports) describe themselves."""
    return {path: dict(ops) for m in _modules() for path, ops in getattr(m, "OPENAPI_PATHS", {}).items()}


class _MethodNotAllowed(H0pError):
    default_message = "this method is not allowed on this path"


async def _http_error(request: Request, exc: Exception) -> Response:
    # Starlette's own 404 (no route) and 405 (wrong method), in the API's error shape.
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        status, body = 405, {"error": {"code": "METHOD_NOT_ALLOWED", "message": _MethodNotAllowed.default_message}}
        return json_response(status, body, {"Allow": _allowed_methods(request)})
    if exc.status_code == 404:
        return error_response(NotFound("no such route"))
    if exc.status_code == 400:
        return error_response(ValidationFailed([{"path": "body", "message": str(exc.detail)}]))
    return error_response(InternalError())


def _allowed_methods(request: Request) -> str:
    # Starlette's 405 names the methods of the first route matching the path only; each endpoint
    # is a route of its own, so the answer gathers every route of that path (RFC 9110 15.5.6).
    # The first route matching the path is the resource (`/links/bulk` before `/links/{id}`).
    routes = [r for r in request.app.routes if isinstance(r, Route) and r.methods]
    resource = next(r.path for r in routes if r.path_regex.match(request.url.path))
    return ", ".join(sorted({m for r in routes if r.path == resource for m in r.methods or ()}))


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return error_response(InternalError())


def create_app(settings: Settings) -> Starlette:
    """The API app; its lifespan opens Postgres and Redis and runs the cache outbox retry loop."""
    all_plans(settings)  # a bad H0P_PLANS fails here, at start-up
    modules = _modules()
    endpoints = [e for m in modules for e in getattr(m, "ENDPOINTS", ())]
    document = msgspec.json.encode(openapi_document(endpoints, raw_openapi_paths()))
    mcp = McpEndpoint()  # MCP over Streamable HTTP (api/mcp); needs mcp.run() inside the lifespan

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        ctx = await open_context(settings)
        app.state.ctx = ctx
        # Exports (GET /analytics/export) read at the client's pace: a pool of their own, so that
        # slow readers can never take the connections every other request needs.
        app.state.export_pool = await db.create_pool(settings.database_url, 0, settings.export_pool_size)
        # /metrics (read replica lag) on its own address, never the API's public port; 0: not served
        metrics = MetricsServer(ctx.read_pool, settings.edge_metrics_host, settings.api_metrics_port) if (
            settings.api_metrics_port) else None  # fmt: skip
        stop = asyncio.Event()
        outbox = asyncio.create_task(cache_sync.run_outbox_loop(ctx, stop), name="h0p-cache-outbox")
        try:
            async with mcp.run():
                yield
        finally:
            stop.set()  # the loop makes one last pass over the outbox, then returns
            try:
                await asyncio.wait_for(outbox, timeout=10.0)
            except TimeoutError:
                log.warning("cache outbox loop did not finish in time; the next start retries it")
            app.state.export_pool.terminate()  # exports still streaming are cut: the client sees them incomplete
            if metrics is not None:
                metrics.close()
            await close_context(ctx)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def home(request: Request) -> Response:
        # A person who opens the API's address in a browser goes to the dashboard; a client gets pointers as JSON.
        headers = {"vary": "accept"}
        if "text/html" in request.headers.get("accept", ""):
            return RedirectResponse("/app/", status_code=303, headers=headers)
        where = {
            "name": "H0p API",
            "doc": "/doc",
            "ui": "/ui",
            "mcp": "/mcp",
            "health": "/healthz",
            "dashboard": "/app/",
        }
        return json_response(200, where, headers)

    async def doc(request: Request) -> Response:
        return Response(document, media_type="application/json")

    page = swagger_page(SWAGGER_ASSETS)
    swagger_assets = VersionedAssets(swagger_ui_bundle.swagger_ui_path)

    async def ui(request: Request) -> Response:
        return Response(page, media_type="text/html")

    async def ui_init(request: Request) -> Response:
        return Response(SWAGGER_INIT, media_type="text/javascript")

    routes: list[BaseRoute] = [
        Route("/", home, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/mcp", mcp),
        Route("/doc", doc, methods=["GET"]),
        Route("/ui", ui, methods=["GET"]),
        Route("/ui/init.js", ui_init, methods=["GET"]),
        Route(SWAGGER_ASSETS + "/{name}", swagger_assets.serve, methods=["GET", "HEAD"], name="swagger-assets"),
        *(e.route() for e in endpoints),
    ]
    for module in modules:
        routes.extend(getattr(module, "ROUTES", ()))
    routes.append(dashboard_mount())  # /app/: the dashboard's pages (session cookies, not API keys)
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
    )


def serve(settings: Settings, workers: int | None = None, worker: Worker | None = None) -> None:
    """Run the API on settings.bind_host:settings.api_port until SIGINT/SIGTERM, then drain.

    ``workers`` (default ``H0P_API_WORKERS``) above 1: a supervisor (``h0p_workers``) runs that
    many processes sharing the port; ``worker``: this process is one of them.
    """
    count = settings.api_workers if workers is None else workers
    if worker is None and count > 1:
        raise SystemExit(_supervise(settings, count))
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = uvicorn.Config(
        create_app(settings),
        host=settings.bind_host,
        port=settings.api_port,
        loop="uvloop",
        lifespan="on",
        access_log=False,
        log_level=settings.log_level,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    sockets: list[socket.socket] | None = None
    if worker is not None:
        die_with_parent(worker)
        try:
            sockets = [reuseport_socket(settings.bind_host, settings.api_port)]
        except OSError as exc:  # exit 1: the supervisor tries again
            print(f"h0p api: worker {worker.index} cannot listen on port {settings.api_port} ({exc})", file=sys.stderr)
            raise SystemExit(1) from None
    uvicorn.Server(config).run(sockets=sockets)


GRACEFUL_SHUTDOWN_S = 10


def _supervise(settings: Settings, count: int) -> int:
    host, port = settings.bind_host, settings.api_port
    try:
        check_port_free(host, port)
    except OSError as exc:
        print(f"h0p api: cannot listen on {host}:{port} ({exc.strerror})", file=sys.stderr)
        return 1
    # requests drain for GRACEFUL_SHUTDOWN_S, then the lifespan's outbox pass gets up to 10 s
    supervisor = Supervisor("api", count, lambda w: worker_command("api", w), stop_timeout_s=GRACEFUL_SHUTDOWN_S + 15)
    return supervisor.run()
