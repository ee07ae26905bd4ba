"""Who is calling: the ``x-api-key`` header to a principal, scopes, and the client address."""

from __future__ import annotations

import ipaddress

from starlette.requests import Request

from api.errors import ActionNotAllowed
from api.services import keys
from api.services.context import ServiceContext
from api.services.keys import Principal
from h0p_settings import Settings


def api_key_of(request: Request) -> str | None:
    """The secret sent by the client: ``x-api-key``, or ``Authorization: Bearer`` (what SDKs often send)."""
    secret = request.headers.get("x-api-key")
    if secret is None:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and value:
            secret = value.strip()
    return secret


async def authenticate_request(ctx: ServiceContext, request: Request) -> Principal:
    """The principal of the request; Unauthorized without a valid key."""
    return await keys.authenticate(ctx, api_key_of(request))


def require_scope(principal: Principal, scope: str | None) -> None:
    """ActionNotAllowed unless the key has ``scope`` (None: any valid key)."""
    if scope is not None and not principal.allows(scope):
        raise ActionNotAllowed(f"this API key does not have the {scope} scope")


def client_address(request: Request, settings: Settings) -> str:
    """The peer address, or the first untrusted hop of X-Forwarded-For behind a trusted proxy."""
    peer = request.client.host if request.client else "unknown"
    if not settings.trusted_proxies:
        return peer

    def trusted(addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in net for net in settings.trusted_proxies)

    if not trusted(peer):
        return peer
    hops = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not trusted(hop):
            return hop
    return peer
