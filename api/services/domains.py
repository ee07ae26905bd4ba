"""Custom domains: add, prove ownership through DNS, configure fallbacks, delete.

Ownership is proven by a TXT record ``_h0p-challenge.<domain>`` holding the token shown at
creation, checked through ``settings.dns_resolver`` ("ip:port"; empty: the system's).
Only a verified domain gets a ``DomainRecord`` at the edge, so an unverified one serves no
links. Every change goes through the cache outbox like links do.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import asyncpg
import dns.asyncresolver
import dns.exception
import dns.resolver
import msgspec

from api import cache_sync
from api.errors import AlreadyExists, Forbidden, NotFound, ValidationFailed, field_error
from api.ids import new_id
from api.schemas import DnsRecord, Domain, DomainCreate, DomainList, DomainUpdate, DomainVerification, PageQuery
from api.services import webhooks
from api.services.context import ServiceContext
from api.services.plans import require_below, require_feature
from api.services.workspaces import workspace_plan
from api.urls import UnsafeUrl, destination_problem, host_address, normalise_domain
from h0p_settings import Settings

CHALLENGE_PREFIX = "_h0p-challenge"
TOKEN_PREFIX = "h0p-verify="
DNS_TIMEOUT_S = 3.0
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_URL_FIELDS = {"root_url": "rootUrl", "not_found_url": "notFoundUrl", "expired_url": "expiredUrl"}
_SELECT = (
    "SELECT d.id, d.hostname, d.verification_token, d.verified_at, d.root_url, d.not_found_url, d.expired_url,"
    " d.created_at, d.updated_at, (SELECT count(*) FROM links l WHERE l.domain = d.hostname) AS links"
    " FROM domains d"
)


def _check_hostname(raw: str, settings: Settings) -> str:
    try:
        host = normalise_domain(raw).encode("idna").decode("ascii")
    except UnicodeError:
        raise field_error("domain", "not a valid domain name") from None
    labels = host.split(".")
    if len(labels) < 2 or len(host) > 253 or not all(_LABEL.match(label) for label in labels):
        raise field_error("domain", "a domain is a host name such as 'go.example.com'")
    try:
        is_address = host_address(host) is not None
    except UnsafeUrl:
        is_address = True
    if is_address or labels[-1].isdigit():
        raise field_error("domain", "a domain is a host name, not an IP address")
    if host in (settings.default_domain, settings.edge_hostname) or host.endswith(".localhost"):
        raise field_error("domain", f"{host} is reserved on this server")
    return host


def _records(row: asyncpg.Record, settings: Settings) -> list[DnsRecord]:
    return [
        DnsRecord(
            type="TXT", name=f"{CHALLENGE_PREFIX}.{row['hostname']}", value=TOKEN_PREFIX + row["verification_token"]
        ),
        DnsRecord(type="CNAME", name=row["hostname"], value=settings.edge_hostname),
    ]


def _domain(row: asyncpg.Record, settings: Settings) -> Domain:
    return Domain(
        id=row["id"],
        domain=row["hostname"],
        verified=row["verified_at"] is not None,
        verified_at=row["verified_at"],
        records=_records(row, settings),
        root_url=row["root_url"],
        not_found_url=row["not_found_url"],
        expired_url=row["expired_url"],
        links=row["links"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _check_urls(values: dict[str, Any], settings: Settings) -> None:
    problems = [
        {"path": _URL_FIELDS[name], "message": why}
        for name, value in values.items()
        if value is not None and (why := destination_problem(value, settings))
    ]
    if problems:
        raise ValidationFailed(problems)


async def _fetch(conn: asyncpg.Connection | asyncpg.Pool, workspace_id: str, domain_id: str) -> asyncpg.Record:
    row = await conn.fetchrow(_SELECT + " WHERE d.id = $1 AND d.workspace_id = $2", domain_id, workspace_id)
    if row is None:
        raise NotFound(f"domain {domain_id!r} not found")
    return row


async def add_domain(ctx: ServiceContext, workspace_id: str, data: DomainCreate) -> Domain:
    """Add a domain (unverified); the result lists the DNS records to publish."""
    plan = await workspace_plan(ctx, workspace_id)
    require_feature(plan, "custom_domains")
    host = _check_hostname(data.domain, ctx.settings)
    urls = {"root_url": data.root_url, "not_found_url": data.not_found_url, "expired_url": data.expired_url}
    _check_urls(urls, ctx.settings)
    async with ctx.pool.acquire() as conn, conn.transaction():
        if plan.domains is not None:
            await conn.execute("SELECT 1 FROM workspaces WHERE id = $1 FOR UPDATE", workspace_id)
            used = await conn.fetchval("SELECT count(*) FROM domains WHERE workspace_id = $1", workspace_id)
            require_below(plan, "custom domains", plan.domains, used)
        domain_id = new_id("dom")
        try:
            await conn.execute(
                "INSERT INTO domains (id, workspace_id, hostname, verification_token, root_url, not_found_url,"
                " expired_url) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                domain_id,
                workspace_id,
                host,
                secrets.token_urlsafe(24),
                *urls.values(),
            )
        except asyncpg.UniqueViolationError:
            raise AlreadyExists(f"the domain {host} is already registered") from None
        row = await _fetch(conn, workspace_id, domain_id)
    return _domain(row, ctx.settings)


async def get_domain(ctx: ServiceContext, workspace_id: str, domain_id: str) -> Domain:
    """One of the workspace's domains; NotFound otherwise."""
    return _domain(await _fetch(ctx.pool, workspace_id, domain_id), ctx.settings)


