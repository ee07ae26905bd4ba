"""Links: create, read, update, delete, bulk create and upsert — the one way links change.

Every write commits in Postgres together with a ``cache_outbox`` row, then lands the
edge's Redis record and publishes the invalidation (``api.cache_sync.push``). Used by the
HTTP routes, the CLI, MCP and the tests alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import msgspec

from api import cache_sync
from api.errors import AlreadyExists, H0pError, NotFound, ValidationFailed, field_error, status_and_code
from api.ids import new_id, random_slug
from api.link_rules import rules_from_json, split_from_json
from api.schemas import BulkItemError, BulkItemFailure, Link, LinkCreate, LinkUpdate
from api.services import files, webhooks
from api.services.context import ServiceContext
from api.services.link_fields import (
    PLAIN_COLUMNS,
    check_domain,
    check_references,
    hash_password,
    link_columns,
    require_features,
)
from api.services.plans import Plan, get_plan, require_below

MAX_BULK = 100
_SLUG_ATTEMPTS = 8

LINK_COLUMNS = (
    "SELECT l.id, l.domain, l.slug, l.url, l.rules::text AS rules, l.split::text AS split, l.status_code,"
    " l.password_hash IS NOT NULL AS password_protected, l.expires_at, l.expired_url, l.utm_source,"
    " l.utm_medium, l.utm_campaign, l.utm_term, l.utm_content, l.forward_query, l.archived, l.og_title,"
    " l.og_description, l.og_image, l.title, l.description, l.comments, l.folder_id, l.external_id,"
    " c.clicks, c.last_clicked_at, l.created_at, l.updated_at,"
    " ARRAY(SELECT t.tag_id FROM link_tags t WHERE t.link_id = l.id ORDER BY t.tag_id) AS tag_ids"
)
# A link's click counters live beside it (api/migrations/0023_link_counters.sql): every link has its row.
WITH_COUNTERS = " JOIN link_counters c ON c.link_id = l.id"
LINK_SELECT = LINK_COLUMNS + " FROM links l" + WITH_COUNTERS


def link_from_row(ctx: ServiceContext, row: asyncpg.Record) -> Link:
    """The API shape of a ``LINK_SELECT`` row."""
    return Link(
        id=row["id"],
        domain=row["domain"],
        slug=row["slug"],
        url=row["url"],
        short_url=ctx.settings.short_url(row["domain"], row["slug"]),
        rules=rules_from_json(row["rules"]),
        split=split_from_json(row["split"]),
        status_code=row["status_code"],
        password_protected=row["password_protected"],
        expires_at=row["expires_at"],
        expired_url=row["expired_url"],
        utm_source=row["utm_source"],
        utm_medium=row["utm_medium"],
        utm_campaign=row["utm_campaign"],
        utm_term=row["utm_term"],
        utm_content=row["utm_content"],
        forward_query=row["forward_query"],
        archived=row["archived"],
        og_title=row["og_title"],
        og_description=row["og_description"],
        og_image=row["og_image"],
        title=row["title"],
        description=row["description"],
        comments=row["comments"],
        tag_ids=list(row["tag_ids"]),
        folder_id=row["folder_id"],
        external_id=row["external_id"],
        clicks=row["clicks"],
        last_clicked_at=row["last_clicked_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _fields(data: LinkCreate | LinkUpdate) -> dict[str, Any]:
    return {f: v for f in data.__struct_fields__ if (v := getattr(data, f)) is not msgspec.UNSET}


async def _fetch(ctx: ServiceContext, conn: asyncpg.Connection, workspace_id: str, link_id: str) -> Link:
    row = await conn.fetchrow(LINK_SELECT + " WHERE l.id = $1 AND l.workspace_id = $2", link_id, workspace_id)
    if row is None:
        raise NotFound(f"link {link_id!r} not found")
    return link_from_row(ctx, row)


def _translate_unique(exc: asyncpg.UniqueViolationError, domain: str, slug: str) -> H0pError:
    if exc.constraint_name == "links_workspace_id_external_id_key":
        return AlreadyExists("a link with this externalId already exists", [{"path": "externalId", "message": "taken"}])
    return AlreadyExists(f"the slug {slug!r} is already used on {domain}", [{"path": "slug", "message": "taken"}])


async def _prepare(ctx: ServiceContext, workspace_id: str, data: LinkCreate | LinkUpdate, plan: Plan) -> dict[str, Any]:
    columns = link_columns(_fields(data), ctx.settings)
    require_features(plan, columns, ctx.settings.default_domain)
    og_image = columns.get("og_image")
    if og_image and files.is_file_id(og_image):
        # preview fetchers load the image without an API key: store the file's signed public URL
        try:
            await files.get_file(ctx, workspace_id, og_image)
        except NotFound:
            raise field_error("ogImage", f"no uploaded file {og_image!r} in this workspace") from None
        columns["og_image"] = files.public_content_url(ctx.settings, og_image)
    password = columns.pop("password", msgspec.UNSET)
    if password is not msgspec.UNSET:
        columns["password_hash"] = await hash_password(password, ctx.settings) if password else None
    return columns


async def _insert(
    ctx: ServiceContext, conn: asyncpg.Connection, workspace_id: str, plan: Plan, columns: dict[str, Any]
) -> tuple[Link, int]:
    """Insert one link in the caller's transaction; returns it and its outbox row id."""
    if plan.links_per_month is not None:
        # serialise creations of this workspace so the monthly count cannot be overtaken
        await conn.execute("SELECT 1 FROM workspaces WHERE id = $1 FOR UPDATE", workspace_id)
        used = await conn.fetchval(
            "SELECT count(*) FROM links WHERE workspace_id = $1 AND created_at >= date_trunc('month', now())",
            workspace_id,
        )
        require_below(plan, "new links per month", plan.links_per_month, used)
    domain = columns.get("domain") or ctx.settings.default_domain
    await check_domain(conn, workspace_id, domain, ctx.settings)
    await check_references(conn, workspace_id, columns)
    values: dict[str, Any] = {c: columns[c] for c in PLAIN_COLUMNS if c in columns}
    values["domain"] = domain
    values["password_hash"] = columns.get("password_hash")
    values["rules"] = columns.get("rules", "[]")
    values["split"] = columns.get("split", "[]")
    custom_slug = columns.get("slug")
    names = ["id", "workspace_id", *values]
    placeholders = ", ".join(f"${i}" + ("::jsonb" if n in ("rules", "split") else "") for i, n in enumerate(names, 1))
    sql = f"INSERT INTO links ({', '.join(names)}) VALUES ({placeholders}) RETURNING id"
    for _ in range(_SLUG_ATTEMPTS):
        values["slug"] = custom_slug or random_slug(7)
        try:
            if custom_slug:  # no retry possible: a conflict ends the caller's transaction anyway
                link_id = await conn.fetchval(sql, new_id("link"), workspace_id, *values.values())
            else:
                async with conn.transaction():  # a savepoint: a taken slug leaves the transaction usable
                    link_id = await conn.fetchval(sql, new_id("link"), workspace_id, *values.values())
            break
        except asyncpg.UniqueViolationError as exc:
            if custom_slug or exc.constraint_name != "links_domain_slug_key":
                raise _translate_unique(exc, domain, values["slug"]) from None
    else:
        raise AlreadyExists("could not find a free slug; try again or choose one")
    if columns.get("tag_ids"):
        await conn.execute(
            "INSERT INTO link_tags (link_id, tag_id) SELECT $1, unnest($2::text[])", link_id, columns["tag_ids"]
        )
    outbox_id = await cache_sync.enqueue_link(conn, domain, values["slug"])
    link = await _fetch(ctx, conn, workspace_id, link_id)
    await webhooks.record_event(conn, workspace_id, "link.created", link, link.id)
    return link, outbox_id


