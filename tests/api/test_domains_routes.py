"""Custom domains over HTTP, verified against a real DNS server on loopback."""

from __future__ import annotations

import dataclasses

import httpx
import pytest
import redis.asyncio as aioredis

from api.errors import FeatureNotAvailable
from api.schemas import DomainCreate
from api.services.context import ServiceContext
from api.services.domains import add_domain
from api.services.workspaces import Workspace, set_plan
from redirect.record import NEGATIVE, decode_domain, decode_link, domain_key, link_key
from tests.api.conftest import raw
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
