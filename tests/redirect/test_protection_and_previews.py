"""Password-protected links, social previews for link-preview fetchers, and hostile input."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import httpx
import msgspec
import pytest
import redis.asyncio as aioredis
from argon2 import PasswordHasher
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from api.schemas import LinkCreate, LinkUpdate
from api.services.context import ServiceContext
from api.services.links import create_link, update_link
from api.services.workspaces import get_or_create_workspace
from h0p_settings import Settings
from redirect.agent import FETCHER_TOKENS
from redirect.app import EdgeApp
from redirect.request import BadRequest, parse_slug
from tests.redirect.conftest import LinkMaker, edge_client, edge_settings, served, unique
from tests.redirect.test_resolution import eventually

Edge = tuple[EdgeApp, httpx.AsyncClient]
HASH = PasswordHasher().hash("open sesame")


async def test_password_link_shows_a_form_then_redirects_after_the_right_password(
    edge: Edge, make_link: LinkMaker
) -> None:
    _, client = edge
    slug = unique("pw")
    await make_link("https://example.com/secret", slug=slug, password_hash=HASH)
    form = await client.get(f"/{slug}?x=1")
    assert form.status_code == 200 and '<form method="post">' in form.text
    assert "location" not in form.headers
    wrong = await client.post(f"/{slug}?x=1", data={"password": "nope"})
    assert wrong.status_code == 403 and "Wrong password" in wrong.text
    right = await client.post(f"/{slug}?x=1", data={"password": "open sesame"})
    assert right.status_code == 303 and right.headers["location"] == f"/{slug}?x=1"
    assert "HttpOnly" in right.headers["set-cookie"]
    unlocked = await client.get(f"/{slug}?x=1")  # the client sends the cookie back
    assert unlocked.status_code == 302
    assert unlocked.headers["location"] == "https://example.com/secret?x=1"


async def test_unlock_cookie_is_bound_to_the_link_and_its_password(edge: Edge, make_link: LinkMaker) -> None:
    _, client = edge
    slug, other = unique("pw"), unique("pw")
    await make_link(slug=slug, password_hash=HASH)
    await make_link(slug=other, password_hash=HASH)
    await client.post(f"/{slug}", data={"password": "open sesame"})
    assert (await client.get(f"/{slug}")).status_code == 302
    assert (await client.get(f"/{other}")).status_code == 200  # its own form: the cookie is not a master key
    name, value = next(iter(client.cookies.items()))
    client.cookies.clear()
    client.cookies.set(name, value[:-1] + ("0" if value[-1] != "0" else "1"))
    assert (await client.get(f"/{slug}")).status_code == 200  # forged signature


async def test_wrong_passwords_are_limited_per_link_and_client(
    settings: Settings, tmp_path: Path, make_link: LinkMaker
) -> None:
    slug = unique("pw")
    await make_link(slug=slug, password_hash=HASH)
    limited = edge_settings(settings, tmp_path, password_attempts=3)
    async with edge_client(limited, client_ip="198.51.100.1") as (_, client):
        codes = [(await client.post(f"/{slug}", data={"password": f"guess{i}"})).status_code for i in range(3)]
        blocked = await client.post(f"/{slug}", data={"password": "open sesame"})
    assert codes == [403, 403, 403]
    assert blocked.status_code == 429 and "retry-after" in blocked.headers
    async with edge_client(limited, client_ip="198.51.100.2") as (_, other_client):
        assert (await other_client.post(f"/{slug}", data={"password": "open sesame"})).status_code == 303


FETCHERS = [
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Facebot",
    "Twitterbot/1.0",
    "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "Slackbot 1.0 (+https://api.slack.com/robots)",
    "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
    "WhatsApp/2.23.20.0 A",
    "TelegramBot (like TwitterBot)",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_1) AppleWebKit/601.2.4 (KHTML, like Gecko) Version/9.0.1"
    " Safari/601.2.4 facebookexternalhit/1.1 Facebot Twitterbot/1.0",  # iMessage
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Pinterest/0.2 (+https://www.pinterest.com/bot.html)",
]
BROWSERS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko)"
    " Version/17.0 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.0; rv:121.0) Gecko/20100101 Firefox/121.0",
    "",
    # in-app browsers of apps whose fetchers get previews: people, to be redirected
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko)"
    " Mobile/15E148 Snapchat/12.60.0.51 (like Safari/8617.2.4.10.8, panda)",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko)"
    " Mobile/15E148 [Pinterest/iOS]",
]


@pytest.fixture
async def preview_slug(make_link: LinkMaker) -> str:
    slug = unique("og")
    await make_link(
        "https://example.com/article",
        slug=slug,
        og_title='Spring <sale> & "more"',
        og_description="Half price </script><script>alert(1)</script>",
        og_image="https://cdn.example.com/card.png",
    )
    return slug


@pytest.mark.parametrize("agent", FETCHERS)
async def test_preview_fetchers_get_escaped_open_graph_tags(edge: Edge, preview_slug: str, agent: str) -> None:
    _, client = edge
    r = await client.get(f"/{preview_slug}", headers={"user-agent": agent})
    assert r.status_code == 200
    assert '<meta property="og:title" content="Spring &lt;sale&gt; &amp; &quot;more&quot;">' in r.text
    assert '<meta property="og:image" content="https://cdn.example.com/card.png">' in r.text
    assert '<meta name="twitter:card" content="summary_large_image">' in r.text
    assert "<script>" not in r.text


@pytest.mark.parametrize("agent", BROWSERS)
async def test_browsers_get_the_redirect_of_a_link_with_a_preview(edge: Edge, preview_slug: str, agent: str) -> None:
    _, client = edge
    r = await client.get(f"/{preview_slug}", headers={"user-agent": agent})
    assert r.status_code == 302 and r.headers["location"] == "https://example.com/article"


async def test_fetchers_are_redirected_when_the_link_has_no_preview_fields(edge: Edge, make_link: LinkMaker) -> None:
    _, client = edge
    slug = unique("plain")
    await make_link("https://example.com/plain", slug=slug)
    assert (await client.get(f"/{slug}", headers={"user-agent": FETCHERS[2]})).status_code == 302


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/%zz", 400),
        ("/abc%", 400),
        ("/abc%4", 400),
        ("/%ff%fe", 400),  # not UTF-8
        ("/%ed%a0%80", 400),  # an encoded surrogate
        ("/a%00b", 400),
        ("/a%0d%0aset-cookie:x", 400),
        ("/" + "a" * 191, 414),
        ("/" + "%41" * 3000, 414),
        ("//evil.example", 400),
    ],
)
async def test_malformed_paths_answer_4xx(edge: Edge, path: str, status: int) -> None:
    _, client = edge
    r = await client.get(httpx.URL("http://localhost").copy_with(raw_path=path.encode()))
    assert r.status_code == status


@given(st.binary(max_size=300))
def test_slug_parser_only_ever_raises_bad_request(raw: bytes) -> None:
    try:
        slug = parse_slug(b"/" + raw)
    except BadRequest as exc:
        assert exc.status in (400, 414)
    else:
        assert len(slug) <= 190 and all(ord(c) >= 0x20 for c in slug)


_header_value = st.binary(max_size=200).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.binary(min_size=0, max_size=250),
    host=_header_value,
    agent=_header_value,
    language=_header_value,
    forwarded=_header_value,
    cookie=_header_value,
    query=st.binary(max_size=100),
)
async def test_hostile_paths_and_headers_never_cause_a_server_error(
    edge: Edge, path: bytes, host: bytes, agent: bytes, language: bytes, forwarded: bytes, cookie: bytes, query: bytes
) -> None:
    app, _ = edge
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "method": "GET", "path": "/", "raw_path": b"/" + path, "query_string": query,
        "client": ("203.0.113.9", 1), "server": ("127.0.0.1", 8080), "scheme": "http", "http_version": "1.1",
        "headers": [
            (b"host", host), (b"user-agent", agent), (b"accept-language", language),
            (b"x-forwarded-for", forwarded), (b"cookie", cookie), (b"referer", agent),
        ],
    }  # fmt: skip
    await app(scope, receive, send)  # type: ignore[arg-type]
    status = sent[0]["status"]
    assert isinstance(status, int) and status < 500


def fetcher_agents() -> list[str]:
    """A User-Agent for every fetcher the edge knows (its tokens), and the real strings above."""
    return [f"Mozilla/5.0 (compatible; {token}/1.0; +https://fetcher.example)" for token in FETCHER_TOKENS] + FETCHERS


async def test_preview_of_a_protected_link_carries_og_tags_and_never_the_destination(
    settings: Settings, tmp_path: Path, make_link: LinkMaker
) -> None:
    """The attack: a fetcher User-Agent on a password-protected link used to get a page linking the destination."""
    slug = unique("pwog")
    await make_link(
        "https://secret.example/hidden-path?token=s3cr3t",
        slug=slug,
        password_hash=HASH,
        og_title="A protected card",
        og_description="Members only",
        og_image="https://cdn.example.com/card.png",
    )
    leaks, no_card = [], []
    async with served(edge_settings(settings, tmp_path)) as (_, base), httpx.AsyncClient(base_url=base) as client:
        for agent in fetcher_agents():
            for method in ("GET", "HEAD"):
                r = await client.request(method, f"/{slug}", headers={"user-agent": agent})
                if "secret.example" in r.text or "s3cr3t" in r.text or "location" in r.headers or r.status_code != 200:
                    leaks.append((method, agent, r.status_code))
            r = await client.get(f"/{slug}", headers={"user-agent": agent})
            if '<meta property="og:title" content="A protected card">' not in r.text:
                no_card.append(agent)
        # a browser still gets the password form, and the right password still opens it
        browser = await client.get(f"/{slug}", headers={"user-agent": BROWSERS[0]})
        assert browser.status_code == 200 and '<form method="post">' in browser.text
    assert leaks == []
    assert no_card == []


async def test_preview_of_a_blocked_destination_is_the_warning_not_the_card(
    settings: Settings, tmp_path: Path, make_link: LinkMaker
) -> None:
    slug = unique("blog")
    await make_link("https://evil.example/phish", slug=slug, og_title="Totally safe", og_image="https://cdn.example/x")
    local = edge_settings(settings, tmp_path, blocked_hosts=("evil.example",))
    async with served(local) as (_, base), httpx.AsyncClient(base_url=base) as client:
        answers = {agent: (await client.get(f"/{slug}", headers={"user-agent": agent})) for agent in fetcher_agents()}
    wrong = [(a, r.status_code) for a, r in answers.items() if r.status_code != 403 or "og:title" in r.text]
    assert wrong == []


async def test_unlock_cookie_stops_working_once_the_password_changes(
    settings: Settings, tmp_path: Path, pool: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    """Unlock, change the password through the API's service, and the old cookie shows the form again."""
    ctx = ServiceContext(settings=settings, pool=pool, redis=redis)
    workspace = await get_or_create_workspace(ctx, unique("pw-ws-"))
    slug = unique("pwc")
    link = await create_link(
        ctx,
        workspace.id,
        msgspec.convert({"url": "https://example.com/members", "slug": slug, "password": "first pass"}, LinkCreate),
    )
    async with served(edge_settings(settings, tmp_path)) as (app, base), httpx.AsyncClient(base_url=base) as client:
        await eventually(lambda: asyncio.sleep(0, app.subscriber.connected.is_set()), 5)
        assert (await client.post(f"/{slug}", data={"password": "first pass"})).status_code == 303
        assert (await client.get(f"/{slug}")).headers["location"] == "https://example.com/members"  # cached now
        old_cookies = dict(client.cookies.items())
        heard = app.metrics.invalidations._value.get()

        await update_link(ctx, workspace.id, link.id, msgspec.convert({"password": "second pass"}, LinkUpdate))
        await eventually(lambda: asyncio.sleep(0, app.metrics.invalidations._value.get() > heard), 5)

        client.cookies.clear()
        for name, value in old_cookies.items():
            client.cookies.set(name, value)
        again = await client.get(f"/{slug}")
        assert again.status_code == 200 and '<form method="post">' in again.text and "location" not in again.headers
        client.cookies.clear()
        assert (await client.post(f"/{slug}", data={"password": "first pass"})).status_code == 403
        assert (await client.post(f"/{slug}", data={"password": "second pass"})).status_code == 303
        assert (await client.get(f"/{slug}")).headers["location"] == "https://example.com/members"
