"""Routing rules (every condition type, their order), the A/B split, and query merging."""

from __future__ import annotations

import collections
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from h0p_settings import Settings
from redirect.geo import GeoLocator
from redirect.record import LinkRecord, link_record_from_row
from redirect.rules import Visitor, choose_rule, choose_split, merge_query, preferred_language, split_bucket
from tests.redirect.conftest import LinkMaker, edge_client, edge_settings, unique

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko)"
    " Version/17.0 Mobile/15E148 Safari/604.1"
)
IPAD = (
    "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Safari/604.1"
)
ANDROID_PHONE = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36"
)
WINDOWS_CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
)
MAC_FIREFOX = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.0; rv:121.0) Gecko/20100101 Firefox/121.0"
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def record(rules: list[dict[str, Any]] | None = None, split: list[dict[str, Any]] | None = None) -> LinkRecord:
    """A record built from API-shaped JSON, exactly as the edge and the API build it."""
    import msgspec

    row = {
        "id": "link_1", "workspace_id": "ws_1", "url": "https://example.com/default", "status_code": 302,
        "rules": msgspec.json.encode(rules or []).decode(), "split": msgspec.json.encode(split or []).decode(),
        "password_hash": None, "expires_at": None, "expired_url": None, "forward_query": True,
        "og_title": None, "og_description": None, "og_image": None,
        **{f: None for f in ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")},
    }  # fmt: skip
    return link_record_from_row(row)


def one(condition: dict[str, Any]) -> LinkRecord:
    return record([{"conditions": [condition], "url": "https://example.com/matched"}])


def routed(rec: LinkRecord, **visitor: Any) -> str | None:
    chosen = choose_rule(rec, Visitor(**visitor))
    return chosen[0] if chosen else None


MATCHED = "https://example.com/matched"


@pytest.mark.parametrize(
    ("condition", "visitor", "expected"),
    [
        ({"type": "device", "value": "mobile"}, {"user_agent": IPHONE}, True),
        ({"type": "device", "value": "mobile"}, {"user_agent": ANDROID_PHONE}, True),
        ({"type": "device", "value": "mobile"}, {"user_agent": WINDOWS_CHROME}, False),
        ({"type": "device", "value": "tablet"}, {"user_agent": IPAD}, True),
        ({"type": "device", "value": "desktop"}, {"user_agent": MAC_FIREFOX}, True),
        ({"type": "device", "value": "bot"}, {"user_agent": GOOGLEBOT}, True),
        ({"type": "device", "value": ["tablet", "mobile"]}, {"user_agent": IPAD}, True),
        ({"type": "os", "value": "iOS"}, {"user_agent": IPHONE}, True),
        ({"type": "os", "value": "Android"}, {"user_agent": IPHONE}, False),
        ({"type": "os", "value": "macOS"}, {"user_agent": MAC_FIREFOX}, True),
        ({"type": "os", "value": "Windows"}, {"user_agent": WINDOWS_CHROME}, True),
        ({"type": "browser", "value": "Chrome"}, {"user_agent": ANDROID_PHONE}, True),
        ({"type": "browser", "value": "Safari"}, {"user_agent": IPHONE}, True),
        ({"type": "browser", "value": "Firefox"}, {"user_agent": WINDOWS_CHROME}, False),
        ({"type": "language", "value": "fr"}, {"accept_language": "fr-CA,fr;q=0.9,en;q=0.5"}, True),
        ({"type": "language", "value": "fr-CA"}, {"accept_language": "fr-CA,en;q=0.5"}, True),
        ({"type": "language", "value": "fr-CA"}, {"accept_language": "fr-FR"}, False),
        ({"type": "language", "value": "fr"}, {"accept_language": "en-US,fr;q=0.4"}, False),
        ({"type": "language", "value": "de"}, {"accept_language": "en;q=0.3, de;q=0.8"}, True),
        ({"type": "query", "key": "ref"}, {"query_string": "ref=x"}, True),
        ({"type": "query", "key": "ref"}, {"query_string": "other=x"}, False),
        ({"type": "query", "key": "ref", "value": "x"}, {"query_string": "ref=y&ref=x"}, True),
        ({"type": "query", "key": "ref", "value": "x"}, {"query_string": "ref=y"}, False),
        ({"type": "query", "key": "ref", "not": True}, {"query_string": "a=1"}, True),
        ({"type": "query", "key": "ref", "not": True}, {"query_string": "ref="}, False),
        ({"type": "referrer", "value": "twitter.com"}, {"referer": "https://mobile.twitter.com/x"}, True),
        ({"type": "referrer", "value": "twitter.com"}, {"referer": "https://nottwitter.com/"}, False),
        ({"type": "referrer", "value": "twitter.com"}, {"referer": ""}, False),
        ({"type": "ip", "value": "198.51.100.0/24"}, {"ip": "198.51.100.9"}, True),
        ({"type": "ip", "value": "198.51.100.9"}, {"ip": "198.51.100.9"}, True),
        ({"type": "ip", "value": ["2001:db8::/32"]}, {"ip": "198.51.100.9"}, False),
        ({"type": "ip", "value": "2001:db8::/32"}, {"ip": "2001:db8::1"}, True),
        ({"type": "before", "value": "2030-01-01T00:00:00Z"}, {"now": time.time()}, True),
        ({"type": "before", "value": "2020-01-01T00:00:00+00:00"}, {"now": time.time()}, False),
        ({"type": "after", "value": "2020-01-01T00:00:00Z"}, {"now": time.time()}, True),
        ({"type": "after", "value": "2030-01-01"}, {"now": time.time()}, False),
        ({"type": "device", "value": "mobile", "not": True}, {"user_agent": WINDOWS_CHROME}, True),
        ({"type": "teleport", "value": "x"}, {}, False),
        ({"type": "after", "value": "not a time"}, {}, False),
    ],
)
def test_each_condition_type_matches_what_it_says(
    condition: dict[str, Any], visitor: dict[str, Any], expected: bool
) -> None:
    assert (routed(one(condition), **visitor) == MATCHED) is expected


@pytest.mark.parametrize(
    ("condition", "ip", "expected"),
    [
        ({"type": "country", "value": "US"}, "8.8.8.8", True),
        ({"type": "country", "value": ["gb", "fr"]}, "81.2.69.142", True),
        ({"type": "country", "value": "US"}, "81.2.69.142", False),
        ({"type": "country", "value": "US"}, "127.0.0.1", False),
        ({"type": "city", "value": "London"}, "81.2.69.142", True),
        ({"type": "city", "value": "mountain view"}, "8.8.8.8", True),
        ({"type": "city", "value": "Paris"}, "8.8.8.8", False),
    ],
)
def test_country_and_city_come_from_the_geo_database(
    settings: Settings, condition: dict[str, Any], ip: str, expected: bool
) -> None:
    geo = GeoLocator(settings.geoip_path)
    try:
        assert (routed(one(condition), ip=ip, locate=geo.locate) == MATCHED) is expected
    finally:
        geo.close()


def test_all_conditions_of_a_rule_must_hold_and_the_first_matching_rule_wins() -> None:
    rec = record(
        [
            {"conditions": [{"type": "os", "value": "iOS"}, {"type": "query", "key": "beta"}], "url": "https://a/1"},
            {"conditions": [{"type": "os", "value": "iOS"}], "url": "https://a/2"},
            {"conditions": [{"type": "device", "value": "mobile"}], "url": "https://a/3"},
        ]
    )
    assert routed(rec, user_agent=IPHONE, query_string="beta=1") == "https://a/1"
    assert routed(rec, user_agent=IPHONE) == "https://a/2"
    assert routed(rec, user_agent=ANDROID_PHONE) == "https://a/3"
    assert routed(rec, user_agent=WINDOWS_CHROME) is None
    assert choose_rule(rec, Visitor(user_agent=IPHONE)) == ("https://a/2", "rule:1")


def test_split_distributes_by_weight_and_is_stable_per_visitor() -> None:
    rec = record(split=[{"url": "https://a/x", "weight": 70}, {"url": "https://a/y", "weight": 30}])
    counts = collections.Counter(
        choose_split(rec.split, split_bucket(f"{i:032x}", rec.link_id))[0]  # type: ignore[index]
        for i in range(10_000)
    )
    assert 6700 < counts["https://a/x"] < 7300
    assert counts["https://a/x"] + counts["https://a/y"] == 10_000
    assert split_bucket("v" * 32, "link_1") == split_bucket("v" * 32, "link_1")


def test_merge_keeps_each_key_once_with_visitor_over_utm_over_destination() -> None:
    merged = merge_query(
        "https://x.test/p?a=1&utm_source=dest#frag", [("utm_source", "link")], [("a", "2"), ("a", "3")]
    )
    assert merged == "https://x.test/p?a=2&a=3&utm_source=link#frag"
    assert merge_query("https://x.test/p", [], []) == "https://x.test/p"
    assert merge_query("https://x.test/p", [], [("q", "a b&c")]) == "https://x.test/p?q=a%20b%26c"


@given(st.text(max_size=300))
def test_accept_language_parsing_never_fails(header: str) -> None:
    preferred_language(header)


_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)