async def list_domains(ctx: ServiceContext, workspace_id: str, page: PageQuery) -> DomainList:
    """The workspace's domains, oldest first."""
    total = await ctx.pool.fetchval("SELECT count(*) FROM domains WHERE workspace_id = $1", workspace_id)
    rows = await ctx.pool.fetch(
        _SELECT + " WHERE d.workspace_id = $1 ORDER BY d.id LIMIT $2 OFFSET $3",
        workspace_id,
        page.limit,
        page.page * page.limit,
    )
    return DomainList(data=[_domain(r, ctx.settings) for r in rows], page=page.page, limit=page.limit, total=total)


def _resolver(settings: Settings) -> dns.asyncresolver.Resolver:
    if not settings.dns_resolver:
        resolver = dns.asyncresolver.Resolver()
    else:
        host, _, port = settings.dns_resolver.rpartition(":")
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [host.strip("[]")]
        resolver.port = int(port)
    resolver.timeout = DNS_TIMEOUT_S
    resolver.lifetime = DNS_TIMEOUT_S
    return resolver


async def _txt_values(settings: Settings, name: str) -> tuple[list[str], str | None]:
    """The TXT strings at ``name``, or a problem description."""
    try:
        answer = await _resolver(settings).resolve(name, "TXT")
    except dns.resolver.NXDOMAIN:
        return [], f"no DNS record named {name}"
    except dns.resolver.NoAnswer:
        return [], f"no TXT record at {name}"
    except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
        return [], f"the DNS lookup of {name} failed ({type(exc).__name__}); try again later"
    return [b"".join(r.strings).decode("utf-8", "replace") for r in answer], None


async def verify_domain(ctx: ServiceContext, workspace_id: str, domain_id: str) -> DomainVerification:
    """Check the TXT record; on success the domain starts serving its links."""
    row = await _fetch(ctx.pool, workspace_id, domain_id)
    name = f"{CHALLENGE_PREFIX}.{row['hostname']}"
    expected = TOKEN_PREFIX + row["verification_token"]
    values, problem = await _txt_values(ctx.settings, name)
    if problem is None and expected not in values:
        problem = f"the TXT record at {name} does not contain {expected!r}"
    if problem is not None:
        return DomainVerification(verified=False, problem=problem, domain=_domain(row, ctx.settings))
    async with ctx.pool.acquire() as conn, conn.transaction():
        newly = await conn.fetchval(
            "UPDATE domains d SET verified_at = coalesce(d.verified_at, now()), updated_at = now()"
            " FROM (SELECT verified_at FROM domains WHERE id = $1 FOR UPDATE) AS before"
            " WHERE d.id = $1 RETURNING before.verified_at IS NULL",
            domain_id,
        )
        outbox_id = await cache_sync.enqueue_domain(conn, row["hostname"])
        row = await _fetch(conn, workspace_id, domain_id)
        if newly:
            await webhooks.record_event(conn, workspace_id, "domain.verified", _domain(row, ctx.settings))
    await cache_sync.push(ctx, [outbox_id])
    return DomainVerification(verified=True, problem=None, domain=_domain(row, ctx.settings))


async def update_domain(ctx: ServiceContext, workspace_id: str, domain_id: str, data: DomainUpdate) -> Domain:
    """Change the root / not-found / expired URLs (``null`` clears one)."""
    values = {name: getattr(data, name) for name in _URL_FIELDS if getattr(data, name) is not msgspec.UNSET}
    _check_urls(values, ctx.settings)
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await _fetch(conn, workspace_id, domain_id)
        if values:
            sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(values, 2))
            await conn.execute(
                f"UPDATE domains SET {sets}, updated_at = now() WHERE id = $1", domain_id, *values.values()
            )
        outbox_id = await cache_sync.enqueue_domain(conn, row["hostname"])
        row = await _fetch(conn, workspace_id, domain_id)
    await cache_sync.push(ctx, [outbox_id])
    return _domain(row, ctx.settings)


async def delete_domain(ctx: ServiceContext, workspace_id: str, domain_id: str, force: bool = False) -> None:
    """Delete a domain; refused (Forbidden) while links use it, unless ``force`` deletes them too."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await _fetch(conn, workspace_id, domain_id)
        host = row["hostname"]
        if row["links"] and not force:
            raise Forbidden(f"{row['links']} links use {host}; delete them first or pass force=true")
        gone = await conn.fetch("DELETE FROM links WHERE domain = $1 RETURNING slug", host)
        outbox = [await cache_sync.enqueue_link(conn, host, r["slug"]) for r in gone]
        await conn.execute("DELETE FROM domains WHERE id = $1", domain_id)
        outbox.append(await cache_sync.enqueue_domain(conn, host))
    await cache_sync.push(ctx, outbox)
