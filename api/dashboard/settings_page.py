"""Settings page: workspace name, plan and usage; members and invitations (owners only)."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from api.dashboard import sessions
from api.dashboard.web import PREFIX, View, field_errors, page, redirect
from api.errors import AlreadyExists, Forbidden, ValidationFailed
from api.services import files, users, workspaces


async def _settings(view: View, status: int = 200, **values: object) -> Response:
    info = await workspaces.workspace_info(view.ctx, view.workspace_id)
    storage = await files.storage_used(view.ctx, view.workspace_id)
    members = await users.list_members(view.ctx, view.workspace_id) if view.is_owner else []
    invitations = await users.list_invitations(view.ctx, view.workspace_id) if view.is_owner else []
    values.setdefault("errors", {})
    values["invite_link"] = ""
    if view.request.method == "GET":
        values["invite_link"] = await sessions.pop_flash(view.ctx, view.token) or ""
    return view.render(
        "settings.html", status, info=info, storage=storage, quota=view.ctx.settings.file_quota_bytes,
        members=members, invitations=invitations, **values,
    )  # fmt: skip


async def _get(view: View) -> Response:
    return await _settings(view)


async def _rename(view: View) -> Response:
    try:
        await workspaces.rename_workspace(view.ctx, view.workspace_id, view.text("name"))
    except ValidationFailed as exc:
        return await _settings(view, 400, errors=field_errors(exc))
    except AlreadyExists as exc:
        return await _settings(view, 409, errors={"name": exc.message})
    return redirect(f"{PREFIX}/settings")


async def _invite(view: View) -> Response:
    try:
        _, token = await users.create_invitation(
            view.ctx, view.workspace_id, view.text("email"), view.text("role") or "member", view.user.id
        )
    except ValidationFailed as exc:
        return await _settings(view, 400, errors={f"invite-{k}": v for k, v in field_errors(exc).items()})
    base = f"{view.request.url.scheme}://{view.request.url.netloc}"
    # Shown once, on the page the redirect leads to (a reload does not make a second invitation).
    await sessions.set_flash(view.ctx, view.token, f"{base}{PREFIX}/invite/{token}")
    return redirect(f"{PREFIX}/settings")


async def _revoke_invitation(view: View) -> Response:
    await users.revoke_invitation(view.ctx, view.workspace_id, view.request.path_params["id"])
    return redirect(f"{PREFIX}/settings")


async def _remove_member(view: View) -> Response:
    try:
        await users.remove_member(view.ctx, view.workspace_id, view.request.path_params["id"])
    except Forbidden as exc:
        return await _settings(view, 403, errors={"members": exc.message})
    return redirect(f"{PREFIX}/settings")


ROUTES = [
    Route("/settings", page(_get), methods=["GET"]),
    Route("/settings/name", page(_rename, owner_only=True), methods=["POST"]),
    Route("/settings/invitations", page(_invite, owner_only=True), methods=["POST"]),
    Route("/settings/invitations/{id}/revoke", page(_revoke_invitation, owner_only=True), methods=["POST"]),
    Route("/settings/members/{id}/remove", page(_remove_member, owner_only=True), methods=["POST"]),
]
