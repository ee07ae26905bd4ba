"""Domains, folders and tags pages: list with counts, create, rename/update, verify, delete."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from api.dashboard.web import PREFIX, View, field_errors, page, redirect, to_struct
from api.errors import AlreadyExists, FeatureNotAvailable, PlanLimitReached, ValidationFailed
from api.schemas import DomainCreate, DomainUpdate, FolderWrite, PageQuery, TagCreate, TagUpdate
from api.services import domains, folders, tags

LIMIT = 50
REFUSALS = (ValidationFailed, AlreadyExists, PlanLimitReached, FeatureNotAvailable)


def _page(view: View) -> PageQuery:
    raw = view.request.query_params.get("page", "0")
    return PageQuery(page=min(int(raw), 10_000) if raw.isdigit() else 0, limit=LIMIT)


def _errors(exc: Exception, row: str = "") -> dict[str, str]:
    """A refusal's messages by field; for a table row's own form (``row``), its first message alone."""
    errors = field_errors(exc) if isinstance(exc, ValidationFailed) else {"form": str(exc)}
    return {row: next(iter(errors.values()))} if row else errors


# --- folders ----------------------------------------------------------------------------


async def _folders(view: View, errors: dict[str, str] | None = None, status: int = 200) -> Response:
    result = await folders.list_folders(view.ctx, view.workspace_id, _page(view))
    return view.render("folders.html", status, result=result, errors=errors or {}, error_id=view.text("id"))


async def _folders_get(view: View) -> Response:
    return await _folders(view)


async def _folder_create(view: View) -> Response:
    try:
        await folders.create_folder(view.ctx, view.workspace_id, to_struct({"name": view.text("name")}, FolderWrite))
    except REFUSALS as exc:
        return await _folders(view, _errors(exc), 400)
    return redirect(f"{PREFIX}/folders")


async def _folder_rename(view: View) -> Response:
    folder_id = view.request.path_params["id"]
    try:
        data = to_struct({"name": view.text("name")}, FolderWrite)
        await folders.rename_folder(view.ctx, view.workspace_id, folder_id, data)
    except REFUSALS as exc:
        return await _folders(view, _errors(exc, row=f"rename-{folder_id}"), 400)
    return redirect(f"{PREFIX}/folders")


async def _folder_delete(view: View) -> Response:
    await folders.delete_folder(view.ctx, view.workspace_id, view.request.path_params["id"])
    return redirect(f"{PREFIX}/folders")


# --- tags -------------------------------------------------------------------------------

COLORS = ("gray", "red", "yellow", "green", "blue", "purple", "pink", "brown")


async def _tags(view: View, errors: dict[str, str] | None = None, status: int = 200) -> Response:
    result = await tags.list_tags(view.ctx, view.workspace_id, _page(view))
    return view.render("tags.html", status, result=result, errors=errors or {}, colors=COLORS)


async def _tags_get(view: View) -> Response:
    return await _tags(view)


async def _tag_create(view: View) -> Response:
    try:
        data = to_struct({"name": view.text("name"), "color": view.text("color") or "gray"}, TagCreate)
        await tags.create_tag(view.ctx, view.workspace_id, data)
    except REFUSALS as exc:
        return await _tags(view, _errors(exc), 400)
    return redirect(f"{PREFIX}/tags")


async def _tag_update(view: View) -> Response:
    tag_id = view.request.path_params["id"]
    errors: dict[str, str] = {}
    try:
        data = to_struct({"name": view.text("name"), "color": view.text("color") or "gray"}, TagUpdate)
        await tags.update_tag(view.ctx, view.workspace_id, tag_id, data)
    except REFUSALS as exc:
        errors = _errors(exc, row=f"rename-{tag_id}")
    if view.request.headers.get("hx-request") == "true":
        # htmx edits the row in place: the row comes back (200, so htmx swaps it in) with any error in it
        tag = await tags.get_tag(view.ctx, view.workspace_id, tag_id)
        return view.render("_tag_row.html", t=tag, colors=COLORS, errors=errors)
    if errors:
        return await _tags(view, errors, 400)
    return redirect(f"{PREFIX}/tags")


async def _tag_delete(view: View) -> Response:
    await tags.delete_tag(view.ctx, view.workspace_id, view.request.path_params["id"])
    return redirect(f"{PREFIX}/tags")


# --- domains ----------------------------------------------------------------------------


async def _domains(
    view: View, errors: dict[str, str] | None = None, status: int = 200, checked: Any = None
) -> Response:
    result = await domains.list_domains(view.ctx, view.workspace_id, _page(view))
    return view.render(
        "domains.html", status, result=result, errors=errors or {}, checked=checked,
        edge=view.ctx.settings.edge_hostname,
    )  # fmt: skip


async def _domains_get(view: View) -> Response:
    return await _domains(view)


def _url_fields(view: View) -> dict[str, str | None]:
    return {
        "rootUrl": view.text("root_url") or None,
        "notFoundUrl": view.text("not_found_url") or None,
        "expiredUrl": view.text("expired_url") or None,
    }


async def _domain_add(view: View) -> Response:
    try:
        data = to_struct({"domain": view.text("domain"), **_url_fields(view)}, DomainCreate)
        await domains.add_domain(view.ctx, view.workspace_id, data)
    except REFUSALS as exc:
        return await _domains(view, _errors(exc), 400)
    return redirect(f"{PREFIX}/domains")


async def _domain_verify(view: View) -> Response:
    result = await domains.verify_domain(view.ctx, view.workspace_id, view.request.path_params["id"])
    return await _domains(view, checked=result)


async def _domain_update(view: View) -> Response:
    domain_id = view.request.path_params["id"]
    try:
        await domains.update_domain(view.ctx, view.workspace_id, domain_id, to_struct(_url_fields(view), DomainUpdate))
    except REFUSALS as exc:
        return await _domains(view, _errors(exc, row=f"update-{domain_id}"), 400)
    return redirect(f"{PREFIX}/domains")


async def _domain_delete(view: View) -> Response:
    await domains.delete_domain(view.ctx, view.workspace_id, view.request.path_params["id"])
    return redirect(f"{PREFIX}/domains")


ROUTES = [
    Route("/folders", page(_folders_get), methods=["GET"]),
    Route("/folders", page(_folder_create), methods=["POST"]),
    Route("/folders/{id}/rename", page(_folder_rename), methods=["POST"]),
    Route("/folders/{id}/delete", page(_folder_delete), methods=["POST"]),
    Route("/tags", page(_tags_get), methods=["GET"]),
    Route("/tags", page(_tag_create), methods=["POST"]),
    Route("/tags/{id}/update", page(_tag_update), methods=["POST"]),
    Route("/tags/{id}/delete", page(_tag_delete), methods=["POST"]),
    Route("/domains", page(_domains_get), methods=["GET"]),
    Route("/domains", page(_domain_add), methods=["POST"]),
    Route("/domains/{id}/verify", page(_domain_verify), methods=["POST"]),
    Route("/domains/{id}/update", page(_domain_update), methods=["POST"]),
    Route("/domains/{id}/delete", page(_domain_delete), methods=["POST"]),
]