@given(st.lists(st.tuples(_text.filter(bool), _text), max_size=5))
def test_merge_gives_each_key_the_values_of_one_source(incoming: list[tuple[str, str]]) -> None:
    from urllib.parse import parse_qsl, urlsplit

    merged = merge_query("https://x.test/p?utm_source=dest&own=1", [("utm_source", "s")], incoming)
    found: dict[str, list[str]] = {}
    for key, value in parse_qsl(urlsplit(merged).query, keep_blank_values=True):
        found.setdefault(key, []).append(value)
    sent: dict[str, list[str]] = {}
    for key, value in incoming:
        sent.setdefault(key, []).append(value)
    for key, values in sent.items():
        assert found[key] == values
    assert found["utm_source"] == sent.get("utm_source", ["s"])
    assert found["own"] == sent.get("own", ["1"])


async def test_rules_are_applied_by_a_running_edge_from_request_headers(
    settings: Settings, tmp_path: Path, make_link: LinkMaker
) -> None:
    slug = unique("r")
    await make_link(
        "https://example.com/default",
        slug=slug,
        rules=[
            {"conditions": [{"type": "country", "value": "GB"}], "url": "https://example.com/uk"},
            {"conditions": [{"type": "os", "value": "iOS"}], "url": "https://example.com/ios"},
            {"conditions": [{"type": "language", "value": "de"}], "url": "https://example.com/de"},
            {"conditions": [{"type": "referrer", "value": "news.example"}], "url": "https://example.com/news"},
        ],
    )
    trusted = edge_settings(settings, tmp_path, trusted_proxies=(__import__("ipaddress").ip_network("203.0.113.0/24"),))
    async with edge_client(trusted) as (_, client):

        async def go(**headers: str) -> str:
            r: httpx.Response = await client.get(f"/{slug}", headers=headers)
            return r.headers["location"]

        assert await go(**{"x-forwarded-for": "81.2.69.142"}) == "https://example.com/uk"
        assert await go(**{"user-agent": IPHONE}) == "https://example.com/ios"
        assert await go(**{"accept-language": "de-AT,de;q=0.9"}) == "https://example.com/de"
        assert await go(referer="https://www.news.example/article") == "https://example.com/news"
        assert await go(**{"user-agent": WINDOWS_CHROME}) == "https://example.com/default"


