"""The dashboard: server-rendered pages at /app/ over the same services as the API and MCP.

Session cookies authorise only these pages; the JSON API keeps API keys as its only
credentials, so a signed-in browser cannot be used against it from another site.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from api.dashboard import sessions
from api.dashboard.web import PREFIX, SecurityHeaders, View, error_page, redirect
from api.services import users

STATIC_DIR = Path(__file__).parent / "static"
# The page modules, each with ROUTES (paths relative to /app).
PAGE_MODULES = (
    "api.dashboard.account",
    "api.dashboard.links",
    "api.dashboard.analytics_page",
    "api.dashboard.organize",
    "api.dashboard.keys",
    "api.dashboard.webhooks",
    "api.dashboard.settings_page",
)


async def _home(request: Request) -> Response:
    return redirect(f"{PREFIX}/links")


async def _not_found(request: Request) -> Response:
    # The 404 page keeps the navigation for a signed-in browser.
    ctx = request.app.state.ctx
    token = request.cookies.get(sessions.COOKIE, "")
    session = await sessions.load_session(ctx, token)
    view = None
    if session is not None:
        memberships = await users.memberships(ctx, session.user_id)
        role = next((m.role for m in memberships if m.workspace_id == session.workspace_id), None)
        if role is not None:
            user = await users.get_user(ctx, session.user_id)
            view = View(request, ctx, token, session, user, role, memberships)
    return error_page(request, 404, "Page not found", "There is no page at this address.", view)


def dashboard_mount() -> Mount:
    """The /app mount: every page module's routes, the static files, and the 404 page."""
    routes: list[BaseRoute] = [Route("/", _home, methods=["GET"])]
    for name in PAGE_MODULES:
        routes.extend(importlib.import_module(name).ROUTES)
    routes.append(Mount("/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static"))
    routes.append(Route("/{rest:path}", _not_found, methods=["GET", "POST"]))
    return Mount(PREFIX, routes=routes, middleware=[Middleware(SecurityHeaders)])
