"""Custom domains over HTTP, verified against a real DNS server on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from starlette.applications import Starlette

from api.errors import FeatureNotAvailable
from api.ids import new_id
from api.schemas import DomainCreate
from api.services.context import ServiceContext
from api.services.domains import add_domain
from api.services.keys import create_key
from api.services.link_fields import check_domain
from api.services.workspaces import Workspace, get_or_create_workspace, set_plan
from redirect.record import NEGATIVE, decode_domain, decode_link, domain_key, link_key
from tests.api.conftest import client_for, raw
from tests.api.dns_server import LoopbackDns


@pytest.fixture
def host(workspace: Workspace) -> str:
    return f"go-{workspace.id[-10:].lower()}.example.com"


async def test_adding_a_domain_returns_the_txt_and_cname_records(
    api: httpx.AsyncClient, ctx: ServiceContext, host: str
) -> None:
    r = await api.post("/domains", json={"domain": host.upper() + "."})
    assert r.status_code == 201
    domain = r.json()
    assert domain["domain"] == host and domain["verified"] is False and domain["links"] == 0
    txt, cname = domain["records"]
    assert txt["type"] == "TXT" and txt["name"] == f"_h0p-challenge.{host}" and txt["value"].startswith("h0p-verify=")
    assert cname == {"type": "CNAME", "name": host, "value": ctx.settings.edge_hostname}
    again = await api.post("/domains", json={"domain": host})
    assert again.status_code == 409 and again.json()["error"]["code"] == "ALREADY_EXIST"


@pytest.mark.parametrize("bad", ["localhost", "127.0.0.1", "no_dots", "-bad-.example.com", "a..b.com", "x.y.123"])
async def test_invalid_domain_names_are_400(api: httpx.AsyncClient, bad: str) -> None:
    r = await api.post("/domains", json={"domain": bad})
    assert r.status_code == 400 and r.json()["error"]["details"][0]["path"] == "domain"


async def test_verify_checks_the_txt_record_through_the_configured_resolver(
    api: httpx.AsyncClient, dns_server: LoopbackDns, redis: aioredis.Redis, host: str
) -> None:
    domain = (await api.post("/domains", json={"domain": host, "rootUrl": "https://example.com/"})).json()
    missing = (await api.post(f"/domains/{domain['id']}/verify")).json()
    assert missing["verified"] is False and "no DNS record" in missing["problem"]
    assert await redis.get(domain_key(host)) is None  # unverified: the edge does not know it

    dns_server.zone.records[f"_h0p-challenge.{host}"] = ["h0p-verify=wrong-token"]
    wrong = (await api.post(f"/domains/{domain['id']}/verify")).json()
    assert wrong["verified"] is False and "does not contain" in wrong["problem"]

    dns_server.zone.records[f"_h0p-challenge.{host}"] = ["v=spf1 -all", domain["records"][0]["value"]]
    ok = (await api.post(f"/domains/{domain['id']}/verify")).json()
    assert ok["verified"] is True and ok["problem"] is None and ok["domain"]["verifiedAt"]
    record = decode_domain(await raw(redis, domain_key(host)))
    assert record is not None and record.domain_id == domain["id"] and record.root_url == "https://example.com/"


async def test_patch_writes_the_fallback_urls_to_the_edge_record(
    api: httpx.AsyncClient, dns_server: LoopbackDns, redis: aioredis.Redis, host: str
) -> None:
    domain = (await api.post("/domains", json={"domain": host})).json()
    dns_server.zone.records[f"_h0p-challenge.{host}"] = [domain["records"][0]["value"]]
    await api.post(f"/domains/{domain['id']}/verify")
    r = await api.patch(f"/domains/{domain['id']}", json={"notFoundUrl": "https://example.com/404", "rootUrl": None})
    assert r.status_code == 200 and r.json()["notFoundUrl"] == "https://example.com/404"
    record = decode_domain(await raw(redis, domain_key(host)))
    assert record is not None and record.not_found_url == "https://example.com/404" and record.root_url is None
    bad = await api.patch(f"/domains/{domain['id']}", json={"expiredUrl": "http://10.0.0.1/"})
    assert bad.status_code == 400 and bad.json()["error"]["details"][0]["path"] == "expiredUrl"


async def test_links_on_a_custom_domain_and_delete_refused_unless_forced(
    api: httpx.AsyncClient, redis: aioredis.Redis, host: str
) -> None:
    domain = (await api.post("/domains", json={"domain": host})).json()
    link = (await api.post("/links", json={"url": "https://example.com/", "domain": host, "slug": "x"})).json()
    assert link["domain"] == host and link["shortUrl"].startswith(f"http://{host}/")
    assert decode_link(await raw(redis, link_key(host, "x"))) is not None
    r = await api.delete(f"/domains/{domain['id']}")
    assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN"
    r = await api.delete(f"/domains/{domain['id']}", params={"force": "true"})
    assert r.status_code == 200
    assert (await api.get(f"/links/{link['id']}")).status_code == 404
    assert await redis.get(link_key(host, "x")) == NEGATIVE
    assert await redis.get(domain_key(host)) == NEGATIVE
    assert (await api.get(f"/domains/{domain['id']}")).status_code == 404


async def test_domains_list_and_plan_limits(
    api: httpx.AsyncClient, ctx: ServiceContext, workspace: Workspace, host: str
) -> None:
    await set_plan(ctx, workspace.id, "free")  # 3 domains
    for i in range(3):
        assert (await api.post("/domains", json={"domain": f"d{i}.{host}"})).status_code == 201
    r = await api.post("/domains", json={"domain": f"d9.{host}"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "PLAN_LIMIT_REACHED"
    listed = (await api.get("/domains", params={"limit": 2})).json()
    assert listed["total"] == 3 and len(listed["data"]) == 2


async def test_custom_domains_outside_the_plan_are_feature_not_available(
    api: httpx.AsyncClient, ctx: ServiceContext, workspace: Workspace, host: str
) -> None:
    no_domains = dataclasses.replace(ctx.settings, plans_json='{"basic": {"features": ["analytics"]}}')
    await set_plan(ServiceContext(no_domains, ctx.pool, ctx.redis), workspace.id, "basic")
    with pytest.raises(FeatureNotAvailable):
        await add_domain(ServiceContext(no_domains, ctx.pool, ctx.redis), workspace.id, DomainCreate(domain=host))


@pytest.fixture
async def other_api(api_app: Starlette, ctx: ServiceContext) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a second, unrelated workspace."""
    other = await get_or_create_workspace(ctx, f"other-{secrets.token_hex(6)}")
    _, secret = await create_key(ctx, other.id, "test", None)
    async with client_for(api_app, secret) as client:
        yield client


