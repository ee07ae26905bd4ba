"""Custom domains: add, prove ownership through DNS, configure fallbacks, delete.

Ownership is proven by a TXT record ``_h0p-challenge.<domain>`` holding the token shown at
creation, checked through ``settings.dns_resolver`` ("ip:port"; empty: the system's).
Only a verified domain gets a ``DomainRecord`` at the edge, so an unverified one serves no
links. Every change goes through the cache outbox like links do.

Typing a domain name proves nothing, so a claim must never lock the real owner out: any
number of workspaces may hold a pending claim on a host (one each), a host is unique among
verified domains only, the first verification drops the other workspaces' claims together
with the links they made on the host, and a pending claim lapses after
``settings.domain_claim_expiry_s``. Claims on one host are serialised by an advisory lock.
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
from api.urls import UnsafeUrl, check_destination, dns_resolver, host_address, normalise_domain
from h0p_settings import Settings
from redirect.hosts import ascii_host

CHALLENGE_PREFIX = "_h0p-challenge"
TOKEN_PREFIX = "h0p-verify="
DNS_TIMEOUT_S = 3.0
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_URL_FIELDS = {"root_url": "rootUrl", "not_found_url": "notFoundUrl", "expired_url": "expiredUrl"}
_SELECT = (
    "SELECT d.id, d.hostname, d.verification_token, d.verified_at, d.root_url, d.not_found_url, d.expired_url,"
    " d.created_at, d.updated_at,"
    " (SELECT count(*) FROM links l WHERE l.domain = d.hostname AND l.workspace_id = d.workspace_id) AS links"
    " FROM domains d"
)


def live_claim(alias: str, settings: Settings) -> str:
    """SQL condition: the domain row ``alias`` is verified, or a pending claim that has not lapsed."""
    # An int from the settings, formatted in: no injection, and no parameter numbering to thread through.
    expiry = int(settings.domain_claim_expiry_s)
    return f"({alias}.verified_at IS NOT NULL OR {alias}.created_at > now() - make_interval(secs => {expiry}))"


async def _lock_host(conn: asyncpg.Connection, host: str) -> None:
    # Claims, verifications and lapses on one host happen one at a time (until the transaction ends).
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('h0p-domain:' || $1, 0))", host)


async def _drop_claims(conn: asyncpg.Connection, host: str, condition: str, *args: object) -> list[int]:
    """Delete the claims on ``host`` matching ``condition`` (alias d, $2…) and their links; outbox ids."""
    gone = await conn.fetch(
        f"DELETE FROM domains d WHERE d.hostname = $1 AND {condition} RETURNING d.workspace_id", host, *args
    )
    if not gone:
        return []
    links = await conn.fetch(
        "DELETE FROM links WHERE domain = $1 AND workspace_id = ANY($2::text[]) RETURNING slug",
        host,
        [r["workspace_id"] for r in gone],
    )
    return [await cache_sync.enqueue_link(conn, host, r["slug"]) for r in links]


def _check_hostname(raw: str, settings: Settings) -> str:
    host = ascii_host(normalise_domain(raw)) or ""  # the form browsers look up (IDNA 2008 / UTS #46)
    if not host:
        raise field_error("domain", "not a valid domain name")
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
    """Each URL checked as a link destination and replaced by the form to store (ASCII host)."""
    problems = []
    for name, value in values.items():
        if value is not None:
            try:
                values[name] = check_destination(value, settings)
            except UnsafeUrl as exc:
                problems.append({"path": _URL_FIELDS[name], "message": str(exc)})
    if problems:
        raise ValidationFailed(problems)


async def _fetch(
    conn: asyncpg.Connection | asyncpg.Pool, settings: Settings, workspace_id: str, domain_id: str
) -> asyncpg.Record:
    row = await conn.fetchrow(
        _SELECT + f" WHERE d.id = $1 AND d.workspace_id = $2 AND {live_claim('d', settings)}", domain_id, workspace_id
    )
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
    live = live_claim("d", ctx.settings)
    async with ctx.pool.acquire() as conn, conn.transaction():
        if plan.domains is not None:
            await conn.execute("SELECT 1 FROM workspaces WHERE id = $1 FOR UPDATE", workspace_id)
            used = await conn.fetchval(
                f"SELECT count(*) FROM domains d WHERE workspace_id = $1 AND {live}", workspace_id
            )
            require_below(plan, "custom domains", plan.domains, used)
        await _lock_host(conn, host)
        outbox = await _drop_claims(conn, host, f"NOT {live}")
        if await conn.fetchval("SELECT 1 FROM domains WHERE hostname = $1 AND verified_at IS NOT NULL", host):
            raise AlreadyExists(f"the domain {host} is already registered")
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
        row = await _fetch(conn, ctx.settings, workspace_id, domain_id)
    await cache_sync.push(ctx, outbox)
    return _domain(row, ctx.settings)


async def get_domain(ctx: ServiceContext, workspace_id: str, domain_id: str) -> Domain:
    """One of the workspace's domains; NotFound otherwise."""
    return _domain(await _fetch(ctx.pool, ctx.settings, workspace_id, domain_id), ctx.settings)