async def _plan(ctx: ServiceContext, conn: asyncpg.Connection, workspace_id: str) -> Plan:
    name = await conn.fetchval("SELECT plan FROM workspaces WHERE id = $1", workspace_id)
    if name is None:
        raise NotFound("workspace not found")
    return get_plan(ctx.settings, name)


async def create_link(ctx: ServiceContext, workspace_id: str, data: LinkCreate) -> Link:
    """Create a link (slug generated when absent); AlreadyExists if the slug is taken on its domain."""
    async with ctx.pool.acquire() as conn:
        plan = await _plan(ctx, conn, workspace_id)
        columns = await _prepare(ctx, workspace_id, data, plan)
        async with conn.transaction():
            link, outbox_id = await _insert(ctx, conn, workspace_id, plan, columns)
        await cache_sync.push(ctx, [outbox_id], conn)
    return link


async def get_link(ctx: ServiceContext, workspace_id: str, link_id: str) -> Link:
    """The link with this id in the workspace; NotFound otherwise."""
    async with ctx.pool.acquire() as conn:
        return await _fetch(ctx, conn, workspace_id, link_id)


async def get_link_by_slug(ctx: ServiceContext, workspace_id: str, domain: str | None, slug: str) -> Link:
    """The link at ``domain``/``slug`` (default domain when None) in the workspace; NotFound otherwise."""
    host = (domain or ctx.settings.default_domain).strip().lower().rstrip(".")
    row = await ctx.pool.fetchrow(
        LINK_SELECT + " WHERE l.domain = $1 AND l.slug = $2 AND l.workspace_id = $3", host, slug, workspace_id
    )
    if row is None:
        raise NotFound(f"no link {slug!r} on {host}")
    return link_from_row(ctx, row)


