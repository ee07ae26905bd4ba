"""Signing in and out, throttling, CSRF, sessions (a real browser against the API process)."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import Browser, BrowserContext, expect

from tests.dashboard.conftest import ACCOUNT_ATTEMPTS, PASSWORD, Stack, new_page, sign_in, signed_in


def test_sign_in_shows_the_links_page_with_the_navigation(
    browser: Browser, stack: Stack, contexts: list[BrowserContext]
) -> None:
    page = signed_in(browser, stack, contexts, stack.owner)
    expect(page.get_by_role("heading", name="Links")).to_be_visible()
    nav = page.get_by_role("navigation", name="Main")
    for name in ("Links", "Analytics", "Domains", "Folders", "Tags", "Webhooks", "API Keys", "Settings"):
        expect(nav.get_by_role("link", name=name, exact=True)).to_be_visible()
    expect(nav.get_by_text("Developer Tools")).to_be_visible()
    cookie = next(c for c in page.context.cookies() if c["name"] == "h0p_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/app"


def test_a_page_asked_for_without_a_session_sends_to_sign_in_then_back(
    browser: Browser, stack: Stack, contexts: list[BrowserContext]
) -> None:
    page = new_page(browser, stack, contexts)
    page.goto("/app/tags")
    expect(page.get_by_role("heading", name="Sign in to H0p")).to_be_visible()
    page.get_by_label("Email").fill(stack.owner)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/app/tags")


def test_wrong_password_and_unknown_email_get_the_same_message(
    browser: Browser, stack: Stack, contexts: list[BrowserContext]
) -> None:
    email = stack.create_user(f"wrong-{id(contexts)}@example.com")
    page = new_page(browser, stack, contexts)
    sign_in(page, email, "not the password")
    wrong_password = page.get_by_role("alert").inner_text()
    sign_in(page, f"nobody-{id(contexts)}@example.com", PASSWORD)
    unknown_email = page.get_by_role("alert").inner_text()
    assert wrong_password == unknown_email == "The email or password is not correct."
    assert not any(c["name"] == "h0p_session" for c in page.context.cookies())


def test_sign_in_is_throttled_per_account_even_with_the_right_password(
    browser: Browser, stack: Stack, contexts: list[BrowserContext]
) -> None:
    email = stack.create_user(f"throttled-{id(contexts)}@example.com")
    page = new_page(browser, stack, contexts)
    for _ in range(ACCOUNT_ATTEMPTS):
        sign_in(page, email, "not the password")
        expect(page.get_by_role("alert")).to_have_text("The email or password is not correct.")
    sign_in(page, email, PASSWORD)
    expect(page.get_by_role("alert")).to_contain_text("Too many failed sign-ins")
    assert not any(c["name"] == "h0p_session" for c in page.context.cookies())
    # another account from the same client is not locked out by it
    sign_in(page, stack.owner, PASSWORD)
    page.wait_for_url("**/app/links")


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(
    browser: Browser, stack: Stack, contexts: list[BrowserContext]
) -> None:
    page = signed_in(browser, stack, contexts, stack.owner)
    page.goto("/app/folders")
    name = f"csrf-{id(contexts)}"
    page.get_by_label("New folder name").fill(name)
    # the attack: the same form, posted without its token (what a page on another site can send)
    page.locator("form:has(#new-folder) input[name=csrf]").evaluate("el => el.remove()")
    page.get_by_role("button", name="Create folder").click()
    expect(page.get_by_role("heading", name="Request refused")).to_be_visible()
    page.goto("/app/folders")
    expect(page.get_by_text(name)).to_have_count(0)


def test_a_cross_site_post_with_the_session_cookie_is_refused(
    stack: Stack, browser: Browser, contexts: list[BrowserContext]
) -> None:
    page = signed_in(browser, stack, contexts, stack.owner)
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    token = page.locator("input[name=csrf]").first.get_attribute("value")
    with httpx.Client(base_url=stack.api, cookies=cookies) as client:
        # right token, but sent from another origin (a browser names it in Origin)
        r = client.post("/app/folders", data={"csrf": token, "name": "from-evil"},
                        headers={"origin": "https://evil.example"})  # fmt: skip
        assert r.status_code == 403
        r = client.post("/app/folders", data={"name": "no-token"})
        assert r.status_code == 403
        assert "from-evil" not in client.get("/app/folders").text


def test_the_session_cookie_does_not_authorise_the_json_api(
    browser: Browser, stack: Stack, contexts: list[BrowserContext]
) -> None:
    page = signed_in(browser, stack, contexts, stack.owner)
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    r = httpx.get(f"{stack.api}/links", cookies=cookies)
    assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHORIZED"


def test_sign_out_ends_the_session_for_the_cookie_too(
    browser: Browser, stack: Stack, contexts: list[BrowserContext]
) -> None:
    page = signed_in(browser, stack, contexts, stack.owner)
    stolen = {c["name"]: c["value"] for c in page.context.cookies()}
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/app/signin")
    r = httpx.get(f"{stack.api}/app/links", cookies=stolen)
    assert r.status_code == 303 and "/app/signin" in r.headers["location"]


def test_sign_out_everywhere_ends_other_browsers_sessions(
    browser: Browser, stack: Stack, contexts: list[BrowserContext]
) -> None:
    email = stack.create_user(f"everywhere-{id(contexts)}@example.com")
    first = signed_in(browser, stack, contexts, email)
    second = signed_in(browser, stack, contexts, email)
    second.goto("/app/account")
    second.once("dialog", lambda d: d.accept())
    second.get_by_role("button", name="Sign out everywhere").click()
    second.wait_for_url("**/app/signin")
    first.goto("/app/links")
    first.wait_for_url("**/app/signin**")


def test_change_password_keeps_this_browser_and_signs_out_the_others(
    browser: Browser, stack: Stack, contexts: list[BrowserContext]
) -> None:
    email = stack.create_user(f"change-{id(contexts)}@example.com")
    other = signed_in(browser, stack, contexts, email)
    page = signed_in(browser, stack, contexts, email)
    page.goto("/app/account")
    page.get_by_label("Current password").fill("wrong password!")
    page.get_by_label("New password").fill("a brand new password")
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_text("the current password is not correct")).to_be_visible()
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("New password").fill("a brand new password")
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_role("status")).to_have_text("Password changed.")
    other.goto("/app/links")
    other.wait_for_url("**/app/signin**")
    fresh = new_page(browser, stack, contexts)
    sign_in(fresh, email, "a brand new password")
    fresh.wait_for_url("**/app/links")


def test_root_sends_a_browser_to_the_dashboard_and_a_client_to_the_docs(stack: Stack) -> None:
    r = httpx.get(f"{stack.api}/", headers={"accept": "text/html,application/xhtml+xml"})
    assert r.status_code == 303 and r.headers["location"] == "/app/"
    r = httpx.get(f"{stack.api}/", headers={"accept": "application/json"})
    assert r.status_code == 200 and r.json()["doc"] == "/doc" and r.json()["dashboard"] == "/app/"


def test_pages_carry_a_strict_content_security_policy(stack: Stack) -> None:
    r = httpx.get(f"{stack.api}/app/signin")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["referrer-policy"] == "same-origin"


def _http_sign_in(client: httpx.Client, email: str) -> httpx.Response:
    form = client.get("/app/signin", follow_redirects=False)
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None
    return client.post("/app/signin", data={"csrf": token.group(1), "email": email, "password": PASSWORD})


def test_signing_in_replaces_a_session_token_the_browser_already_had(stack: Stack) -> None:
    with httpx.Client(base_url=stack.api) as first:
        assert _http_sign_in(first, stack.owner).status_code == 303
        planted = first.cookies["h0p_session"]
    with httpx.Client(base_url=stack.api) as victim:
        form = victim.get("/app/signin")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert token is not None
        victim.cookies.set("h0p_session", planted, path="/app")
        r = victim.post("/app/signin", data={"csrf": token.group(1), "email": stack.owner, "password": PASSWORD})
        assert r.status_code == 303
        fresh = r.cookies["h0p_session"]
    assert fresh != planted
    gone = httpx.get(f"{stack.api}/app/links", cookies={"h0p_session": planted})
    assert gone.status_code == 303 and "/app/signin" in gone.headers["location"]
