"""Link tools: create, get, update, delete, list and bulk-create, over ``api.services.links``."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

from api.errors import field_error
from api.mcp.spec import Id, ToolSpec
from api.schemas import BulkItemFailure, Deleted, Link, LinkCreate, LinkList, LinkListQuery, LinkUpdate
from api.services import link_search, links
from api.services.context import ServiceContext
from api.services.keys import Principal


class LinkIdArgs(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A link by id."""

    id: Annotated[str, Meta(min_length=1, max_length=100, examples=["link_01JD5X7Q2M8V4N6P0R3S5T7W9Y"])]


class GetLinkArgs(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """A link by ``id``, or by ``slug`` (and ``domain``, default: the default domain)."""

    id: Id | None = None
    slug: Annotated[str, Meta(min_length=1, max_length=190)] | None = None
    domain: Annotated[str, Meta(max_length=253)] | None = None


class UpdateLinkArgs(LinkUpdate, kw_only=True):
    """The link's ``id`` plus the fields to change (absent: kept; ``null``: cleared)."""

    id: Annotated[str, Meta(min_length=1, max_length=100, examples=["link_01JD5X7Q2M8V4N6P0R3S5T7W9Y"])]


class BulkCreateArgs(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Up to 100 links, each with the fields of create_link."""

    links: Annotated[list[LinkCreate], Meta(min_length=1, max_length=links.MAX_BULK)]


def _bulk_output_schema() -> dict[str, Any]:
    # Per item a link or an error: a union msgspec cannot express for two untagged Structs.
    (link, failure), defs = msgspec.json.schema_components([Link, BulkItemFailure], ref_template="#/$defs/{name}")
    return {
        "type": "object",
        "properties": {
            "data": {"type": "array", "items": {"anyOf": [link, failure]}},
            "created": {"type": "integer", "description": "how many items were created"},
        },
        "required": ["data", "created"],
        "$defs": defs,
    }


def _link_update(args: UpdateLinkArgs) -> LinkUpdate:
    return LinkUpdate(**{name: getattr(args, name) for name in LinkUpdate.__struct_fields__})


async def _create_link(ctx: ServiceContext, who: Principal, args: LinkCreate) -> Link:
    return await links.create_link(ctx, who.workspace_id, args)


async def _get_link(ctx: ServiceContext, who: Principal, args: GetLinkArgs) -> Link:
    if (args.id is None) == (args.slug is None):
        raise field_error("id", "give either id, or slug (with domain for a custom domain)")
    if args.id is not None:
        if args.domain is not None:
            raise field_error("domain", "domain goes with slug, not with id")
        return await links.get_link(ctx, who.workspace_id, args.id)
    assert args.slug is not None
    return await links.get_link_by_slug(ctx, who.workspace_id, args.domain, args.slug)


async def _update_link(ctx: ServiceContext, who: Principal, args: UpdateLinkArgs) -> Link:
    return await links.update_link(ctx, who.workspace_id, args.id, _link_update(args))


async def _delete_link(ctx: ServiceContext, who: Principal, args: LinkIdArgs) -> Deleted:
    await links.delete_link(ctx, who.workspace_id, args.id)
    return Deleted(id=args.id)


async def _list_links(ctx: ServiceContext, who: Principal, args: LinkListQuery) -> LinkList:
    return await link_search.list_links(ctx, who.workspace_id, args)


async def _bulk_create_links(ctx: ServiceContext, who: Principal, args: BulkCreateArgs) -> dict[str, Any]:
    results = await links.bulk_create_links(ctx, who.workspace_id, args.links)
    return {"data": results, "created": sum(isinstance(r, Link) for r in results)}


LINK_TOOLS: list[ToolSpec] = [
    ToolSpec(
        name="create_link",
        title="Create a short link",
        description=(
            "Create a short link to `url`. Only `url` is required; `slug` is generated (7 characters) "
            "when absent. Add UTM parameters (utm_source, utm_medium, utm_campaign, utm_term, utm_content), "
            "`tagIds`/`folderId` (create them first), `rules` (routing by device, os, browser, country, "
            "language, query, referrer…: the first matching rule's url wins), `split` (A/B weights), "
            "`expiresAt`, `password`, `statusCode`. Returns the link with its `shortUrl`. "
            "A taken slug fails with ALREADY_EXIST."
        ),
        example=(
            '{"url": "https://example.com/spring", "slug": "spring-sale", "utm_source": "newsletter", '
            '"utm_campaign": "spring", "rules": [{"conditions": [{"type": "os", "value": "iOS"}], '
            '"url": "https://apps.apple.com/app/id123"}]}'
        ),
        route="POST /links",
        scope="links:write",
        args=LinkCreate,
        run=_create_link,
        output=Link,
    ),
    ToolSpec(
        name="get_link",
        title="Get a short link",
        description=(
            "Get one link with its click count: by `id`, or by `slug` (plus `domain` when it is on a "
            "custom domain). Fails with NOT_FOUND if no such link exists in this workspace."
        ),
        example='{"id": "link_01JD5X7Q2M8V4N6P0R3S5T7W9Y"} or {"slug": "spring-sale", "domain": "go.example.com"}',
        route="GET /links/{id}, GET /links/info",
        scope="links:read",
        args=GetLinkArgs,
        run=_get_link,
        output=Link,
        read_only=True,
    ),
    ToolSpec(
        name="update_link",
        title="Update a short link",
        description=(
            "Change fields of the link `id`: only the fields given change; `null` clears an optional "
            "field (title, expiresAt, password, utm_*…). Changing `url`, `rules` or `slug` takes effect "
            "on the redirect edge within a second. Returns the updated link."
        ),
        example='{"id": "link_01JD5X7Q2M8V4N6P0R3S5T7W9Y", "url": "https://example.com/summer", "title": null}',
        route="PATCH /links/{id}",
        scope="links:write",
        args=UpdateLinkArgs,
        run=_update_link,
        output=Link,
        idempotent=True,
    ),
    ToolSpec(
        name="delete_link",
        title="Delete a short link",
        description="Delete the link `id`: its short URL stops redirecting. Cannot be undone.",
        example='{"id": "link_01JD5X7Q2M8V4N6P0R3S5T7W9Y"}',
        route="DELETE /links/{id}",
        scope="links:write",
        args=LinkIdArgs,
        run=_delete_link,
        output=Deleted,
        destructive=True,
        idempotent=True,
    ),
    ToolSpec(
        name="list_links",
        title="List short links",
        description=(
            "List the workspace's links, newest first, like GET /links: `search` matches slug, "
            "destination and title; filter by `domain`, `tagIds` (comma-separated, any of), `folderId`, "
            "`archived`; `sort` by createdAt, clicks or lastClickedAt; `page` from 0 and `limit` up to 50. "
            "Returns {data, page, limit, total}."
        ),
        example='{"search": "spring", "sort": "clicks", "limit": 20}',
        route="GET /links",
        scope="links:read",
        args=LinkListQuery,
        run=_list_links,
        output=LinkList,
        read_only=True,
    ),
    ToolSpec(
        name="bulk_create_links",
        title="Create many short links",
        description=(
            "Create up to 100 links in one call, each with the fields of create_link. Items are "
            "independent: `data` holds, in order, the created link or {error: {code, message}} for an "
            "item that was not written (e.g. ALREADY_EXIST for a taken slug); `created` counts successes."
        ),
        example=(
            '{"links": [{"url": "https://example.com/a", "utm_campaign": "launch"}, '
            '{"url": "https://example.com/b", "slug": "launch-b"}]}'
        ),
        route="POST /links/bulk",
        scope="links:write",
        args=BulkCreateArgs,
        run=_bulk_create_links,
        output=_bulk_output_schema(),
    ),
]
