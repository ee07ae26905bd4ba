"""The edge's HTTP protocol over a real socket: replies written without an ASGI task must keep HTTP/1.1's rules.

GET and HEAD are answered by the protocol itself: cached links straight from the parser,
others when the shared Redis lookup calls back (or its Postgres fallback finishes). POSTs and
requests with a body go through uvicorn's own path. These tests mix them on one connection
(keep-alive, pipelining, HEAD, bodies, HTTP/1.0, Connection: close) and read the raw bytes a
client would read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from argon2 import PasswordHasher

from h0p_settings import Settings
from redirect.app import EdgeApp
from tests.redirect.conftest import (
    LinkMaker,
    edge_settings,
    read_events,
    served,
    unique,
    write_domain,
    write_link,
)  # fmt: skip
from tests.redirect.test_resolution import eventually, own_redis_with_link


async def read_responses(
    reader: asyncio.StreamReader, count: int, head: bool = False
) -> list[tuple[int, dict[str, str], bytes]]:
    """``count`` HTTP responses off a stream: (status, headers, body), bodies by content-length (none for HEAD)."""
    responses = []
    for _ in range(count):
        raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = 0 if head else int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(reader.readexactly(length), 5)
        responses.append((status, headers, body))
    return responses


async def connect(base: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    url = urlsplit(base)
    return await asyncio.open_connection(url.hostname, url.port)


async def warm(base: str, *slugs: str) -> None:
    """One GET each: the links are now in the edge's in-process cache (the path without a task)."""
    async with httpx.AsyncClient(base_url=base) as client:
        for slug in slugs:
            assert (await client.get(f"/{slug}")).status_code == 302


@asynccontextmanager
async def cached_link_connection(
    settings: Settings, tmp_path: Path, make_link: LinkMaker, url: str, keep_alive_s: int = 5
) -> AsyncIterator[tuple[str, asyncio.StreamReader, asyncio.StreamWriter]]:
    """A served edge with one link already in its in-process cache, and a raw connection to it."""
    slug = unique("c")
    await make_link(url, slug=slug)
    async with served(edge_settings(settings, tmp_path), keep_alive_s=keep_alive_s) as (_, base):
        await warm(base, slug)
        reader, writer = await connect(base)
        try:
            yield slug, reader, writer
        finally:
            writer.close()


async def test_pipelined_requests_are_answered_in_order_across_both_paths(
    settings: Settings, tmp_path: Path, make_link: LinkMaker
) -> None:
    cached, uncached, also_cached = unique("pa"), unique("pb"), unique("pc")
    await make_link("https://example.com/a", slug=cached)
    await make_link("https://example.com/b", slug=uncached)
    await make_link("https://example.com/c", slug=also_cached)
    async with served(edge_settings(settings, tmp_path)) as (_, base):
        await warm(base, cached, also_cached)
        reader, writer = await connect(base)
        # one write, four requests: cached, a Redis lookup, cached behind it, a 404 (Redis, then Postgres)
        writer.write(
            b"".join(
                f"GET /{slug} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
                for slug in (cached, uncached, also_cached, unique("missing"))
            )
        )
        responses = await read_responses(reader, 4)
        writer.close()
    assert [(s, h.get("location")) for s, h, _ in responses] == [
        (302, "https://example.com/a"),
        (302, "https://example.com/b"),
        (302, "https://example.com/c"),
        (404, None),
    ]
    assert all("date" in h for _, h, _ in responses)


