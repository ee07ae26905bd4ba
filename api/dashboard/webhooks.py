"""Webhooks page (owners): endpoints with their events, the signing secret shown once, deliveries."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from api.dashboard.web import PREFIX, View, field_errors, page, pop_secret, redirect, redirect_with_secret, to_struct
from api.errors import PlanLimitReached, ValidationFailed
from api.schemas import PageQuery
from api.services import webhooks
from api.webhook_schemas import EVENT_TYPES, DeliveryListQuery, WebhookCreate, WebhookUpdate


async def _list(view: View, status: int = 200, errors: dict[str, str] | None = None) -> Response:
    result = await webhooks.list_webhooks(view.ctx, view.workspace_id, PageQuery(page=0, limit=50))
    created = await pop_secret(view) if view.request.method == "GET" else None
    return view.render("webhooks.html", status, result=result, events=EVENT_TYPES, errors=errors or {},
                       created=created, values=view.form or {})  # fmt: skip


async def _get(view: View) -> Response:
    return await _list(view)


async def _create(view: View) -> Response:
    assert view.form is not None
    events = [e for e in view.form.getlist("events") if isinstance(e, str)]
    try:
        data = to_struct({"url": view.text("url"), "name": view.text("name"), "events": events}, WebhookCreate)
        hook = await webhooks.create_webhook(view.ctx, view.workspace_id, data)
    except ValidationFailed as exc:
        return await _list(view, 400, field_errors(exc))
    except PlanLimitReached as exc:
        return await _list(view, 403, {"form": exc.message})
    # shown once, on the page the redirect leads to: the service keeps it only to sign deliveries
    return await redirect_with_secret(view, f"{PREFIX}/webhooks/{hook.id}", hook.name or hook.url, hook.secret)


async def _detail(view: View) -> Response:
    hook_id = view.request.path_params["id"]
    hook = await webhooks.get_webhook(view.ctx, view.workspace_id, hook_id)
    raw_page = view.request.query_params.get("page", "0")
    query = DeliveryListQuery(page=int(raw_page) if raw_page.isdigit() else 0, limit=20)
    deliveries = await webhooks.list_deliveries(view.ctx, view.workspace_id, hook_id, query)
    return view.render("webhook_detail.html", hook=hook, deliveries=deliveries, created=await pop_secret(view))


async def _test(view: View) -> Response:
    hook_id = view.request.path_params["id"]
    await webhooks.test_webhook(view.ctx, view.workspace_id, hook_id)
    return redirect(f"{PREFIX}/webhooks/{hook_id}")


async def _rotate(view: View) -> Response:
    hook = await webhooks.rotate_secret(view.ctx, view.workspace_id, view.request.path_params["id"])
    return await redirect_with_secret(view, f"{PREFIX}/webhooks/{hook.id}", hook.name or hook.url, hook.secret)


async def _toggle(view: View) -> Response:
    hook_id = view.request.path_params["id"]
    disabled = view.text("disabled") == "true"
    await webhooks.update_webhook(view.ctx, view.workspace_id, hook_id, WebhookUpdate(disabled=disabled))
    return redirect(f"{PREFIX}/webhooks/{hook_id}")


async def _delete(view: View) -> Response:
    await webhooks.delete_webhook(view.ctx, view.workspace_id, view.request.path_params["id"])
    return redirect(f"{PREFIX}/webhooks")


ROUTES = [
    Route("/webhooks", page(_get, owner_only=True), methods=["GET"]),
    Route("/webhooks", page(_create, owner_only=True), methods=["POST"]),
    Route("/webhooks/{id}", page(_detail, owner_only=True), methods=["GET"]),
    Route("/webhooks/{id}/test", page(_test, owner_only=True), methods=["POST"]),
    Route("/webhooks/{id}/rotate", page(_rotate, owner_only=True), methods=["POST"]),
    Route("/webhooks/{id}/toggle", page(_toggle, owner_only=True), methods=["POST"]),
    Route("/webhooks/{id}/delete", page(_delete, owner_only=True), methods=["POST"]),
]
