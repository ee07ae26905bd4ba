"""Links pages: the table (search, filters, sort, pages, bulk actions), the form, the detail page."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import UploadFile
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from api.dashboard import link_form
from api.dashboard.web import PREFIX, View, field_errors, page, redirect, to_struct
from api.errors import AlreadyExists, FeatureNotAvailable, PlanLimitReached, ValidationFailed
from api.schemas import Link, LinkCreate, LinkListQuery, LinkUpdate, PageQuery
from api.services import analytics, analytics_query, domains, files, folders, link_search, links, qr, tags

PAGE_SIZE = 25
_ALL = PageQuery(page=0, limit=50)
_FILTERS = ("search", "domain", "tag", "folder", "archived", "sort", "order", "page")


async def _choices(view: View) -> dict[str, Any]:
    """Folders, tags and domains of the workspace (the filters' and the form's options)."""
    folder_list, tag_list, domain_list = await asyncio.gather(
        folders.list_folders(view.ctx, view.workspace_id, _ALL),
        tags.list_tags(view.ctx, view.workspace_id, _ALL),
        domains.list_domains(view.ctx, view.workspace_id, _ALL),
    )
    names = [view.ctx.settings.default_domain] + [d.domain for d in domain_list.data if d.verified]
    return {"folders": folder_list.data, "tags": tag_list.data, "domains": names}


def _list_query(params: dict[str, str]) -> LinkListQuery:
    raw: dict[str, Any] = {"limit": PAGE_SIZE}
    if params.get("search"):
        raw["search"] = params["search"][:200]
    if params.get("domain"):
        raw["domain"] = params["domain"]
    if params.get("tag"):
        raw["tagIds"] = params["tag"]
    if params.get("folder"):
        raw["folderId"] = params["folder"]
    raw["archived"] = {"yes": True, "all": None}.get(params.get("archived", ""), False)
    if params.get("sort") in ("createdAt", "clicks", "lastClickedAt"):
        raw["sort"] = params["sort"]
    if params.get("order") in ("asc", "desc"):
        raw["order"] = params["order"]
    if params.get("page", "").isdigit():
        raw["page"] = min(int(params["page"]), 1_000_000)
    return to_struct(raw, LinkListQuery)


async def _links(view: View) -> Response:
    params = {k: v for k, v in view.request.query_params.items() if k in _FILTERS}
    query = _list_query(params)
    result, choices = await asyncio.gather(link_search.list_links(view.ctx, view.workspace_id, query), _choices(view))
    filtered = any(params.get(k) for k in ("search", "domain", "tag", "folder")) or params.get("archived")

    def page_url(number: int) -> str:
        return f"{PREFIX}/links?" + urlencode({**params, "page": number})

    template = "links_table.html" if view.request.headers.get("hx-target") == "results" else "links.html"
    return view.render(
        template,
        result=result,
        params=params,
        filtered=filtered,
        page_url=page_url,
        back=view.request.url.path + ("?" + view.request.url.query if view.request.url.query else ""),
        pages=(result.total + PAGE_SIZE - 1) // PAGE_SIZE,
        tag_names={t.id: t for t in choices["tags"]},
        folder_names={f.id: f.name for f in choices["folders"]},
        created=view.request.query_params.get("created", ""),
        done=_done_message(view.request.query_params.get("done", "")),
        **choices,
    )


_DONE = {"delete": "deleted", "archive": "archived", "unarchive": "unarchived", "move": "moved", "tag": "tagged"}


def _done_message(raw: str) -> str:
    # `done=3 archive` after a bulk action: "3 links archived."
    count, _, action = raw.partition(" ")
    if not count.isdigit() or action not in _DONE:
        return ""
    return f"{count} link{'' if count == '1' else 's'} {_DONE[action]}."


async def _bulk(view: View) -> Response:
    ids = [v for v in (view.form.getlist("ids") if view.form else []) if isinstance(v, str)][: PAGE_SIZE * 2]
    action = view.text("action")
    back = view.text("back")
    back = back if back.startswith(f"{PREFIX}/links") else f"{PREFIX}/links"
    ws, ctx = view.workspace_id, view.ctx
    for link_id in ids:
        if action == "delete":
            await links.delete_link(ctx, ws, link_id)
        elif action in ("archive", "unarchive"):
            await links.update_link(ctx, ws, link_id, LinkUpdate(archived=action == "archive"))
        elif action == "move":
            await links.update_link(ctx, ws, link_id, LinkUpdate(folder_id=view.text("folder_id") or None))
        elif action == "tag" and view.text("tag_id"):
            link = await links.get_link(ctx, ws, link_id)
            if view.text("tag_id") not in link.tag_ids:
                await links.update_link(ctx, ws, link_id, LinkUpdate(tag_ids=[*link.tag_ids, view.text("tag_id")]))
    separator = "&" if "?" in back else "?"
    return redirect(f"{back}{separator}done={len(ids)}+{action}")


async def _form(view: View, link: Link | None, errors: dict[str, str], status: int = 200) -> HTMLResponse:
    choices = await _choices(view)
    return view.render(
        "link_form.html",
        status,
        link=link,
        values=link_form.values_of(link, view.form if errors else None),
        errors=errors,
        condition_types=link_form.CONDITION_TYPES,
        utm_fields=link_form.UTM_FIELDS,
        **choices,
    )


async def _upload_og_image(view: View, data: dict[str, Any]) -> None:
    upload = view.form.get("og_image_file") if view.form else None
    if isinstance(upload, UploadFile) and upload.filename:
        content = await upload.read()
        try:
            info = await files.upload_file(view.ctx, view.workspace_id, content, upload.filename)
        except ValidationFailed as exc:
            raise ValidationFailed([{"path": "ogImage", "message": exc.message}]) from None
        data["ogImage"] = files.public_content_url(view.ctx.settings, info.id)


async def _new(view: View) -> Response:
    return await _form(view, None, {})


async def _create(view: View) -> Response:
    return await _submit(view, None)


async def _edit(view: View) -> Response:
    link = await links.get_link(view.ctx, view.workspace_id, view.request.path_params["id"])
    return await _form(view, link, {})


async def _save(view: View) -> Response:
    link = await links.get_link(view.ctx, view.workspace_id, view.request.path_params["id"])
    return await _submit(view, link)


async def _submit(view: View, link: Link | None) -> Response:
    """The posted form makes a new link (``link`` None) or saves ``link``; refused, the form again with why."""
    assert view.form is not None
    try:
        data = link_form.form_to_json(view.form, editing=link is not None)
        await _upload_og_image(view, data)
        if link is None:
            created = await links.create_link(view.ctx, view.workspace_id, to_struct(data, LinkCreate))
            return redirect(f"{PREFIX}/links/{created.id}?created=1")
        await links.update_link(view.ctx, view.workspace_id, link.id, to_struct(data, LinkUpdate))
    except ValidationFailed as exc:
        return await _form(view, link, field_errors(exc), 400)
    except (AlreadyExists, FeatureNotAvailable, PlanLimitReached) as exc:
        return await _form(view, link, {"slug" if "slug" in exc.message else "form": exc.message}, 409)
    return redirect(f"{PREFIX}/links/{link.id}?saved=1")


async def _delete(view: View) -> Response:
    await links.delete_link(view.ctx, view.workspace_id, view.request.path_params["id"])
    return redirect(f"{PREFIX}/links?done=1+delete")


async def _slug_check(view: View) -> Response:
    slug = view.request.query_params.get("slug", "").strip()
    domain = view.request.query_params.get("domain") or None
    current = view.request.query_params.get("link") or None
    if not slug:
        return HTMLResponse("")
    if len(slug) > 190 or "/" in slug or any(c.isspace() for c in slug):
        return view.render("_slug_status.html", available=None, slug=slug)
    available = await links.slug_available(view.ctx, domain, slug, current)
    return view.render("_slug_status.html", available=available, slug=slug)


def _qr_params(view: View) -> dict[str, str]:
    q = view.request.query_params
    params = {"fgColor": q.get("fg", "#000000"), "bgColor": q.get("bg", "#ffffff"), "size": q.get("size", "300")}
    if q.get("logo"):
        params["logo"] = q["logo"]
    return params


async def _detail(view: View) -> Response:
    link = await links.get_link(view.ctx, view.workspace_id, view.request.path_params["id"])
    clicks_query = analytics_query.parse_query({"linkId": link.id, "interval": "90d"})
    recent = await analytics.list_events(view.ctx, view.workspace_id, clicks_query, limit=10)
    choices = await _choices(view)
    qr_params = _qr_params(view)
    return view.render(
        "link_detail.html",
        link=link,
        recent=recent["data"],
        clicks_total=recent["total"],
        qr_query=urlencode(qr_params),
        qr=qr_params,
        tag_names={t.id: t for t in choices["tags"]},
        folder_names={f.id: f.name for f in choices["folders"]},
        created=view.request.query_params.get("created", ""),
        saved=view.request.query_params.get("saved", ""),
        qr_error="",
    )


async def _qr_image(view: View) -> Response:
    link_id = view.request.path_params["id"]
    fmt = view.request.path_params["format"]
    data = await qr.link_qr_url(view.ctx, view.workspace_id, link_id)
    # The image URL carries the API's own QR parameter names (what the designer form turned into).
    q = view.request.query_params
    params = {k: q[k] for k in ("fgColor", "bgColor", "size", "logo") if q.get(k)} | {"format": fmt}
    try:
        image = await qr.generate_qr(view.ctx, view.workspace_id, qr.options_from_query(params, data))
    except ValidationFailed as exc:
        return HTMLResponse(exc.message, status_code=400)
    headers = {"Cache-Control": "private, max-age=300"}
    if view.request.query_params.get("download"):
        headers["Content-Disposition"] = f'attachment; filename="qr-{link_id}.{fmt}"'
    return Response(image.content, media_type=image.media_type, headers=headers)


async def _qr_logo(view: View) -> Response:
    link_id = view.request.path_params["id"]
    await links.get_link(view.ctx, view.workspace_id, link_id)
    upload = view.form.get("logo_file") if view.form else None
    if not isinstance(upload, UploadFile) or not upload.filename:
        return redirect(f"{PREFIX}/links/{link_id}")
    info = await files.upload_file(view.ctx, view.workspace_id, await upload.read(), upload.filename)
    query = urlencode({"fg": view.text("fg") or "#000000", "bg": view.text("bg") or "#ffffff",
                       "size": view.text("size") or "300", "logo": info.id})  # fmt: skip
    return redirect(f"{PREFIX}/links/{link_id}?{query}")


ROUTES = [
    Route("/links", page(_links), methods=["GET"]),
    Route("/links/bulk", page(_bulk), methods=["POST"]),
    Route("/links/new", page(_new), methods=["GET"]),
    Route("/links/new", page(_create), methods=["POST"]),
    Route("/links/slug-check", page(_slug_check), methods=["GET"]),
    Route("/links/{id}", page(_detail), methods=["GET"]),
    Route("/links/{id}/edit", page(_edit), methods=["GET"]),
    Route("/links/{id}/edit", page(_save), methods=["POST"]),
    Route("/links/{id}/delete", page(_delete), methods=["POST"]),
    Route("/links/{id}/qr.{format:str}", page(_qr_image), methods=["GET"]),
    Route("/links/{id}/qr-logo", page(_qr_logo), methods=["POST"]),
]
