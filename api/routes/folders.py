"""Folder routes."""

from __future__ import annotations

from api.endpoints import Call, Endpoint
from api.schemas import Deleted, Folder, FolderList, FolderWrite, PageQuery
from api.services import folders


async def create(call: Call) -> Folder:
    return await folders.create_folder(call.ctx, call.principal.workspace_id, call.body)


async def list_(call: Call) -> FolderList:
    return await folders.list_folders(call.ctx, call.principal.workspace_id, call.query)


async def get(call: Call) -> Folder:
    return await folders.get_folder(call.ctx, call.principal.workspace_id, call.path["id"])


async def update(call: Call) -> Folder:
    return await folders.rename_folder(call.ctx, call.principal.workspace_id, call.path["id"], call.body)


async def delete(call: Call) -> Deleted:
    await folders.delete_folder(call.ctx, call.principal.workspace_id, call.path["id"])
    return Deleted(id=call.path["id"])


ENDPOINTS = [
    Endpoint(
        "POST", "/folders", create, "Create a folder", "Folders", scope="folders:write", body=FolderWrite,
        response=Folder, status=201, errors=(409,), operation_id="createFolder", example={"name": "Campaigns"},
    ),
    Endpoint(
        "GET", "/folders", list_, "List folders", "Folders", scope="folders:read", query=PageQuery,
        response=FolderList, operation_id="listFolders",
    ),
    Endpoint(
        "GET", "/folders/{id}", get, "Get a folder", "Folders", scope="folders:read", response=Folder,
        operation_id="getFolder",
    ),
    Endpoint(
        "PATCH", "/folders/{id}", update, "Rename a folder", "Folders", scope="folders:write", body=FolderWrite,
        response=Folder, errors=(409,), operation_id="updateFolder", example={"name": "Archive"},
    ),
    Endpoint(
        "DELETE", "/folders/{id}", delete, "Delete a folder", "Folders", scope="folders:write", response=Deleted,
        operation_id="deleteFolder", description="Its links stay, outside any folder.",
    ),
]  # fmt: skip