async def _update(
    ctx: ServiceContext, conn: asyncpg.Connection, workspace_id: str, link_id: str, plan: Plan, columns: dict[str, Any]
) -> tuple[Link, list[int]]:
    current = await conn.fetchrow(
        "SELECT domain, slug FROM links WHERE id = $1 AND workspace_id = $2 FOR UPDATE",
        link_id,
        workspace_id,
    )
    if current is None:
        raise NotFound(f"link {link_id!r} not found")
    if "domain" in columns:
        columns["domain"] = columns["domain"] or ctx.settings.default_domain
        if columns["domain"] != current["domain"]:
            await check_domain(conn, workspace_id, columns["domain"], ctx.settings)
    await check_references(conn, workspace_id, columns)
    sets = [c for c in (*PLAIN_COLUMNS, "password_hash", "rules", "split") if c in columns]
    if sets:
        assignments = ", ".join(
            f"{c} = ${i}" + ("::jsonb" if c in ("rules", "split") else "") for i, c in enumerate(sets, 3)
        )
        sql = f"UPDATE links SET {assignments}, updated_at = now() WHERE id = $1 AND workspace_id = $2"
        try:
            async with conn.transaction():
                await conn.execute(sql, link_id, workspace_id, *(columns[c] for c in sets))
        except asyncpg.UniqueViolationError as exc:
            raise _translate_unique(
                exc, columns.get("domain", current["domain"]), columns.get("slug", current["slug"])
            ) from None
    elif "tag_ids" in columns:
        await conn.execute("UPDATE links SET updated_at = now() WHERE id = $1", link_id)
    if "tag_ids" in columns:
        await conn.execute("DELETE FROM link_tags WHERE link_id = $1", link_id)
        await conn.execute(
            "INSERT INTO link_tags (link_id, tag_id) SELECT $1, unnest($2::text[])", link_id, columns["tag_ids"]
        )
    link = await _fetch(ctx, conn, workspace_id, link_id)
    await webhooks.record_event(conn, workspace_id, "link.updated", link, link.id)
    outbox = [await cache_sync.enqueue_link(conn, link.domain, link.slug)]
    if (link.domain, link.slug) != (current["domain"], current["slug"]):
        outbox.append(await cache_sync.enqueue_link(conn, current["domain"], current["slug"]))  # the old key goes
    return link, outbox


async def update_link(ctx: ServiceContext, workspace_id: str, link_id: str, data: LinkUpdate) -> Link:
    """Change the fields present in ``data`` (``None`` clears); moving domain/slug frees the old one."""
    async with ctx.pool.acquire() as conn:
        plan = await _plan(ctx, conn, workspace_id)
        columns = await _prepare(ctx, workspace_id, data, plan)
        if columns.get("slug", "") is None:
            raise field_error("slug", "a link always has a slug")
        if "url" in columns and columns["url"] is None:
            raise field_error("url", "a link always has a destination")
        async with conn.transaction():
            link, outbox = await _update(ctx, conn, workspace_id, link_id, plan, columns)
        await cache_sync.push(ctx, outbox, conn)
    return link