async def _verify(api: httpx.AsyncClient, dns_server: LoopbackDns, domain: dict[str, Any]) -> dict[str, Any]:
    dns_server.zone.records[f"_h0p-challenge.{domain['domain']}"] = [domain["records"][0]["value"]]
    result: dict[str, Any] = (await api.post(f"/domains/{domain['id']}/verify")).json()
    return result


async def test_an_unverified_claim_does_not_lock_out_the_owner_who_verifies(
    api: httpx.AsyncClient, other_api: httpx.AsyncClient, dns_server: LoopbackDns, redis: aioredis.Redis, host: str
) -> None:
    squatter = (await api.post("/domains", json={"domain": host})).json()
    squat_link = (await api.post("/links", json={"url": "https://evil.example/", "domain": host, "slug": "x"})).json()
    assert squat_link["domain"] == host

    r = await other_api.post("/domains", json={"domain": host})
    assert r.status_code == 201, r.text
    owner = r.json()
    assert owner["verified"] is False and owner["links"] == 0  # the squatter's link is not counted here
    verified = await _verify(other_api, dns_server, owner)
    assert verified["verified"] is True, verified

    # The squatter's pending claim and the links it made on the domain are gone, in the edge cache too.
    assert (await api.get(f"/domains/{squatter['id']}")).status_code == 404
    assert (await api.get("/domains")).json()["total"] == 0
    assert (await api.get(f"/links/{squat_link['id']}")).status_code == 404
    assert await redis.get(link_key(host, "x")) == NEGATIVE
    # The owner can use the slug the squatter took; the squatter cannot claim the domain again.
    mine = await other_api.post("/links", json={"url": "https://example.com/", "domain": host, "slug": "x"})
    assert mine.status_code == 201, mine.text
    again = await api.post("/domains", json={"domain": host})
    assert again.status_code == 409 and again.json()["error"]["code"] == "ALREADY_EXIST"
    refused = await api.post("/links", json={"url": "https://evil.example/", "domain": host, "slug": "y"})
    assert refused.status_code == 400 and refused.json()["error"]["details"][0]["path"] == "domain"


