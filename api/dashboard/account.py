"""Signing in and out, the account page, switching workspace, accepting an invitation.

Forms shown before there is a session (sign-in, invitation) carry a token that must equal a
short-lived cookie's (double submit): a page on another site cannot sign a browser in to an
account of the attacker's choosing.
"""

from __future__ import annotations

import secrets

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.auth import client_address
from api.dashboard import sessions
from api.dashboard.web import PREFIX, View, csrf_ok, error_page, field_errors, page, read_form, redirect, render
from api.errors import NotFound, ValidationFailed
from api.services import users
from api.services.context import ServiceContext

PRE_COOKIE = "h0p_form"
SIGNIN_FAILED = "The email or password is not correct."
THROTTLED = "Too many failed sign-ins. Wait a few minutes, then try again."


def _secure(ctx: ServiceContext) -> bool:
    return ctx.settings.public_scheme == "https"


def _safe_next(target: str) -> str:
    # Only a path of the dashboard: `next=//evil.example` or `https://…` would be an open redirect.
    if target.startswith(PREFIX + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return f"{PREFIX}/links"


def _anonymous_form(request: Request, template: str, status: int = 200, **values: object) -> Response:
    ctx: ServiceContext = request.app.state.ctx
    token = request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(32)
    response = render(request, template, status, csrf=token, **values)
    response.set_cookie(
        PRE_COOKIE, token, max_age=3600, path=PREFIX, httponly=True, samesite="strict", secure=_secure(ctx)
    )
    return response


async def _anonymous_post(request: Request) -> tuple[dict[str, str], bool]:
    form = await read_form(request)
    ok = csrf_ok(request, form, request.cookies.get(PRE_COOKIE, "\0"))
    return {k: v for k, v in form.items() if isinstance(v, str)}, ok


def _start_session(ctx: ServiceContext, response: Response, token: str) -> Response:
    response.set_cookie(
        sessions.COOKIE,
        token,
        max_age=ctx.settings.session_max_s,
        path=PREFIX,
        httponly=True,
        samesite="lax",
        secure=_secure(ctx),
    )
    return response


async def signin_page(request: Request) -> Response:
    ctx: ServiceContext = request.app.state.ctx
    if await sessions.load_session(ctx, request.cookies.get(sessions.COOKIE)):
        return redirect(_safe_next(request.query_params.get("next", "")))
    return _anonymous_form(request, "signin.html", next=request.query_params.get("next", ""), email="", error="",
                           notice="")  # fmt: skip


async def signin(request: Request) -> Response:
    ctx: ServiceContext = request.app.state.ctx
    form, ok = await _anonymous_post(request)
    email, password, target = form.get("email", ""), form.get("password", ""), form.get("next", "")
    if not ok:
        return error_page(request, 403, "Request refused", "This form is out of date. Reload the page and try again.")
    client = client_address(request, ctx.settings)
    if await sessions.signin_blocked(ctx, email, client):
        return _anonymous_form(request, "signin.html", 429, next=target, email=email, error=THROTTLED, notice="")
    user = await users.authenticate_user(ctx, email, password)
    if user is None:
        await sessions.record_failed_signin(ctx, email, client)
        return _anonymous_form(request, "signin.html", 401, next=target, email=email, error=SIGNIN_FAILED, notice="")
    memberships = await users.memberships(ctx, user.id)
    if not memberships:
        return _anonymous_form(request, "signin.html", 403, next=target, email=email, notice="",
                               error="This account is not a member of any workspace.")  # fmt: skip
    # A new token at every sign-in (a token planted before sign-in is worth nothing after it).
    old = request.cookies.get(sessions.COOKIE)
    if old and (previous := await sessions.load_session(ctx, old)):
        await sessions.destroy_session(ctx, old, previous.user_id)
    token = await sessions.create_session(ctx, user.id, memberships[0].workspace_id)
    response = _start_session(ctx, redirect(_safe_next(target)), token)
    response.delete_cookie(PRE_COOKIE, path=PREFIX)
    return response


async def _signout(view: View) -> Response:
    await sessions.destroy_session(view.ctx, view.token, view.user.id)
    response = redirect(f"{PREFIX}/signin")
    response.delete_cookie(sessions.COOKIE, path=PREFIX)
    return response


async def _account(view: View) -> Response:
    notice = "Password changed." if view.request.query_params.get("changed") else ""
    return view.render("account.html", errors={}, notice=notice)


async def _change_password(view: View) -> Response:
    try:
        await users.change_password(view.ctx, view.user.id, view.text("current_password"), view.text("new_password"))
    except ValidationFailed as exc:
        return view.render("account.html", 400, errors=field_errors(exc), notice="")
    # Every session of the account ends; this browser gets a fresh one.
    await sessions.destroy_user_sessions(view.ctx, view.user.id)
    token = await sessions.create_session(view.ctx, view.user.id, view.workspace_id)
    return _start_session(view.ctx, redirect(f"{PREFIX}/account?changed=1"), token)


async def _signout_everywhere(view: View) -> Response:
    await sessions.destroy_user_sessions(view.ctx, view.user.id)
    response = redirect(f"{PREFIX}/signin")
    response.delete_cookie(sessions.COOKIE, path=PREFIX)
    return response


async def _switch_workspace(view: View) -> Response:
    wanted = view.text("workspace")
    if not any(m.workspace_id == wanted for m in view.memberships):
        raise NotFound("you are not a member of this workspace")
    view.session.workspace_id = wanted
    await sessions.save_session(view.ctx, view.token, view.session)
    return redirect(f"{PREFIX}/links")


async def invite_page(request: Request) -> Response:
    ctx: ServiceContext = request.app.state.ctx
    token = request.path_params["token"]
    try:
        invitation = await users.find_invitation(ctx, token)
    except NotFound as exc:
        return error_page(request, 404, "Invitation not valid", exc.message)
    return _anonymous_form(request, "invite.html", invitation=invitation, token=token, error="")


async def accept_invite(request: Request) -> Response:
    ctx: ServiceContext = request.app.state.ctx
    token = request.path_params["token"]
    form, ok = await _anonymous_post(request)
    if not ok:
        return error_page(request, 403, "Request refused", "This form is out of date. Reload the page and try again.")
    try:
        invitation = await users.find_invitation(ctx, token)
        user = await users.accept_invitation(ctx, token, form.get("password", ""))
    except NotFound as exc:
        return error_page(request, 404, "Invitation not valid", exc.message)
    except ValidationFailed as exc:
        return _anonymous_form(request, "invite.html", 400, invitation=invitation, token=token, error=exc.message)
    workspace = next(
        m.workspace_id for m in await users.memberships(ctx, user.id) if m.workspace_name == invitation.workspace_name
    )
    session = await sessions.create_session(ctx, user.id, workspace)
    return _start_session(ctx, redirect(f"{PREFIX}/links"), session)


ROUTES = [
    Route("/signin", signin_page, methods=["GET"]),
    Route("/signin", signin, methods=["POST"]),
    Route("/signout", page(_signout), methods=["POST"]),
    Route("/account", page(_account), methods=["GET"]),
    Route("/account/password", page(_change_password), methods=["POST"]),
    Route("/account/signout-everywhere", page(_signout_everywhere), methods=["POST"]),
    Route("/workspace", page(_switch_workspace), methods=["POST"]),
    Route("/invite/{token}", invite_page, methods=["GET"]),
    Route("/invite/{token}", accept_invite, methods=["POST"]),
]