async def require_verified(ctx: ServiceContext, workspace_id: str, host: str) -> None:
    """ValidationFailed (path ``domain``) unless ``host`` is the default domain or a verified one of the workspace."""
    host = normalise_domain(host)
    if host == ctx.settings.default_domain:
        return
    verified = await ctx.pool.fetchval(
        "SELECT verified_at IS NOT NULL FROM domains d WHERE hostname = $1 AND workspace_id = $2 AND "
        + live_claim("d", ctx.settings),
        host,
        workspace_id,
    )
    if verified is None:
        raise field_error("domain", f"{host!r} is not a domain of this workspace")
    if not verified:
        raise field_error("domain", f"{host} is not verified yet: publish its TXT record, then verify it")


async def list_domains(ctx: ServiceContext, workspace_id: str, page: PageQuery) -> DomainList:
    """The workspace's domains, oldest first."""
    live = live_claim("d", ctx.settings)
    total = await ctx.pool.fetchval(
        f"SELECT count(*) FROM domains d WHERE d.workspace_id = $1 AND {live}", workspace_id
    )
    rows = await ctx.pool.fetch(
        _SELECT + f" WHERE d.workspace_id = $1 AND {live} ORDER BY d.id LIMIT $2 OFFSET $3",
        workspace_id,
        page.limit,
        page.page * page.limit,
    )
    return DomainList(data=[_domain(r, ctx.settings) for r in rows], page=page.page, limit=page.limit, total=total)


async def _txt_values(settings: Settings, name: str) -> tuple[list[str], str | None]:
    """The TXT strings at ``name``, or a problem description."""
    try:
        answer = await dns_resolver(settings, DNS_TIMEOUT_S).resolve(name, "TXT")
    except dns.resolver.NXDOMAIN:
        return [], f"no DNS record named {name}"
    except dns.resolver.NoAnswer:
        return [], f"no TXT record at {name}"
    except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
        return [], f"the DNS lookup of {name} failed ({type(exc).__name__}); try again later"
    return [b"".join(r.strings).decode("utf-8", "replace") for r in answer], None


async def verify_domain(ctx: ServiceContext, workspace_id: str, domain_id: str) -> DomainVerification:
    """Check the TXT record; on success the domain starts serving its links."""
    row = await _fetch(ctx.pool, ctx.settings, workspace_id, domain_id)
    host = row["hostname"]
    name = f"{CHALLENGE_PREFIX}.{host}"
    expected = TOKEN_PREFIX + row["verification_token"]
    values, problem = await _txt_values(ctx.settings, name)
    if problem is None and expected not in values:
        problem = f"the TXT record at {name} does not contain {expected!r}"
    if problem is not None:
        return DomainVerification(verified=False, problem=problem, domain=_domain(row, ctx.settings))
    async with ctx.pool.acquire() as conn, conn.transaction():
        await _lock_host(conn, host)
        row = await _fetch(conn, ctx.settings, workspace_id, domain_id)  # it may have lapsed or been dropped
        try:
            await conn.execute(
                "UPDATE domains SET verified_at = coalesce(verified_at, now()), updated_at = now() WHERE id = $1",
                domain_id,
            )
        except asyncpg.UniqueViolationError:
            raise AlreadyExists(f"the domain {host} is already verified by another workspace") from None
        # Proven: every other claim on the host goes, with the links it made there (the edge would
        # otherwise serve them on this workspace's domain).
        outbox = await _drop_claims(conn, host, "d.workspace_id <> $2", workspace_id)
        outbox.append(await cache_sync.enqueue_domain(conn, host))
        newly = row["verified_at"] is None  # read under the host's lock, before this verification
        row = await _fetch(conn, ctx.settings, workspace_id, domain_id)
        if newly:
            await webhooks.record_event(conn, workspace_id, "domain.verified", _domain(row, ctx.settings))
    await cache_sync.push(ctx, outbox)
    return DomainVerification(verified=True, problem=None, domain=_domain(row, ctx.settings))


async def update_domain(ctx: ServiceContext, workspace_id: str, domain_id: str, data: DomainUpdate) -> Domain:
    """Change the root / not-found / expired URLs (``null`` clears one)."""
    values = {name: getattr(data, name) for name in _URL_FIELDS if getattr(data, name) is not msgspec.UNSET}
    _check_urls(values, ctx.settings)
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await _fetch(conn, ctx.settings, workspace_id, domain_id)
        if values:
            sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(values, 2))
            await conn.execute(
                f"UPDATE domains SET {sets}, updated_at = now() WHERE id = $1", domain_id, *values.values()
            )
        outbox_id = await cache_sync.enqueue_domain(conn, row["hostname"])
        row = await _fetch(conn, ctx.settings, workspace_id, domain_id)
    await cache_sync.push(ctx, [outbox_id])
    return _domain(row, ctx.settings)


async def delete_domain(ctx: ServiceContext, workspace_id: str, domain_id: str, force: bool = False) -> None:
    """Delete a domain; refused (Forbidden) while links use it, unless ``force`` deletes them too."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await _fetch(conn, ctx.settings, workspace_id, domain_id)
        host = row["hostname"]
        if row["links"] and not force:
            raise Forbidden(f"{row['links']} links use {host}; delete them first or pass force=true")
        gone = await conn.fetch(
            "DELETE FROM links WHERE domain = $1 AND workspace_id = $2 RETURNING slug", host, workspace_id
        )
        outbox = [await cache_sync.enqueue_link(conn, host, r["slug"]) for r in gone]
        await conn.execute("DELETE FROM domains WHERE id = $1", domain_id)
        outbox.append(await cache_sync.enqueue_domain(conn, host))
    await cache_sync.push(ctx, outbox)