async def test_a_second_workspace_cannot_verify_a_domain_already_verified_elsewhere(
    api: httpx.AsyncClient, other_api: httpx.AsyncClient, dns_server: LoopbackDns, ctx: ServiceContext, host: str
) -> None:
    first = (await api.post("/domains", json={"domain": host})).json()
    second = (await other_api.post("/domains", json={"domain": host})).json()
    assert (await _verify(api, dns_server, first))["verified"] is True
    # The second claim was dropped by the first verification: nothing left to verify.
    assert (await other_api.post(f"/domains/{second['id']}/verify")).status_code == 404
    rows = await ctx.pool.fetch("SELECT id FROM domains WHERE hostname = $1", host)
    assert [r["id"] for r in rows] == [first["id"]]


async def test_a_pending_claim_older_than_the_expiry_is_gone(
    api: httpx.AsyncClient, other_api: httpx.AsyncClient, dns_server: LoopbackDns, ctx: ServiceContext, host: str
) -> None:
    stale = (await api.post("/domains", json={"domain": host})).json()
    link = (await api.post("/links", json={"url": "https://example.com/", "domain": host, "slug": "old"})).json()
    age = ctx.settings.domain_claim_expiry_s + 3600
    await ctx.pool.execute(
        "UPDATE domains SET created_at = now() - make_interval(secs => $2) WHERE id = $1", stale["id"], age
    )

    assert (await api.get(f"/domains/{stale['id']}")).status_code == 404
    assert (await api.get("/domains")).json()["total"] == 0
    assert (await api.post(f"/domains/{stale['id']}/verify")).status_code == 404
    late = await api.post("/links", json={"url": "https://example.com/", "domain": host, "slug": "new"})
    assert late.status_code == 400 and late.json()["error"]["details"][0]["path"] == "domain"
    # Anyone may claim it afresh, its former holder included (with a new token).
    renewed = await api.post("/domains", json={"domain": host})
    assert renewed.status_code == 201, renewed.text
    assert renewed.json()["records"][0]["value"] != stale["records"][0]["value"]
    assert (await api.get(f"/links/{link['id']}")).status_code == 404  # the expired claim took its links along
    assert (await other_api.post("/domains", json={"domain": host})).status_code == 201


async def test_deleting_a_pending_claim_leaves_other_workspaces_links_on_that_host_alone(
    api: httpx.AsyncClient, other_api: httpx.AsyncClient, host: str
) -> None:
    await api.post("/domains", json={"domain": host})
    theirs = (await api.post("/links", json={"url": "https://example.com/", "domain": host, "slug": "a"})).json()
    mine = (await other_api.post("/domains", json={"domain": host})).json()
    assert mine["links"] == 0
    r = await other_api.delete(f"/domains/{mine['id']}", params={"force": "true"})
    assert r.status_code == 200
    assert (await api.get(f"/links/{theirs['id']}")).status_code == 200


async def test_a_link_made_on_a_claim_while_the_owner_verifies_the_domain_goes_too(
    api: httpx.AsyncClient,
    other_api: httpx.AsyncClient,
    dns_server: LoopbackDns,
    ctx: ServiceContext,
    workspace: Workspace,
    host: str,
) -> None:
    assert (await api.post("/domains", json={"domain": host})).status_code == 201
    owner = (await other_api.post("/domains", json={"domain": host})).json()
    dns_server.zone.records[f"_h0p-challenge.{host}"] = [owner["records"][0]["value"]]
    async with ctx.pool.acquire() as conn:
        squat = conn.transaction()
        await squat.start()
        # What creating a link does in its transaction: check the domain, insert.
        await check_domain(conn, workspace.id, host, ctx.settings)
        await conn.execute(
            "INSERT INTO links (id, workspace_id, domain, slug, url) VALUES ($1, $2, $3, 'race', 'https://evil.example/')",
            new_id("link"),
            workspace.id,
            host,
        )
        verify = asyncio.create_task(other_api.post(f"/domains/{owner['id']}/verify"))
        # Let the verification go as far as it can: to its end, or until it waits for this transaction.
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        while not verify.done() and not await ctx.pool.fetchval(waiting):
            await asyncio.wait({verify}, timeout=0.05)
        await squat.commit()
    assert (await verify).json()["verified"] is True
    assert await ctx.pool.fetchval("SELECT count(*) FROM links WHERE domain = $1", host) == 0
