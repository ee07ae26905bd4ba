"""API key routes: the secret is in the creation response only."""

from __future__ import annotations

from api.endpoints import Call, Endpoint
from api.schemas import Deleted, KeyCreate, PageQuery
from api.services import keys
from api.services.keys import ALL_SCOPES, ApiKeyList, CreatedApiKey


async def create(call: Call) -> CreatedApiKey:
    data: KeyCreate = call.body
    # A key cannot mint a key stronger than itself (checked by the service: by=the caller).
    key, secret = await keys.create_key(call.ctx, call.principal.workspace_id, data.name, data.scopes, call.principal)
    return CreatedApiKey(**{f: getattr(key, f) for f in key.__struct_fields__}, key=secret)


async def list_(call: Call) -> ApiKeyList:
    q: PageQuery = call.query
    return await keys.list_keys_page(call.ctx, call.principal.workspace_id, q.page, q.limit)


async def delete(call: Call) -> Deleted:
    await keys.delete_key(call.ctx, call.principal.workspace_id, call.path["id"], call.principal)
    return Deleted(id=call.path["id"])


ENDPOINTS = [
    Endpoint(
        "POST", "/keys", create, "Create an API key", "API keys", scope="keys:write", body=KeyCreate,
        response=CreatedApiKey, status=201, errors=(400,), operation_id="createKey",
        example={"name": "CMS plugin", "scopes": ["links:read", "links:write"]},
        description="`key` (the secret) is returned once, here. Scopes: " + ", ".join(f"`{s}`" for s in ALL_SCOPES)
        + ". A write scope includes the matching read scope. A key can only grant scopes it has (403"
        " `ACTION_NOT_ALLOWED`); without `scopes` the new key gets all of the caller's. A workspace holds"
        " at most `H0P_MAX_KEYS_PER_WORKSPACE` keys (403 `PLAN_LIMIT_REACHED`).",
    ),
    Endpoint(
        "GET", "/keys", list_, "List API keys", "API keys", scope="keys:read", query=PageQuery, response=ApiKeyList,
        operation_id="listKeys", description="Secrets are never listed: `hint` is the last 4 characters.",
    ),
    Endpoint(
        "DELETE", "/keys/{id}", delete, "Revoke an API key", "API keys", scope="keys:write", response=Deleted,
        operation_id="deleteKey",
        description="A key can only revoke keys whose scopes it has itself (403 `ACTION_NOT_ALLOWED`).",
    ),
]  # fmt: skip
