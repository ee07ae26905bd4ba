"""Custom domain routes: add, list, get, verify, update fallbacks, delete."""

from __future__ import annotations

from api.endpoints import Call, Endpoint
from api.schemas import (
    Deleted,
    Domain,
    DomainCreate,
    DomainDeleteQuery,
    DomainList,
    DomainUpdate,
    DomainVerification,
    PageQuery,
)
from api.services import domains


async def create(call: Call) -> Domain:
    return await domains.add_domain(call.ctx, call.principal.workspace_id, call.body)


async def list_(call: Call) -> DomainList:
    return await domains.list_domains(call.ctx, call.principal.workspace_id, call.query)


async def get(call: Call) -> Domain:
    return await domains.get_domain(call.ctx, call.principal.workspace_id, call.path["id"])


async def verify(call: Call) -> DomainVerification:
    return await domains.verify_domain(call.ctx, call.principal.workspace_id, call.path["id"])


async def update(call: Call) -> Domain:
    return await domains.update_domain(call.ctx, call.principal.workspace_id, call.path["id"], call.body)


async def delete(call: Call) -> Deleted:
    q: DomainDeleteQuery = call.query
    await domains.delete_domain(call.ctx, call.principal.workspace_id, call.path["id"], force=q.force)
    return Deleted(id=call.path["id"])


ENDPOINTS = [
    Endpoint(
        "POST", "/domains", create, "Add a custom domain", "Domains", scope="domains:write", body=DomainCreate,
        response=Domain, status=201, errors=(409,), operation_id="createDomain",
        example={"domain": "go.example.com", "notFoundUrl": "https://example.com/"},
        description="Publish the returned `records`: a TXT record `_h0p-challenge.<domain>` with the token, and a "
        "CNAME to the edge. Then call verify. An unverified domain serves no links.",
    ),
    Endpoint(
        "GET", "/domains", list_, "List custom domains", "Domains", scope="domains:read", query=PageQuery,
        response=DomainList, operation_id="listDomains",
    ),
    Endpoint(
        "GET", "/domains/{id}", get, "Get a custom domain", "Domains", scope="domains:read", response=Domain,
        operation_id="getDomain",
    ),
    Endpoint(
        "POST", "/domains/{id}/verify", verify, "Verify a domain's DNS", "Domains", scope="domains:write",
        response=DomainVerification, operation_id="verifyDomain",
        description="Looks up the TXT record; `verified` says whether it matched, `problem` what is missing.",
    ),
    Endpoint(
        "PATCH", "/domains/{id}", update, "Update a domain's fallback URLs", "Domains", scope="domains:write",
        body=DomainUpdate, response=Domain, operation_id="updateDomain",
        example={"rootUrl": "https://example.com/", "expiredUrl": None},
    ),
    Endpoint(
        "DELETE", "/domains/{id}", delete, "Delete a custom domain", "Domains", scope="domains:write",
        query=DomainDeleteQuery, response=Deleted, operation_id="deleteDomain",
        description="Refused (403 FORBIDDEN) while links use the domain, unless `force=true`, which deletes them.",
    ),
]  # fmt: skip
