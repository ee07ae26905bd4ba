"""What every dashboard page shares: templates, the signed-in viewer, CSRF, security headers.

``page(handler)`` turns a handler of a ``View`` into a Starlette endpoint that: loads the
session (a browser without one is sent to sign in), checks the CSRF token of every
state-changing request (refused with 403 and nothing changed), checks the role, and renders
domain errors as pages. Handlers call ``api/services`` and render templates, nothing more.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import jinja2
import msgspec
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.dashboard import sessions
from api.errors import Forbidden, H0pError, NotFound, ValidationFailed, from_msgspec
from api.services import users
from api.services.context import ServiceContext
from api.services.users import Membership, Role, User

T = TypeVar("T")

PREFIX = "/app"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
MAX_UPLOAD_BYTES = 5 * 1024 * 1024
# No inline script or style anywhere: every script and stylesheet is a file served from /app/static.
# Images may come from anywhere on the web: the social preview card shows the link's og:image
# where it is hosted (uploaded ones are served from the API's public URL, maybe another origin).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: https: http:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


def _datetime(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "—"


templates = jinja2.Environment(
    loader=jinja2.PackageLoader("api.dashboard", "templates"),
    autoescape=True,
    auto_reload=False,
)
templates.filters["datetime"] = _datetime
templates.filters["urlquote"] = lambda v: quote(str(v), safe="")


def _vendor_sri() -> dict[str, str]:
    # The integrity hash `make assets` recorded beside each vendored file, by file name.
    versions = Path(__file__).parent / "static" / "vendor" / "VERSIONS"
    sri = {}
    for line in versions.read_text().splitlines():
        if line and not line.startswith("#"):
            _, _, name, file_sri = line.split()
            sri[name] = file_sri
    for name in ("htmx.min.js", "uPlot.iife.min.js", "uPlot.min.css", "topojson-client.min.js", "countries-110m.json"):
        if name not in sri:
            raise RuntimeError(f"api/dashboard/static/vendor/VERSIONS has no line for {name}: run `make assets`")
    return sri


templates.globals["sri"] = _vendor_sri()


class SecurityHeaders:
    """ASGI middleware of the /app mount: CSP, nosniff, Referrer-Policy, no framing; HTML never cached."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(SECURITY_HEADERS)
                static = scope["path"].startswith(PREFIX + "/static/")
                if not static and not any(k == b"cache-control" for k, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


@dataclass
class View:
    """The request as a page sees it: who is signed in, in which workspace, with which role."""

    request: Request
    ctx: ServiceContext
    token: str
    session: sessions.Session
    user: User
    role: Role
    memberships: list[Membership]
    form: FormData | None = None
    flash: list[str] = field(default_factory=list)

    @property
    def workspace_id(self) -> str:
        return self.session.workspace_id

    @property
    def workspace_name(self) -> str:
        return next((m.workspace_name for m in self.memberships if m.workspace_id == self.workspace_id), "")

    @property
    def is_owner(self) -> bool:
        return self.role == "owner"

    def text(self, name: str, default: str = "") -> str:
        """A form field as text (files and absent fields give ``default``)."""
        value = self.form.get(name) if self.form is not None else None
        return value.strip() if isinstance(value, str) else default

    def render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        return render(self.request, template, status, view=self, **values)


def render(request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    """Render a template; ``partial`` is true for an htmx request (a fragment, not a whole page)."""
    values.setdefault("view", None)
    values.setdefault("partial", request.headers.get("hx-request") == "true")
    values["path"] = request.url.path
    html = templates.get_template(template).render(**values)
    return HTMLResponse(html, status_code=status)


def redirect(path: str) -> RedirectResponse:
    """After a successful POST: 303 to a page (so reload does not resubmit)."""
    return RedirectResponse(path, status_code=303)


async def redirect_with_secret(view: View, path: str, name: str, secret: str) -> RedirectResponse:
    """303 to the page that shows a new secret once: it is kept for this session's next page only
    (Redis, 5 minutes at most), so a reload neither shows it again nor makes a second one."""
    await sessions.set_flash(view.ctx, view.token, msgspec.json.encode({"name": name, "secret": secret}).decode())
    return redirect(path)


async def pop_secret(view: View) -> dict[str, str] | None:
    """The ``{"name", "secret"}`` that redirect_with_secret left for this page, deleted as it is read."""
    flash = await sessions.pop_flash(view.ctx, view.token)
    return msgspec.json.decode(flash) if flash else None


def error_page(request: Request, status: int, title: str, message: str, view: View | None = None) -> HTMLResponse:
    return render(request, "error.html", status, title=title, message=message, view=view)


def field_errors(exc: ValidationFailed) -> dict[str, str]:
    """A validation error's messages by top-level field (``rules[0].url`` → ``rules``), for the form."""
    out: dict[str, str] = {}
    for detail in exc.details or [{"path": None, "message": exc.message}]:
        path = detail.get("path") or ""
        name = path.split("[", 1)[0].split(".", 1)[0] or "form"
        message = str(detail["message"])
        if "[" in path or "." in path:
            message = f"{path}: {message}"
        out.setdefault(name, message)
    return out


def to_struct(data: dict[str, Any], kind: type[T]) -> T:
    """A page's fields, shaped as the API's JSON, decoded as the API decodes them: a bad one is
    the API's ValidationFailed, on the same field path."""
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        raise from_msgspec(exc) from None


def _same_origin(request: Request) -> bool:
    # Browsers send Origin on every cross-site POST; a mismatch is refused even with a token.
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] == host


async def read_form(request: Request) -> FormData:
    return await request.form(max_files=2, max_fields=500, max_part_size=MAX_UPLOAD_BYTES)


def csrf_ok(request: Request, form: FormData, expected: str) -> bool:
    """The token from the form field or the htmx header equals the session's, and the Origin is ours."""
    sent = form.get(CSRF_FIELD)
    token = sent if isinstance(sent, str) else request.headers.get(CSRF_HEADER, "")
    return bool(token) and secrets.compare_digest(token.encode(), expected.encode()) and _same_origin(request)


Handler = Callable[[View], Awaitable[Response]]


def page(handler: Handler, *, owner_only: bool = False) -> Callable[[Request], Awaitable[Response]]:
    """A dashboard endpoint: session, CSRF on state changes, role, and domain errors as pages."""

    async def endpoint(request: Request) -> Response:
        ctx: ServiceContext = request.app.state.ctx
        token = request.cookies.get(sessions.COOKIE, "")
        session = await sessions.load_session(ctx, token)
        if session is None:
            if request.method == "GET":
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return redirect(f"{PREFIX}/signin?next={quote(target, safe='')}")
            return error_page(request, 403, "Signed out", "Your session has ended. Sign in again, then retry.")
        try:
            user = await users.get_user(ctx, session.user_id)
        except NotFound:
            await sessions.destroy_session(ctx, token, session.user_id)
            return redirect(f"{PREFIX}/signin")
        memberships = await users.memberships(ctx, user.id)
        role = next((m.role for m in memberships if m.workspace_id == session.workspace_id), None)
        if role is None:  # removed from this workspace: move to another, or out
            if not memberships:
                await sessions.destroy_session(ctx, token, user.id)
                return error_page(request, 403, "No workspace", "You are no longer a member of any workspace.")
            session.workspace_id, role = memberships[0].workspace_id, memberships[0].role
            await sessions.save_session(ctx, token, session)
        view = View(request, ctx, token, session, user, role, memberships)
        if request.method not in ("GET", "HEAD"):
            view.form = await read_form(request)
            if not csrf_ok(request, view.form, session.csrf):
                return error_page(
                    request, 403, "Request refused", "This form is out of date or was not sent by this page. "
                    "Reload the page and try again.", view
                )  # fmt: skip
        if owner_only and not view.is_owner:
            return error_page(request, 403, "Owners only", "Only an owner of this workspace can open this page.", view)
        try:
            return await handler(view)
        except NotFound as exc:
            return error_page(request, 404, "Not found", exc.message, view)
        except Forbidden as exc:
            return error_page(request, 403, "Not allowed", exc.message, view)
        except H0pError as exc:
            return error_page(request, 400, "Could not do that", exc.message, view)

    return endpoint


def query(request: Request) -> Mapping[str, str]:
    """Query parameters, the last value of each."""
    return dict(request.query_params)