async def test_split_cookie_keeps_a_visitor_on_one_variant(
    settings: Settings, tmp_path: Path, make_link: LinkMaker
) -> None:
    slug = unique("ab")
    await make_link(
        slug=slug,
        split=[{"url": "https://example.com/a", "weight": 50}, {"url": "https://example.com/b", "weight": 50}],
    )
    async with edge_client(edge_settings(settings, tmp_path)) as (_, client):
        first = await client.get(f"/{slug}")
        assert "h0p_vid=" in first.headers["set-cookie"]
        again = {(await client.get(f"/{slug}")).headers["location"] for _ in range(10)}  # client keeps the cookie
        assert again == {first.headers["location"]}
        seen = set()
        for _ in range(40):
            client.cookies.clear()
            seen.add((await client.get(f"/{slug}")).headers["location"])
        assert seen == {"https://example.com/a", "https://example.com/b"}


# -- the indexed evaluation decides exactly what testing every condition one by one decides ------


def _reference(rules: list[dict[str, Any]], visitor: Visitor) -> tuple[str, str] | None:
    """Rule choice the plain way (each condition against each of its values), as the edge did before."""
    import ipaddress
    from datetime import UTC, datetime

    from redirect.record import normalise_browser, normalise_os

    def holds(c: dict[str, Any]) -> bool:
        kind, value = c["type"], c.get("value")
        values = [] if value is None else [value] if isinstance(value, str) else list(value)
        if kind == "query":
            present = visitor.query.get(c.get("key") or "")
            return present is not None and (not values or any(v in present for v in values))
        if kind == "device":
            return visitor.agent.device in {v.lower() for v in values}
        if kind == "os":
            return visitor.agent.os in {normalise_os(v) for v in values}
        if kind == "browser":
            return visitor.agent.browser in {normalise_browser(v) for v in values}
        if kind == "language":
            tag = visitor.language
            return bool(tag) and any(v.lower() in (tag, tag.split("-", 1)[0]) for v in values)
        if kind == "referrer":
            from urllib.parse import urlsplit

            host = (urlsplit(visitor.referer).hostname or "").rstrip(".")
            return bool(host) and any(host == v.lower() or host.endswith("." + v.lower()) for v in values)
        if kind == "ip":
            address = visitor.address
            nets = [ipaddress.ip_network(v, strict=False) for v in values]
            return address is not None and any(n.version == address.version and address in n for n in nets)
        if kind in ("before", "after"):
            moment = datetime.fromisoformat(values[0])
            at = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
            return visitor.now < at if kind == "before" else visitor.now >= at
        return False

    for index, rule in enumerate(rules):
        if all(holds(c) != bool(c.get("not", False)) for c in rule["conditions"]):
            return rule["url"], f"rule:{index}"
    return None


