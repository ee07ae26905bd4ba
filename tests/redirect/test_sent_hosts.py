"""The edge checks the host it sends, in the form it sends it (the API's IDNA 2008 / UTS #46 form).

Links written straight into Postgres and Redis here, as an older API (or a bug) might have
stored them: the edge must not trust that the host was checked in its ASCII form.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st

from h0p_settings import Settings
from redirect.edge import location_bytes
from redirect.hosts import ascii_host
from tests.redirect.conftest import LinkMaker, edge_client, edge_settings, unique, write_domain


async def test_a_stored_link_to_a_full_width_blocked_host_is_not_redirected(
    settings: Settings, tmp_path: Path, make_link: LinkMaker
) -> None:
    slug, sub = unique("fw"), unique("fw")
    await make_link("http://\uff45\uff56\uff49\uff4c.com/x", slug=slug)  # ｅｖｉｌ.com
    await make_link("http://cdn.evil\u3002com/y", slug=sub)  # ideographic full stop
    async with edge_client(edge_settings(settings, tmp_path, blocked_hosts=("evil.com",))) as (_, client):
        r = await client.get(f"/{slug}")
        r2 = await client.get(f"/{sub}")
    assert r.status_code == 403 and "location" not in r.headers
    assert r2.status_code == 403 and "location" not in r2.headers


async def test_the_edge_sends_the_idna_2008_host_the_api_stores(
    settings: Settings, tmp_path: Path, make_link: LinkMaker
) -> None:
    slug = unique("idn")
    await make_link("https://fa\u00df.example/r", slug=slug)
    async with edge_client(edge_settings(settings, tmp_path)) as (_, client):
        r = await client.get(f"/{slug}")
    # IDNA 2003 (Python's "idna" codec) would send fass.example: another host than the one checked
    assert r.status_code == 302 and r.headers["location"] == "https://xn--fa-hia.example/r"


async def test_a_stored_host_without_an_ascii_form_is_not_sent(
    settings: Settings, tmp_path: Path, make_link: LinkMaker
) -> None:
    slug = unique("bad")
    await make_link("http://\u2488.com/x", slug=slug)  # ⒈: no IDNA 2008 form
    async with edge_client(edge_settings(settings, tmp_path)) as (_, client):
        r = await client.get(f"/{slug}")
    assert r.status_code == 403 and "location" not in r.headers


@given(st.text(st.sampled_from("abc-.\uff41\uff0e\u3002\u00df\u00fc\U0001d41a\u00ad"), min_size=1, max_size=16))
@settings(max_examples=300, deadline=None)
def test_the_location_host_is_the_mapped_host(host: str) -> None:
    mapped = ascii_host(host)
    if mapped is None or not mapped.strip("."):
        return
    location = location_bytes(f"https://{host}/p").decode("ascii")
    assert location == f"https://{mapped}/p"


async def test_fallback_urls_to_a_blocked_host_are_refused_like_destinations(
    settings: Settings, tmp_path: Path, make_link: LinkMaker, pool: asyncpg.Pool, redis: aioredis.Redis,
    workspace_id: str,
) -> None:  # fmt: skip
    # A link's expired URL, a domain's root and not-found URLs: blocked after they were stored.
    slug, host = unique("exp"), f"{unique('fb')}.example".lower()
    past = datetime.now(UTC) - timedelta(hours=1)
    await make_link("https://example.com/ok", slug=slug, expires_at=past, expired_url="https://evil.com/after")
    await write_domain(
        pool, redis, workspace_id, host, root_url="https://evil.com/root", not_found_url="https://evil.com/404"
    )
    async with edge_client(edge_settings(settings, tmp_path, blocked_hosts=("evil.com",))) as (_, client):
        answers = [
            await client.get(f"/{slug}"),
            await client.get("/", headers={"host": host}),
            await client.get(f"/{unique('none')}", headers={"host": host}),
        ]
    assert [(r.status_code, "location" in r.headers) for r in answers] == [(403, False)] * 3
