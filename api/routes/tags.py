"""Tag routes."""

from __future__ import annotations

from api.endpoints import Call, Endpoint
from api.schemas import Deleted, PageQuery, Tag, TagCreate, TagList, TagUpdate
from api.services import tags


async def create(call: Call) -> Tag:
    return await tags.create_tag(call.ctx, call.principal.workspace_id, call.body)


async def list_(call: Call) -> TagList:
    return await tags.list_tags(call.ctx, call.principal.workspace_id, call.query)


async def get(call: Call) -> Tag:
    return await tags.get_tag(call.ctx, call.principal.workspace_id, call.path["id"])


async def update(call: Call) -> Tag:
    return await tags.update_tag(call.ctx, call.principal.workspace_id, call.path["id"], call.body)


async def delete(call: Call) -> Deleted:
    await tags.delete_tag(call.ctx, call.principal.workspace_id, call.path["id"])
    return Deleted(id=call.path["id"])


ENDPOINTS = [
    Endpoint(
        "POST", "/tags", create, "Create a tag", "Tags", scope="tags:write", body=TagCreate, response=Tag,
        status=201, errors=(409,), operation_id="createTag", example={"name": "newsletter", "color": "blue"},
    ),
    Endpoint(
        "GET", "/tags", list_, "List tags", "Tags", scope="tags:read", query=PageQuery, response=TagList,
        operation_id="listTags",
    ),
    Endpoint("GET", "/tags/{id}", get, "Get a tag", "Tags", scope="tags:read", response=Tag, operation_id="getTag"),
    Endpoint(
        "PATCH", "/tags/{id}", update, "Rename or recolour a tag", "Tags", scope="tags:write", body=TagUpdate,
        response=Tag, errors=(409,), operation_id="updateTag", example={"color": "green"},
    ),
    Endpoint(
        "DELETE", "/tags/{id}", delete, "Delete a tag", "Tags", scope="tags:write", response=Deleted,
        operation_id="deleteTag", description="Links keep existing, without this tag.",
    ),
]  # fmt: skip