async def test_keep_alive_head_and_connection_close(settings: Settings, tmp_path: Path, make_link: LinkMaker) -> None:
    async with cached_link_connection(settings, tmp_path, make_link, "https://example.com/kept") as (
        slug, reader, writer,
    ):  # fmt: skip
        for _ in range(3):
            writer.write(f"GET /{slug} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
            [(status, headers, _)] = await read_responses(reader, 1)
            assert (status, headers["location"]) == (302, "https://example.com/kept")
            assert "connection" not in headers
        writer.write(f"HEAD /{slug} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        [(status, headers, body)] = await read_responses(reader, 1)
        assert (status, headers["location"], body) == (302, "https://example.com/kept", b"")
        writer.write(f"GET /{slug} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        [(status, headers, _)] = await read_responses(reader, 1)
        assert (status, headers["connection"]) == (302, "close")
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the server closed the connection


async def test_http_1_0_is_answered_and_closed(settings: Settings, tmp_path: Path, make_link: LinkMaker) -> None:
    async with cached_link_connection(settings, tmp_path, make_link, "https://example.com/old") as (
        slug, reader, writer,
    ):  # fmt: skip
        writer.write(f"GET /{slug} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), 5)
    assert raw.startswith(b"HTTP/1.1 302 ")
    assert b"\r\nlocation: https://example.com/old\r\n" in raw
    assert b"\r\nconnection: close\r\n" in raw


async def test_get_with_a_body_and_a_head_of_a_page(settings: Settings, tmp_path: Path, make_link: LinkMaker) -> None:
    async with cached_link_connection(settings, tmp_path, make_link, "https://example.com/body") as (
        slug, reader, writer,
    ):  # fmt: skip
        writer.write(f"GET /{slug} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello".encode())
        writer.write(b"HEAD /%zz HTTP/1.1\r\nHost: localhost\r\n\r\n")  # bad percent-encoding: 400, no body
        [(status, headers, _)] = await read_responses(reader, 1)
        assert (status, headers["location"]) == (302, "https://example.com/body")
        [(status, headers, _)] = await read_responses(reader, 1, head=True)
        assert (status, int(headers["content-length"]) > 0) == (400, True)  # the page's length, no body
        writer.write(f"GET /{slug} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())  # nothing left over before it
        [(status, headers, _)] = await read_responses(reader, 1)
        assert (status, headers["location"]) == (302, "https://example.com/body")


async def test_clicks_answered_without_a_task_are_counted_and_sent(
    settings: Settings, tmp_path: Path, make_link: LinkMaker
) -> None:
    slug = unique("ev")
    link = await make_link("https://example.com/events", slug=slug)
    local = edge_settings(settings, tmp_path)
    app: EdgeApp
    async with served(local) as (app, base), httpx.AsyncClient(base_url=base) as client:
        for _ in range(20):
            assert (await client.get(f"/{slug}", headers={"user-agent": "proto-test"})).status_code == 302
        hits = app.metrics.cache_hit.value
        redirects = app.metrics.requests["redirect"].value
    events = await read_events(settings.kafka_bootstrap, local.kafka_topic, expect=20)
    assert len(events) == 20
    assert {(e.link_id, e.ua, e.ip) for e in events} == {(link.link_id, "proto-test", "127.0.0.1")}
    assert redirects == 20
    assert hits >= 19  # the first request filled the in-process cache


async def test_a_cached_link_is_answered_as_it_was_when_looked_up(
    settings: Settings, tmp_path: Path, make_link: LinkMaker, pool: asyncpg.Pool, redis: aioredis.Redis,
    workspace_id: str,
) -> None:  # fmt: skip
    """The first request of each link is answered when Redis calls back, the second from the in-process cache."""
    host = unique("fast") + ".example.org"
    await write_domain(pool, redis, workspace_id, host, expired_url="https://example.org/expired")
    past = datetime.now().astimezone() - timedelta(days=1)
    rule = {"conditions": [{"type": "query", "key": "src", "op": "present"}], "url": "https://example.com/ruled"}
    cases: list[tuple[str, dict[str, str], int, str | None]] = []

    async def case(path: str, expect: int, location: str | None, headers: dict[str, str] | None = None) -> None:
        cases.append((path, headers or {}, expect, location))

    slug = unique("c")
    await write_link(pool, redis, workspace_id, domain=host, slug=slug, url="https://example.org/c", expires_at=past)
    await case(f"/{slug}", 302, "https://example.org/expired", {"host": host})
    await case(f"/{slug}", 404, None, {"host": "unregistered.example.net"})  # the default domain's namespace
    slug = unique("x")
    await make_link("https://example.com/x", slug=slug, expires_at=past)
    await case(f"/{slug}", 410, None)
    slug = unique("p")
    await make_link("https://example.com/p", slug=slug, password_hash=PasswordHasher().hash("pw"))
    await case(f"/{slug}", 200, None)
    slug = unique("o")
    await make_link("https://example.com/o", slug=slug, og_title="Sale")
    await case(f"/{slug}", 200, None, {"user-agent": "facebookexternalhit/1.1"})
    await case(f"/{slug}", 302, "https://example.com/o", {"user-agent": "Mozilla/5.0"})
    slug = unique("r")
    await make_link("https://example.com/r", slug=slug, rules=[rule], utm_source="news", forward_query=True)
    await case(f"/{slug}?src=1", 302, "https://example.com/ruled?src=1&utm_source=news")
    await case(f"/{slug}?other=2", 302, "https://example.com/r?other=2&utm_source=news")
    async with served(edge_settings(settings, tmp_path)) as (_, base), httpx.AsyncClient(base_url=base) as client:
        for path, headers, expect, location in cases:
            for method in ("GET", "HEAD"):
                first = await client.request(method, path, headers=headers)
                second = await client.request(method, path, headers=headers)
                assert (first.status_code, first.headers.get("location")) == (expect, location), (method, path)
                assert (second.status_code, second.headers.get("location"), second.content) == (
                    first.status_code, first.headers.get("location"), first.content
                ), (method, path)  # fmt: skip
                assert (first.content == b"") == (method == "HEAD" or expect == 302)


async def test_keep_alive_timeout_counts_from_the_last_activity(
    settings: Settings, tmp_path: Path, make_link: LinkMaker
) -> None:
    async with cached_link_connection(settings, tmp_path, make_link, "https://example.com/idle", keep_alive_s=1) as (
        slug, reader, writer,
    ):  # fmt: skip
        for _ in range(6):  # 2.4 s of requests on one connection: longer than the timeout, never idle for it
            writer.write(f"GET /{slug} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
            [(status, _, _)] = await read_responses(reader, 1)
            assert status == 302
            await asyncio.sleep(0.4)
        started = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # idle: the server closes it
        assert 0.4 <= asyncio.get_running_loop().time() - started <= 2.5


async def test_without_an_in_process_cache_links_come_from_redis_then_postgres(
    settings: Settings, tmp_path: Path, pool: asyncpg.Pool, redis: aioredis.Redis, workspace_id: str
) -> None:
    """Every request is a Redis lookup; a key Redis lacks is read from Postgres once and written back."""
    local = edge_settings(settings, tmp_path, cache_size=0)
    slug = unique("nc")
    await write_link(pool, redis, workspace_id, domain=local.default_domain, slug=slug, url="https://example.com/nc")
    key = f"h0p:l:{local.default_domain}/{slug}"
    await redis.delete(key)  # only in Postgres now
    app: EdgeApp
    host = {"host": local.default_domain}  # no custom-domain lookup for an unknown host first
    async with served(local) as (app, base), httpx.AsyncClient(base_url=base, headers=host) as client:
        for _ in range(3):
            response = await client.get(f"/{slug}")
            assert (response.status_code, response.headers["location"]) == (302, "https://example.com/nc")
        assert (await client.head(f"/{slug}")).status_code == 302
        missing = await client.get(f"/{unique('none')}")
        metrics = app.metrics
        counts = (
            metrics.cache_miss.value, metrics.redis_hit._value.get(), metrics.redis_miss._value.get(),
            metrics.postgres_lookups._value.get(),
        )  # fmt: skip
    assert missing.status_code == 404
    assert await redis.exists(key)  # written back by the first request
    # 5 requests, each one LRU miss and one Redis lookup; Postgres read for the first and the 404
    assert counts == (5, 3, 2, 2)


async def test_a_pipelined_post_waits_behind_a_lookup(settings: Settings, tmp_path: Path, make_link: LinkMaker) -> None:
    looked_up, locked = unique("lu"), unique("lk")
    await make_link("https://example.com/looked-up", slug=looked_up)
    await make_link("https://example.com/locked", slug=locked, password_hash=PasswordHasher().hash("pw"))
    async with served(edge_settings(settings, tmp_path)) as (_, base):
        reader, writer = await connect(base)
        form = b"password=wrong"
        writer.write(
            f"GET /{looked_up} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
            + f"POST /{locked} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(form)}\r\n\r\n".encode()
            + form
            + f"GET /{looked_up} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
        )
        responses = await read_responses(reader, 3)
        writer.close()
    assert [(s, h.get("location")) for s, h, _ in responses] == [
        (302, "https://example.com/looked-up"),
        (403, None),  # the wrong password's form again
        (302, "https://example.com/looked-up"),
    ]


async def test_a_client_gone_before_its_lookup_returns(
    settings: Settings, tmp_path: Path, make_link: LinkMaker
) -> None:
    slug = unique("gone")
    await make_link("https://example.com/gone", slug=slug)
    local = edge_settings(settings, tmp_path, cache_size=0)
    async with served(local) as (_, base):
        for _ in range(20):
            _, writer = await connect(base)
            writer.write(f"GET /{slug} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
            writer.close()  # before the reply: the edge writes to a closed connection, or not at all
        reader, writer = await connect(base)
        writer.write(f"GET /{slug} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        [(status, headers, _)] = await read_responses(reader, 1)
        writer.close()
    assert (status, headers["location"]) == (302, "https://example.com/gone")
    events = await read_events(settings.kafka_bootstrap, local.kafka_topic, expect=21)
    assert len(events) == 21  # every click is counted, answered or not: the link was followed


@pytest.mark.chaos
async def test_redis_outage_falls_back_to_postgres_and_recovers_without_a_task(
    settings: Settings, tmp_path: Path, pool: asyncpg.Pool, workspace_id: str
) -> None:
    link = own_redis_with_link(settings, tmp_path, pool, workspace_id, "https://example.com/r", cache_size=0)
    async with link as (local, slug, stop_redis, start_redis):
        app: EdgeApp
        host = {"host": local.default_domain}  # the link's own lookup, not an unknown host's first
        async with served(local) as (app, base), httpx.AsyncClient(base_url=base, headers=host) as client:
            assert (await client.get(f"/{slug}")).headers["location"] == "https://example.com/r"
            stop_redis()
            for _ in range(5):
                response = await client.get(f"/{slug}")
                assert (response.status_code, response.headers["location"]) == (302, "https://example.com/r")
            assert (await client.get(f"/{unique('never')}")).status_code == 404
            assert app.metrics.postgres_lookups._value.get() >= 6
            start_redis()  # empty: the edge refills it from Postgres

            async def refilled() -> bool:
                assert (await client.get(f"/{slug}")).headers["location"] == "https://example.com/r"
                # a new client: the one that wrote the link saw its server die
                async with aioredis.Redis.from_url(local.redis_url, socket_timeout=2) as fresh:
                    return bool(await fresh.exists(f"h0p:l:{local.default_domain}/{slug}"))

            await eventually(refilled, within=10)


async def test_replies_written_together_keep_their_order_before_a_close_or_a_400(
    settings: Settings, tmp_path: Path, make_link: LinkMaker
) -> None:
    """Replies are held until the loop has read every ready socket; a closing reply or a 400 must not pass them."""
    async with cached_link_connection(settings, tmp_path, make_link, "https://example.com/held") as (
        slug, reader, writer,
    ):  # fmt: skip
        get = f"GET /{slug} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
        writer.write(get + get + f"GET /{slug} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        responses = await read_responses(reader, 3)
        assert [(s, h["location"], h.get("connection")) for s, h, _ in responses] == [
            (302, "https://example.com/held", None),
            (302, "https://example.com/held", None),
            (302, "https://example.com/held", "close"),
        ]
        assert await asyncio.wait_for(reader.read(), 5) == b""
    async with cached_link_connection(settings, tmp_path, make_link, "https://example.com/held2") as (
        slug, reader, writer,
    ):  # fmt: skip
        writer.write(f"GET /{slug} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode() + b"NOT HTTP AT ALL\r\n\r\n")
        responses = await read_responses(reader, 2)
        assert [s for s, _, _ in responses] == [302, 400]
