"""Destination hosts are checked in the ASCII form the edge sends (IDNA 2008, UTS #46 mapping).

The attacks: ``http://１２７.０.０.１/admin`` (full-width digits) is loopback once a browser maps it,
and ``http://ｅｖｉｌ.com`` is ``evil.com``. Every check must run on the mapped form, and that form
is what is stored.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.errors import ValidationFailed
from api.schemas import DomainCreate, DomainUpdate, LinkCreate
from api.services.context import ServiceContext
from api.services.domains import add_domain, update_domain
from api.services.links import create_link
from api.services.workspaces import Workspace
from api.urls import UnsafeUrl, check_destination
from h0p_settings import Settings


def new(**fields: Any) -> LinkCreate:
    return msgspec.convert({"url": "https://example.com/page", **fields}, LinkCreate)


def paths(exc: ValidationFailed) -> list[str | None]:
    return [d.get("path") for d in exc.details or []]


def blocking(ctx: ServiceContext, *hosts: str) -> ServiceContext:
    return ServiceContext(dataclasses.replace(ctx.settings, blocked_hosts=hosts), ctx.pool, ctx.redis)


FULL_WIDTH_LOOPBACK = "http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/admin"  # １２７.０.０.１
FULL_WIDTH_EVIL = "http://\uff45\uff56\uff49\uff4c.com/x"  # ｅｖｉｌ.com


async def test_full_width_loopback_address_is_refused_with_the_field_path(
    ctx: ServiceContext, workspace: Workspace
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await create_link(ctx, workspace.id, new(url=FULL_WIDTH_LOOPBACK))
    assert paths(caught.value) == ["url"]


async def test_full_width_loopback_is_a_400_validation_error_over_http(api: httpx.AsyncClient) -> None:
    r = await api.post("/links", json={"url": FULL_WIDTH_LOOPBACK})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and [d["path"] for d in error["details"]] == ["url"]


@pytest.mark.parametrize(
    "url",
    [
        FULL_WIDTH_EVIL,
        "http://evil\u3002com/x",  # ideographic full stop
        "http://\U0001d41e\U0001d42f\U0001d422\U0001d425.com/x",  # mathematical bold
        "http://www.EVIL\uff0ecom/x",  # full-width full stop, a subdomain
        "http://ev\u00adil.com/x",  # soft hyphen, ignored by the mapping
    ],
)
async def test_look_alike_spellings_of_a_blocked_host_are_refused(
    ctx: ServiceContext, workspace: Workspace, url: str
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await create_link(blocking(ctx, "evil.com"), workspace.id, new(url=url))
    assert paths(caught.value) == ["url"]


async def test_rules_split_and_expired_url_hosts_go_through_the_same_mapping(
    ctx: ServiceContext, workspace: Workspace
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await create_link(
            blocking(ctx, "evil.com"),
            workspace.id,
            new(
                rules=[{"conditions": [{"type": "os", "value": "iOS"}], "url": FULL_WIDTH_LOOPBACK}],
                split=[{"url": FULL_WIDTH_EVIL, "weight": 50}, {"url": "https://ok.example.com/", "weight": 50}],
                expiredUrl="http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/",  # ｌｏｃａｌｈｏｓｔ
            ),
        )
    assert set(paths(caught.value)) == {"rules[0].url", "split[0].url", "expiredUrl"}


async def test_hosts_are_stored_in_their_ascii_form_everywhere(ctx: ServiceContext, workspace: Workspace) -> None:
    link = await create_link(
        ctx,
        workspace.id,
        new(
            url="https://B\u00fccher.example/caf\u00e9?q=1",
            rules=[{"conditions": [{"type": "os", "value": "iOS"}], "url": "https://fa\u00df.example/r"}],
            split=[{"url": "https://\uff45xample.com/a", "weight": 50}, {"url": "https://ok.example/", "weight": 50}],
            expiredUrl="https://\u4f8b\u3002example/gone",
        ),
    )
    # the path keeps its characters (the edge percent-encodes them); the host is the A-label
    assert link.url == "https://xn--bcher-kva.example/caf\u00e9?q=1"
    # IDNA 2008: "faß" stays itself (IDNA 2003 would have made it "fass", another host)
    assert link.rules[0].url == "https://xn--fa-hia.example/r"
    assert link.split[0].url == "https://example.com/a"
    assert link.expired_url == "https://xn--fsq.example/gone"


@pytest.mark.parametrize(
    "url",
    [
        "http://\u2488.com/",  # ⒈: no IDNA 2008 form
        "http://a\u200db.com/",  # a zero-width joiner outside the scripts that allow it
        "http://\u0301a.com/",  # a label starting with a combining mark
        "http://\u05d0a.com/",  # mixed right-to-left and left-to-right in one label
    ],
)
async def test_hosts_without_an_ascii_form_are_refused(ctx: ServiceContext, workspace: Workspace, url: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await create_link(ctx, workspace.id, new(url=url))
    assert paths(caught.value) == ["url"]


# Compatibility and look-alike spellings of ASCII host characters: each maps to the ASCII one
# under UTS #46 (full-width, mathematical alphanumerics, circled/enclosed forms, superscripts),
# plus the characters the mapping deletes (soft hyphen, zero-width space, variation selector).
def _variants(ch: str) -> list[str]:
    out = [ch, ch.upper()]
    if ch.isalpha():
        i = ord(ch) - ord("a")
        out += [chr(0xFF41 + i), chr(0xFF21 + i), chr(0x1D41A + i), chr(0x1D400 + i), chr(0x1D5BA + i)]
        out.append(chr(0x24D0 + i))  # circled small letter
    elif ch.isdigit():
        d = int(ch)
        out += [chr(0xFF10 + d), chr(0x1D7CE + d), chr(0x1D7EC + d)]
        if d in (0, 1, 2, 3):
            out.append("\u2070\u00b9\u00b2\u00b3"[d])  # superscripts
    elif ch == ".":
        out += ["\u3002", "\uff0e", "\uff61"]
    elif ch == "-":
        out += ["\uff0d"]
    return out


IGNORED = ["", "\u00ad", "\u200b", "\ufe0f"]


def look_alike(target: str) -> st.SearchStrategy[str]:
    parts = [st.tuples(st.sampled_from(_variants(ch)), st.sampled_from(IGNORED)) for ch in target]
    return st.tuples(*parts).map(lambda pairs: "".join(a + b for a, b in pairs))


BLOCKED = ("evil.com",)
TARGETS = ["evil.com", "www.evil.com", "127.0.0.1", "10.0.0.1", "169.254.169.254", "localhost", "printer.local"]
PROPERTY_SETTINGS = Settings(blocked_hosts=BLOCKED)


@given(st.sampled_from(TARGETS).flatmap(look_alike))
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
def test_no_spelling_of_a_refused_host_passes(host: str) -> None:
    with pytest.raises(UnsafeUrl):
        check_destination(f"http://{host}/p", PROPERTY_SETTINGS)


@given(look_alike("shop-1.example.com"))
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
def test_any_spelling_of_a_good_host_is_refused_or_stored_as_that_host(host: str) -> None:
    try:
        stored = check_destination(f"http://{host}/p", PROPERTY_SETTINGS)
    except UnsafeUrl:
        return
    assert stored == "http://shop-1.example.com/p"


ALPHABET = sorted({v for ch in "evil.com0127-x" for v in _variants(ch)} | set(IGNORED[1:]))


@given(st.text(st.sampled_from(ALPHABET), min_size=1, max_size=24))
@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
def test_a_stored_host_is_ascii_and_passes_the_checks_as_stored(host: str) -> None:
    try:
        stored = check_destination(f"http://{host}/p", PROPERTY_SETTINGS)
    except UnsafeUrl:
        return
    stored_host = urlsplit(stored).hostname or ""
    assert stored_host.isascii() and stored == f"http://{stored_host}/p"
    # the checks ran on this very form: checking it again changes nothing and refuses nothing
    assert check_destination(stored, PROPERTY_SETTINGS) == stored
    assert stored_host.rstrip(".") != "evil.com" and not stored_host.rstrip(".").endswith(".evil.com")


async def test_a_referrer_condition_is_stored_in_the_ascii_form_browsers_send(
    ctx: ServiceContext, workspace: Workspace
) -> None:
    rule = {"conditions": [{"type": "referrer", "value": "B\u00fccher\u3002example"}], "url": "https://ok.example/"}
    link = await create_link(ctx, workspace.id, new(rules=[rule]))
    condition = link.rules[0].conditions[0]
    assert condition.value == "xn--bcher-kva.example"


async def test_a_domains_name_and_fallback_urls_are_stored_in_the_idna_2008_ascii_form(
    ctx: ServiceContext, workspace: Workspace
) -> None:
    # IDNA 2003 (Python's codec) made faß into fass: a different host from the one browsers reach
    create = msgspec.convert(
        {"domain": "go.fa\u00df.example", "rootUrl": "https://\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com/home",
         "notFoundUrl": "https://b\u00fccher.example/404"},
        DomainCreate,
    )  # fmt: skip
    domain = await add_domain(ctx, workspace.id, create)
    assert domain.domain == "go.xn--fa-hia.example"
    assert (domain.root_url, domain.not_found_url) == ("https://example.com/home", "https://xn--bcher-kva.example/404")
    update = msgspec.convert(
        {"expiredUrl": "https://\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com/gone"}, DomainUpdate
    )
    assert (await update_domain(ctx, workspace.id, domain.id, update)).expired_url == "https://example.com/gone"


async def test_a_domains_fallback_url_to_a_look_alike_of_a_blocked_host_is_refused(
    ctx: ServiceContext, workspace: Workspace
) -> None:
    create = msgspec.convert(
        {"domain": "go.brand.example", "rootUrl": "https://\uff45\uff56\uff49\uff4c.com/"}, DomainCreate
    )
    with pytest.raises(ValidationFailed) as refused:
        await add_domain(blocking(ctx, "evil.com"), workspace.id, create)
    assert paths(refused.value) == ["rootUrl"]
