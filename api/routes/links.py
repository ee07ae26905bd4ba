"""Links routes: create, list, info, get, update, delete, bulk create, upsert."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

from api.endpoints import Call, Endpoint, Reply
from api.schemas import (
    BulkItemFailure,
    Deleted,
    Link,
    LinkCreate,
    LinkInfoQuery,
    LinkList,
    LinkListQuery,
    LinkUpdate,
)
from api.services import link_search, links

BulkBody = Annotated[list[LinkCreate], Meta(min_length=1, max_length=links.MAX_BULK)]

EXAMPLE = {
    "url": "https://example.com/spring-sale",
    "slug": "spring",
    "title": "Spring sale",
    "tagIds": [],
    "utm_source": "newsletter",
    "rules": [{"conditions": [{"type": "os", "value": "iOS"}], "url": "https://apps.apple.com/app/id1"}],
}


async def create(call: Call) -> Link:
    return await links.create_link(call.ctx, call.principal.workspace_id, call.body)


async def list_(call: Call) -> LinkList:
    return await link_search.list_links(call.ctx, call.principal.workspace_id, call.query)


async def info(call: Call) -> Link:
    q: LinkInfoQuery = call.query
    return await links.get_link_by_slug(call.ctx, call.principal.workspace_id, q.domain, q.slug)


async def get(call: Call) -> Link:
    return await links.get_link(call.ctx, call.principal.workspace_id, call.path["id"])


async def update(call: Call) -> Link:
    return await links.update_link(call.ctx, call.principal.workspace_id, call.path["id"], call.body)


async def delete(call: Call) -> Deleted:
    await links.delete_link(call.ctx, call.principal.workspace_id, call.path["id"])
    return Deleted(id=call.path["id"])


async def bulk(call: Call) -> list[Link | BulkItemFailure]:
    return await links.bulk_create_links(call.ctx, call.principal.workspace_id, call.body)


async def upsert(call: Call) -> Reply:
    link, created = await links.upsert_link(call.ctx, call.principal.workspace_id, call.body)
    return Reply(201 if created else 200, link)


ENDPOINTS = [
    Endpoint(
        "POST", "/links", create, "Create a link", "Links", scope="links:write", body=LinkCreate,
        response=Link, status=201, errors=(409,), example=EXAMPLE, operation_id="createLink",
        description="Only `url` is required; without `slug` a 7-character slug is generated. "
        "A slug already used on the domain is 409 ALREADY_EXIST.",
    ),
    Endpoint(
        "GET", "/links", list_, "List links", "Links", scope="links:read", query=LinkListQuery,
        response=LinkList, operation_id="listLinks",
        description="Filter by `search` (slug, destination or title), `domain`, `tagIds`, `folderId`, `archived`; "
        "sort by `createdAt`, `clicks` or `lastClickedAt`.",
    ),
    Endpoint(
        "GET", "/links/info", info, "Get a link by domain and slug", "Links", scope="links:read",
        query=LinkInfoQuery, response=Link, errors=(404,), operation_id="getLinkInfo",
    ),
    Endpoint(
        "POST", "/links/bulk", bulk, "Create up to 100 links", "Links", scope="links:write", body=BulkBody,
        response_variants=(Link, BulkItemFailure), operation_id="bulkCreateLinks", example=[EXAMPLE],
        description="A body that does not match the schema (an unknown field, a wrong type, in any item) is "
        "400 VALIDATION_ERROR with the item's path (`[3].statusCode`) and creates nothing. Otherwise each item "
        "is created in its own transaction: the result has, in order, the link or "
        "`{\"error\": {\"code\", \"message\"}}` for an item that was not created (a slug taken, an unsafe "
        "destination, a missing tag: nothing of it written). At most `H0P_BULK_PASSWORDS_MAX` items (default 10) "
        "may set a `password`: more is 400, nothing created.",
    ),
    Endpoint(
        "PUT", "/links/upsert", upsert, "Create or replace a link by externalId", "Links", scope="links:write",
        body=LinkCreate, response=Link, other_statuses=(201,), errors=(409,), operation_id="upsertLink",
        example={**EXAMPLE, "externalId": "cms-post-42"},
        description="`externalId` is required. 201 when created, 200 when the existing link was replaced.",
    ),
    Endpoint(
        "GET", "/links/{id}", get, "Get a link", "Links", scope="links:read", response=Link, operation_id="getLink"
    ),
    Endpoint(
        "PATCH", "/links/{id}", update, "Update a link", "Links", scope="links:write", body=LinkUpdate,
        response=Link, errors=(409,), operation_id="updateLink", example={"url": "https://example.com/new"},
        description="Only the fields present change; `null` clears an optional field.",
    ),
    Endpoint(
        "DELETE", "/links/{id}", delete, "Delete a link", "Links", scope="links:write", response=Deleted,
        operation_id="deleteLink",
    ),
]  # fmt: skip
