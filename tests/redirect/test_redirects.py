"""What a visitor of a short link gets: status codes, query/UTM merging, expiry, domains, pages."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from h0p_settings import Settings
from redirect.app import EdgeApp
from tests.redirect.conftest import LinkMaker, edge_client, edge_settings, served, unique, write_domain, write_link
from tests.redirect.test_resolution import eventually
from tests.services import free_port

Edge = tuple[EdgeApp, httpx.AsyncClient]


def query_of(response: httpx.Response) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(response.headers["location"]).query, keep_blank_values=True)


async def test_link_redirects_with_302_by_default(edge: Edge, make_link: LinkMaker) -> None:
    _, client = edge
    slug = unique("a")
    await make_link("https://example.com/a", slug=slug)
    r = await client.get(f"/{slug}")
    assert r.status_code == 302
    assert r.headers["location"] == "https://example.com/a"
    assert r.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_link_answers_with_its_own_status_code(edge: Edge, make_link: LinkMaker, status: int) -> None:
    _, client = edge
    slug = unique("st")
    await make_link("https://example.com/s", slug=slug, status_code=status)
    r = await client.get(f"/{slug}")
    assert r.status_code == status
    assert r.headers["location"] == "https://example.com/s"


async def test_head_is_answered_like_get_without_a_body(edge: Edge, make_link: LinkMaker) -> None:
    _, client = edge
    slug = unique("hd")
    await make_link("https://example.com/h", slug=slug)
    r = await client.head(f"/{slug}")
    assert r.status_code == 302 and r.headers["location"] == "https://example.com/h"
    missing = await client.head("/does-not-exist-anywhere")
    assert missing.status_code == 404 and missing.content == b""


async def test_slug_is_case_sensitive_and_trailing_slash_ignored(edge: Edge, make_link: LinkMaker) -> None:
    _, client = edge
    slug = unique("CaSe")
    await make_link("https://example.com/c", slug=slug)
    assert (await client.get(f"/{slug}/")).status_code == 302
    assert (await client.get(f"/{slug.lower()}")).status_code == 404


async def test_unicode_slug_resolves_from_percent_encoding(edge: Edge, make_link: LinkMaker) -> None:
    _, client = edge
    slug = "café-" + unique("")
    await make_link("https://example.com/ü?x=ä", slug=slug)
    r = await client.get("/" + slug.replace("é", "%C3%A9"))
    assert r.status_code == 302
    assert r.headers["location"] == "https://example.com/%C3%BC?x=%C3%A4"


async def test_unknown_slug_shows_the_404_page(edge: Edge) -> None:
    _, client = edge
    r = await client.get("/no-such-link-here")
    assert r.status_code == 404
    assert "Link not found" in r.text
    assert r.headers["content-type"].startswith("text/html")


async def test_utm_fields_and_incoming_query_are_merged_without_duplicates(edge: Edge, make_link: LinkMaker) -> None:
    _, client = edge
    slug = unique("utm")
    await make_link(
        "https://example.com/p?utm_source=old&keep=1#top",
        slug=slug,
        utm_source="newsletter",
        utm_medium="email",
    )
    r = await client.get(f"/{slug}?utm_medium=social&ref=abc&qr=1")
    location = r.headers["location"]
    assert location.endswith("#top")
    assert sorted(query_of(r)) == sorted(
        [("utm_source", "newsletter"), ("utm_medium", "social"), ("keep", "1"), ("ref", "abc")]
    )


async def test_incoming_query_is_not_forwarded_when_forwarding_is_off(edge: Edge, make_link: LinkMaker) -> None:
    _, client = edge
    slug = unique("nf")
    await make_link("https://example.com/q?a=1", slug=slug, forward_query=False, utm_campaign="spring")
    r = await client.get(f"/{slug}?b=2")
    assert sorted(query_of(r)) == [("a", "1"), ("utm_campaign", "spring")]


async def test_expired_link_redirects_to_its_expired_url(edge: Edge, make_link: LinkMaker) -> None:
    _, client = edge
    slug = unique("ex")
    past = datetime.now().astimezone() - timedelta(minutes=1)
    await make_link("https://example.com/live", slug=slug, expires_at=past, expired_url="https://example.com/gone")
    r = await client.get(f"/{slug}")
    assert r.status_code == 302 and r.headers["location"] == "https://example.com/gone"


async def test_expired_link_without_expired_url_shows_410(edge: Edge, make_link: LinkMaker) -> None:
    _, client = edge
    slug = unique("ex")
    past = datetime.now().astimezone() - timedelta(seconds=1)
    await make_link("https://example.com/live", slug=slug, expires_at=past)
    r = await client.get(f"/{slug}")
    assert r.status_code == 410 and "expired" in r.text


async def test_link_before_its_expiry_still_redirects(edge: Edge, make_link: LinkMaker) -> None:
    _, client = edge
    slug = unique("ex")
    future = datetime.now().astimezone() + timedelta(hours=1)
    await make_link("https://example.com/live", slug=slug, expires_at=future, expired_url="https://example.com/gone")
    assert (await client.get(f"/{slug}")).headers["location"] == "https://example.com/live"


async def test_custom_domain_has_its_own_slugs_and_other_hosts_use_the_default_domain(
    settings: Settings, tmp_path: Path, pool: asyncpg.Pool, redis: aioredis.Redis, workspace_id: str
) -> None:
    host = unique("go") + ".example.org"
    slug = unique("d")
    await write_domain(pool, redis, workspace_id, host, root_url="https://example.org/home")
    await write_link(pool, redis, workspace_id, domain=host, slug=slug, url="https://example.org/custom")
    await write_link(
        pool, redis, workspace_id, domain=settings.default_domain, slug=slug, url="https://example.com/dflt"
    )
    async with edge_client(edge_settings(settings, tmp_path)) as (_, client):
        custom = await client.get(f"/{slug}", headers={"host": f"{host.upper()}:8080"})
        default = await client.get(f"/{slug}")
        unregistered = await client.get(f"/{slug}", headers={"host": "unregistered.example.net"})
        root = await client.get("/", headers={"host": host})
        default_root = await client.get("/")
    assert custom.headers["location"] == "https://example.org/custom"
    assert default.headers["location"] == "https://example.com/dflt"
    assert unregistered.headers["location"] == "https://example.com/dflt"
    assert root.status_code == 302 and root.headers["location"] == "https://example.org/home"
    assert default_root.status_code == 200 and settings.default_domain in default_root.text


async def test_custom_domain_sends_unknown_slugs_and_expired_links_to_its_pages(
    settings: Settings, tmp_path: Path, pool: asyncpg.Pool, redis: aioredis.Redis, workspace_id: str
) -> None:
    host = unique("br") + ".example.org"
    await write_domain(
        pool, redis, workspace_id, host,
        not_found_url="https://example.org/404", expired_url="https://example.org/expired",
    )  # fmt: skip
    slug = unique("old")
    past = datetime.now().astimezone() - timedelta(days=1)
    await write_link(pool, redis, workspace_id, domain=host, slug=slug, url="https://example.org/x", expires_at=past)
    async with edge_client(edge_settings(settings, tmp_path)) as (_, client):
        missing = await client.get("/nothing-here", headers={"host": host})
        expired = await client.get(f"/{slug}", headers={"host": host})
    assert missing.status_code == 302 and missing.headers["location"] == "https://example.org/404"
    assert expired.status_code == 302 and expired.headers["location"] == "https://example.org/expired"


async def test_blocked_destination_shows_a_warning_instead_of_redirecting(
    settings: Settings, tmp_path: Path, make_link: LinkMaker
) -> None:
    slug, sub = unique("bad"), unique("bad")
    await make_link("https://evil.example/x", slug=slug)
    await make_link("https://cdn.evil.example/y", slug=sub)
    async with edge_client(edge_settings(settings, tmp_path, blocked_hosts=("evil.example",))) as (_, client):
        r = await client.get(f"/{slug}")
        r2 = await client.get(f"/{sub}")
    assert r.status_code == 403 and "location" not in r.headers
    assert "blocked" in r.text and "https://evil.example/x" in r.text
    assert r2.status_code == 403


async def test_metrics_are_served_on_their_own_loopback_port_and_not_on_the_public_one(
    settings: Settings, tmp_path: Path
) -> None:
    metrics_port = free_port()
    local = edge_settings(settings, tmp_path, edge_metrics_port=metrics_port)
    async with served(local) as (app, base), httpx.AsyncClient(base_url=base) as client:
        assert (await client.get("/healthz")).text == "ok"
        assert (await client.get("/missing-for-metrics")).status_code == 404
        public = await client.get("/metrics")
        assert public.status_code == 404 and "h0p_edge" not in public.text
        assert app.metrics_server is not None and app.metrics_server.sock.getsockname()[0] == "127.0.0.1"
        metrics = await client.get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert metrics.status_code == 200
        assert 'h0p_edge_requests_total{outcome="not_found"} 1.0' in metrics.text
        assert "h0p_edge_cache_lookups_total" in metrics.text and "h0p_edge_events_total" in metrics.text
        assert (await client.get(f"http://127.0.0.1:{metrics_port}/")).status_code == 404
    off = edge_settings(settings, tmp_path, edge_metrics_port=0)
    async with served(off) as (app, base), httpx.AsyncClient(base_url=base) as client:
        assert app.metrics_server is None and (await client.get("/metrics")).status_code == 404


async def test_a_second_edge_on_a_taken_metrics_port_stops_with_one_line(settings: Settings, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("H0P_")} | {
            "H0P_DATABASE_URL": settings.database_url,
            "H0P_REDIS_URL": settings.redis_url,
            "H0P_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "H0P_REDIRECT_PORT": str(free_port()),
            "H0P_SPOOL_DIR": str(tmp_path / "spool"),
            "H0P_EDGE_METRICS_PORT": str(port),
        }
        code = "from redirect.app import serve; from h0p_settings import load_settings_or_exit as s; serve(s())"
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, env=env, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert f"127.0.0.1:{port}" in lines[0] and "H0P_EDGE_METRICS_PORT" in lines[0]


async def test_readyz_is_200_on_a_healthy_edge_that_has_sent_no_click(settings: Settings, tmp_path: Path) -> None:
    """What the k8s readiness probe sees: Redis and the broker up, no traffic yet (or for a while)."""
    async with served(edge_settings(settings, tmp_path)) as (app, base), httpx.AsyncClient(base_url=base) as client:

        async def ready() -> bool:
            return (await client.get("/readyz")).status_code == 200

        await eventually(ready, within=10)
        assert app.metrics.events_sent._value.get() == 0  # ready without a click having reached the broker


async def test_other_methods_are_refused(edge: Edge, make_link: LinkMaker) -> None:
    _, client = edge
    slug = unique("m")
    await make_link(slug=slug)
    assert (await client.delete(f"/{slug}")).status_code == 405
    assert (await client.post(f"/{slug}", data={"password": "x"})).status_code == 405