_AGENTS = [IPHONE, IPAD, ANDROID_PHONE, WINDOWS_CHROME, MAC_FIREFOX, GOOGLEBOT, ""]
_conditions = st.one_of(
    st.builds(
        lambda kind, values: {"type": kind, "value": values},
        st.sampled_from(["device", "os", "browser"]),
        st.lists(
            st.sampled_from(
                [
                    "mobile",
                    "Desktop",
                    "tablet",
                    "bot",
                    "iOS",
                    "Mac OS X",
                    "Windows",
                    "android",
                    "Chrome",
                    "Mobile Safari",
                    "firefox",
                    "x",
                ]
            ),
            min_size=1,
            max_size=3,
        ),
    ),
    st.builds(
        lambda v: {"type": "language", "value": v},
        st.lists(st.sampled_from(["fr", "fr-CA", "EN", "de"]), min_size=1, max_size=2),
    ),
    st.builds(
        lambda v: {"type": "referrer", "value": v}, st.sampled_from(["news.example", "example", "a.news.example"])
    ),
    st.builds(
        lambda k, v: {"type": "query", "key": k, **({"value": v} if v else {})},
        st.sampled_from(["a", "b"]),
        st.lists(st.sampled_from(["1", "2", ""]), max_size=2),
    ),
    st.builds(
        lambda v: {"type": "ip", "value": v},
        st.lists(
            st.sampled_from(
                ["198.51.100.0/24", "198.51.100.7", "198.0.0.0/8", "0.0.0.0/0", "2001:db8::/32", "::/0", "2001:db8::1"]
            ),
            min_size=1,
            max_size=3,
        ),
    ),
    st.builds(
        lambda kind, v: {"type": kind, "value": v},
        st.sampled_from(["before", "after"]),
        st.sampled_from(["2020-01-01T00:00:00Z", "2030-01-01", "2026-06-01T12:00:00+02:00"]),
    ),
).flatmap(lambda c: st.sampled_from([c, {**c, "not": True}]))
_rules = st.lists(
    st.builds(lambda cs, i: {"conditions": cs, "url": f"https://x.example/{i}"},
              st.lists(_conditions, min_size=1, max_size=4), st.integers(0, 99)),
    min_size=1, max_size=6,
)  # fmt: skip
_visitors = st.builds(
    Visitor,
    user_agent=st.sampled_from(_AGENTS),
    accept_language=st.sampled_from(["", "fr-CA,fr;q=0.9", "en", "de-AT"]),
    referer=st.sampled_from(["", "https://www.news.example/x", "https://example/", "https://a.news.example."]),
    query_string=st.sampled_from(["", "a=1", "a=2&b=", "b=1&a=1&a=1"]),
    ip=st.sampled_from(["", "198.51.100.7", "203.0.113.1", "2001:db8::1", "::ffff:198.51.100.7"]),
    now=st.sampled_from([1.5e9, 1.8e9, 1.78e9, 2e9]),
)


@given(_rules, _visitors)
@hypothesis_settings(max_examples=400, deadline=None)
def test_indexed_rules_choose_what_testing_each_condition_would(rules: list[dict[str, Any]], visitor: Visitor) -> None:
    assert choose_rule(record(rules), visitor) == _reference(rules, visitor)
