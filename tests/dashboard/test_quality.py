"""Every page: no console error or failed request, no serious axe-core violation, usable at a
phone's width and with the keyboard; screenshots of the main pages (``make screenshots``)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.dashboard.conftest import PASSWORD, Problems, Stack, axe_violations, new_page, signed_in

PAGES = ["/app/links", "/app/links/new", "/app/analytics", "/app/domains", "/app/folders", "/app/tags",
         "/app/webhooks", "/app/keys", "/app/settings", "/app/account"]  # fmt: skip
PHONE = {"width": 375, "height": 740}


def _shots(tmp_path: Path) -> Path:
    # `make screenshots` points this at docs/screenshots; otherwise they go to the test's tmp dir.
    target = Path(os.environ.get("H0P_SCREENSHOTS_DIR") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    return target


def _fill_workspace(page: Page, marker: str) -> str:
    """A folder, two tags, a domain and a few links, made through the pages; returns a link's page path."""
    page.goto("/app/folders")
    page.get_by_label("New folder name").fill("Spring campaign")
    page.get_by_role("button", name="Create folder").click()
    expect(page.get_by_role("link", name="Spring campaign")).to_be_visible()
    page.goto("/app/tags")
    for name, colour in (("newsletter", "blue"), ("social", "green")):
        page.get_by_label("New tag name").fill(name)
        page.get_by_label("Colour", exact=True).select_option(colour)
        page.get_by_role("button", name="Create tag").click()
        expect(page.get_by_role("link", name=name)).to_be_visible()
    page.goto("/app/domains")
    page.get_by_label("Domain name").fill(f"go-{marker}.example.com")
    page.get_by_role("button", name="Add domain").click()
    expect(page.get_by_role("region", name=f"go-{marker}.example.com")).to_be_visible()
    for i, (url, title) in enumerate(
        [("https://shop.example.com/spring-sale", "Spring sale"), ("https://blog.example.com/launch", "Launch post"),
         ("https://docs.example.com/start", "Getting started")]
    ):  # fmt: skip
        page.goto("/app/links/new")
        page.get_by_label("Destination URL").fill(url)
        page.get_by_label("Short link").fill(f"{marker}-{i}")
        page.get_by_label("Title", exact=True).fill(title)
        page.get_by_label("Folder").select_option(label="Spring campaign")
        page.get_by_label("newsletter").check()
        page.get_by_role("button", name="Create link").click()
        expect(page.get_by_role("status")).to_have_text("Link created.")
    return page.url.split("?")[0].removeprefix(page.url.split("/app/")[0])


def _loaded(page: Page, path: str) -> None:
    page.wait_for_load_state("networkidle")
    if path.startswith("/app/analytics"):  # its panels are fetched by its script: wait until all are drawn
        page.wait_for_function("() => document.body.dataset.analyticsReady")


def _check_page(page: Page, problems: Problems, path: str) -> None:
    page.goto(path)
    _loaded(page, path)
    assert problems.items == [], f"{path}: {problems.items}"
    violations = axe_violations(page)
    assert violations == [], f"{path}: {violations}"


def test_every_page_is_clean_empty_and_with_data_and_fits_a_phone(
    browser: Browser, stack: Stack, contexts: list[BrowserContext], tmp_path: Path
) -> None:
    marker = secrets.token_hex(3)
    email = stack.create_user(f"pages-{marker}@example.com", workspace=f"Acme {marker}")
    page = signed_in(browser, stack, contexts, email)
    problems = Problems()
    problems.watch(page)
    shots = _shots(tmp_path)
    for path in PAGES:
        _check_page(page, problems, path)
    page.goto("/app/links")
    expect(page.get_by_role("link", name="Create your first link")).to_be_visible()
    page.screenshot(path=str(shots / "links-empty.png"), full_page=True)

    detail = _fill_workspace(page, marker)
    # typing in the form leaves slug checks in flight that the submit's navigation aborts (by design)
    problems.items.clear()
    link_id = detail.rsplit("/", 1)[-1]
    for path in [*PAGES, detail, f"{detail}/edit", f"/app/analytics?linkId={link_id}&interval=30d&unique=true"]:
        _check_page(page, problems, path)
    for name, path in (("links", "/app/links"), ("link-form", "/app/links/new"), ("link-detail", detail),
                       ("domains", "/app/domains"), ("keys", "/app/keys"), ("settings", "/app/settings"),
                       ("webhooks", "/app/webhooks")):  # fmt: skip
        page.goto(path)
        page.screenshot(path=str(shots / f"{name}.png"), full_page=True)

    phone = signed_in(browser, stack, contexts, email, viewport=PHONE, is_mobile=True, has_touch=True)
    problems_phone = Problems()
    problems_phone.watch(phone)
    for path in ["/app/links", "/app/links/new", detail, "/app/domains", "/app/settings", "/app/analytics"]:
        phone.goto(path)
        _loaded(phone, path)
        overflow = phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px at {PHONE['width']}px"
    phone.goto("/app/links")
    phone.screenshot(path=str(shots / "links-phone.png"), full_page=True)
    assert problems_phone.items == []


def test_sign_in_page_and_404_page_pass_axe(browser: Browser, stack: Stack, contexts: list[BrowserContext]) -> None:
    page = new_page(browser, stack, contexts)
    page.goto("/app/signin")
    assert axe_violations(page) == []
    page = signed_in(browser, stack, contexts, stack.owner)
    response = page.goto("/app/no-such-page")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    assert axe_violations(page) == []


def test_sign_in_and_create_a_link_with_the_keyboard_only(
    browser: Browser, stack: Stack, contexts: list[BrowserContext]
) -> None:
    page = new_page(browser, stack, contexts)
    page.goto("/app/signin")
    page.keyboard.press("Tab")  # the email field comes first
    page.keyboard.type(stack.owner)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url("**/app/links")
    page.get_by_role("link", name="Create link").focus()
    page.keyboard.press("Enter")
    page.wait_for_url("**/app/links/new")
    page.get_by_label("Destination URL").focus()
    page.keyboard.type("https://example.com/keyboard")
    page.keyboard.press("Enter")  # submits the form
    expect(page.get_by_role("status")).to_have_text("Link created.")


@pytest.mark.parametrize(
    "path", ["/app/links", "/app/keys", "/app/settings", "/app/analytics/data?groupBy=count", "/app/analytics/live",
             "/app/analytics/export"],
)  # fmt: skip
def test_pages_are_not_served_to_a_browser_without_a_session(stack: Stack, path: str) -> None:
    import httpx

    r = httpx.get(f"{stack.api}{path}")
    assert r.status_code == 303 and r.headers["location"].startswith("/app/signin?next=")
