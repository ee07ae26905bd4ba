"""API Keys page (owners): create with a name and scopes, the secret shown once, list, revoke."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from api.dashboard.web import PREFIX, View, field_errors, page, pop_secret, redirect, redirect_with_secret
from api.errors import PlanLimitReached, ValidationFailed
from api.services import keys


async def _keys(view: View, status: int = 200, **values: object) -> Response:
    listed = await keys.list_keys(view.ctx, view.workspace_id)
    values.setdefault("errors", {})
    values["created"] = await pop_secret(view) if view.request.method == "GET" else None
    return view.render("keys.html", status, keys=listed, resources=keys.RESOURCES, **values)


async def _keys_get(view: View) -> Response:
    return await _keys(view)


async def _create(view: View) -> Response:
    assert view.form is not None
    scopes = [s for s in view.form.getlist("scopes") if isinstance(s, str)]
    name = view.text("name")
    try:
        if not name:
            raise ValidationFailed([{"path": "name", "message": "give the key a name"}])
        key, secret = await keys.create_key(view.ctx, view.workspace_id, name, scopes)
    except ValidationFailed as exc:
        return await _keys(view, 400, errors=field_errors(exc))
    except PlanLimitReached as exc:
        return await _keys(view, 403, errors={"form": exc.message})
    # the secret is stored hashed: this redirect is the only time it can be shown
    return await redirect_with_secret(view, f"{PREFIX}/keys", key.name, secret)


async def _revoke(view: View) -> Response:
    await keys.delete_key(view.ctx, view.workspace_id, view.request.path_params["id"])
    return redirect(f"{PREFIX}/keys")


ROUTES = [
    Route("/keys", page(_keys_get, owner_only=True), methods=["GET"]),
    Route("/keys", page(_create, owner_only=True), methods=["POST"]),
    Route("/keys/{id}/delete", page(_revoke, owner_only=True), methods=["POST"]),
]