async def delete_link(ctx: ServiceContext, workspace_id: str, link_id: str) -> None:
    """Delete a link; the edge answers 404 for it as soon as the record is replaced."""
    async with ctx.pool.acquire() as conn:
        async with conn.transaction():
            link = await _fetch(ctx, conn, workspace_id, link_id)  # the link.deleted event carries it
            row = await conn.fetchrow(
                "DELETE FROM links WHERE id = $1 AND workspace_id = $2 RETURNING domain, slug", link_id, workspace_id
            )
            if row is None:
                raise NotFound(f"link {link_id!r} not found")
            await webhooks.record_event(conn, workspace_id, "link.deleted", link, link.id)
            outbox_id = await cache_sync.enqueue_link(conn, row["domain"], row["slug"])
        await cache_sync.push(ctx, [outbox_id], conn)


def _failure(exc: H0pError) -> BulkItemFailure:
    _, code = status_and_code(exc)
    return BulkItemFailure(error=BulkItemError(code=code, message=exc.message))


async def bulk_create_links(
    ctx: ServiceContext, workspace_id: str, items: Sequence[LinkCreate]
) -> list[Link | BulkItemFailure]:
    """Create up to 100 links, each in its own transaction: per item the link or its error.

    ValidationFailed (nothing created) past ``bulk_passwords_max`` passwords.
    """
    if len(items) > MAX_BULK:
        raise field_error("body", f"at most {MAX_BULK} links per bulk request")
    # Each password is an argon2 hash (~50 ms of CPU, 64 MiB): capped per request rather than
    # charged per item, so a client learns the rule from one 400 instead of from a 429 whose
    # Retry-After cannot say "split this request", and the rate limit keeps counting requests.
    cap = ctx.settings.bulk_passwords_max
    with_password = [i for i, item in enumerate(items) if item.password]
    if len(with_password) > cap:
        raise field_error(f"[{with_password[cap]}].password", f"at most {cap} links with a password per bulk request")
    results: list[Link | BulkItemFailure] = []
    outbox: list[int] = []
    async with ctx.pool.acquire() as conn:
        plan = await _plan(ctx, conn, workspace_id)
        for item in items:
            try:
                columns = await _prepare(ctx, workspace_id, item, plan)
                async with conn.transaction():
                    link, outbox_id = await _insert(ctx, conn, workspace_id, plan, columns)
                results.append(link)
                outbox.append(outbox_id)
            except H0pError as exc:
                results.append(_failure(exc))
        await cache_sync.push(ctx, outbox, conn)
    return results


async def upsert_link(ctx: ServiceContext, workspace_id: str, data: LinkCreate) -> tuple[Link, bool]:
    """Create the link with ``data.external_id``, or replace the fields of the existing one; (link, created)."""
    if not data.external_id:
        raise field_error("externalId", "an upsert needs externalId")
    for _ in range(3):  # a concurrent upsert of the same externalId may win the insert; then update it
        link_id = await ctx.pool.fetchval(
            "SELECT id FROM links WHERE workspace_id = $1 AND external_id = $2", workspace_id, data.external_id
        )
        if link_id is None:
            try:
                return await create_link(ctx, workspace_id, data), True
            except AlreadyExists as exc:
                if not exc.details or exc.details[0]["path"] != "externalId":
                    raise
                continue
        replacement = {f: getattr(data, f) for f in data.__struct_fields__}
        for keep_when_absent in ("slug", "domain"):
            if replacement[keep_when_absent] is None:
                del replacement[keep_when_absent]
        try:
            return await update_link(ctx, workspace_id, link_id, LinkUpdate(**replacement)), False
        except NotFound:
            continue  # deleted meanwhile: create it
    raise ValidationFailed([{"path": "externalId", "message": "concurrent changes; try again"}])


async def slug_available(ctx: ServiceContext, domain: str | None, slug: str, except_link: str | None = None) -> bool:
    """True if no link (of any workspace) has ``slug`` on ``domain`` (the dashboard checks as one types)."""
    host = (domain or ctx.settings.default_domain).strip().lower().rstrip(".")
    taken = await ctx.pool.fetchval(
        "SELECT EXISTS (SELECT 1 FROM links WHERE domain = $1 AND slug = $2 AND id IS DISTINCT FROM $3)",
        host,
        slug,
        except_link,
    )
    return not taken
