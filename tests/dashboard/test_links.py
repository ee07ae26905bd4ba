"""The Links pages in a real browser: create from the form and follow it on the edge, edit, delete, bulk."""

from __future__ import annotations

import secrets
from urllib.parse import parse_qs, urlsplit

import httpx
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.dashboard.conftest import Stack, signed_in

IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"


def _slug(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def _create(page: Page, url: str, slug: str) -> None:
    page.goto("/app/links/new")
    page.get_by_label("Destination URL").fill(url)
    page.get_by_label("Short link").fill(slug)
    page.get_by_role("button", name="Create link").click()
    expect(page.get_by_role("status")).to_have_text("Link created.")


def test_a_link_made_with_rules_utm_and_a_password_works_on_the_edge(
    browser: Browser, stack: Stack, contexts: list[BrowserContext]
) -> None:
    page = signed_in(browser, stack, contexts, stack.owner)
    slug = _slug("spring")
    page.get_by_role("link", name="Create link").click()
    page.get_by_label("Destination URL").fill("https://shop.example.com/spring")
    page.get_by_label("Short link").fill(slug)
    expect(page.locator("#slug-status")).to_have_text(f"{slug} is available")
    page.get_by_text("UTM parameters").click()
    page.get_by_label("utm_source").fill("newsletter")
    page.get_by_label("utm_campaign").fill("spring sale")
    expect(page.locator("#utm-final")).to_have_text(
        "https://shop.example.com/spring?utm_source=newsletter&utm_campaign=spring%20sale"
    )
    page.get_by_text("Routing rules").click()
    page.get_by_role("button", name="Add rule").click()
    page.get_by_label("Conditions").fill("os: iOS")
    page.get_by_label("Send to URL").fill("https://apps.example.com/ios")
    page.get_by_text("Password and expiry").click()
    page.get_by_label("Password", exact=True).fill("open sesame")
    page.get_by_role("button", name="Create link").click()
    expect(page.get_by_role("status")).to_have_text("Link created.")
    short_url = f"http://localhost:{stack.edge_port}/{slug}"
    expect(page.get_by_role("heading", name=short_url)).to_be_visible()
    expect(page.get_by_text("1 routing rule(s)")).to_be_visible()

    # A visitor on an iPhone, at the edge: the password page, then the rule's URL with the UTM parameters.
    edge = f"http://127.0.0.1:{stack.edge_port}/{slug}"
    with httpx.Client(headers={"user-agent": IPHONE}) as visitor:
        locked = visitor.get(edge)
        assert locked.status_code != 302 and "This link is protected" in locked.text
        unlocked = visitor.post(edge, data={"password": "open sesame"})
        assert unlocked.status_code == 303
        landed = visitor.get(edge)
    assert landed.status_code == 302
    target = landed.headers["location"]
    query = parse_qs(urlsplit(target).query)
    assert target.startswith("https://apps.example.com/ios")
    assert query["utm_source"] == ["newsletter"] and query["utm_campaign"] == ["spring sale"]

    # Editing only the title keeps the rule, the UTM values and the password.
    page.get_by_role("link", name="Edit").click()
    expect(page.get_by_label("Conditions")).to_have_value("os: iOS")
    page.get_by_label("Title", exact=True).fill("Spring, edited")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_have_text("Changes saved.")
    expect(page.get_by_text("1 routing rule(s)")).to_be_visible()
    expect(page.get_by_text("Password protected")).to_be_visible()
    with httpx.Client(headers={"user-agent": IPHONE}) as visitor:
        assert "This link is protected" in visitor.get(edge).text
        visitor.post(edge, data={"password": "open sesame"})
        assert visitor.get(edge).headers["location"] == target


def test_a_taken_slug_is_said_as_you_type_and_the_api_error_shows_beside_the_field(
    browser: Browser, stack: Stack, contexts: list[BrowserContext]
) -> None:
    page = signed_in(browser, stack, contexts, stack.owner)
    slug = _slug("taken")
    _create(page, "https://example.com/one", slug)
    page.goto("/app/links/new")
    page.get_by_label("Destination URL").fill("https://example.com/two")
    page.get_by_label("Short link").fill(slug)
    expect(page.locator("#slug-status")).to_have_text(f"{slug} is already taken on this domain")
    page.get_by_role("button", name="Create link").click()
    expect(page.locator("#slug-status")).to_contain_text("already")
    # a destination the API refuses: its message, beside the Destination URL field
    page.get_by_label("Short link").fill(_slug("other"))
    page.get_by_label("Destination URL").fill("http://127.0.0.1/admin")
    page.get_by_role("button", name="Create link").click()
    error = page.locator("#url-error")
    expect(error).to_be_visible()
    assert page.get_by_label("Destination URL").get_attribute("aria-invalid") == "true"


def test_split_weights_must_total_100(browser: Browser, stack: Stack, contexts: list[BrowserContext]) -> None:
    page = signed_in(browser, stack, contexts, stack.owner)
    page.goto("/app/links/new")
    page.get_by_label("Destination URL").fill("https://example.com/a")
    page.get_by_text("A/B split").click()
    page.get_by_label("Variant 1 URL").fill("https://example.com/a")
    page.get_by_label("Weight").first.fill("50")
    page.get_by_label("Variant 2 URL").fill("https://example.com/b")
    page.get_by_label("Weight").nth(1).fill("40")
    expect(page.locator("#split-total")).to_contain_text("must total 100")
    page.get_by_role("button", name="Create link").click()
    expect(page.locator("#split-error")).to_have_text("the weights total 90; they must total 100")


def test_edit_then_delete_a_link(browser: Browser, stack: Stack, contexts: list[BrowserContext]) -> None:
    page = signed_in(browser, stack, contexts, stack.owner)
    slug = _slug("edit")
    _create(page, "https://example.com/before", slug)
    page.get_by_role("link", name="Edit").click()
    expect(page.get_by_label("Destination URL")).to_have_value("https://example.com/before")
    page.get_by_label("Destination URL").fill("https://example.com/after")
    page.get_by_label("Title", exact=True).fill("After the edit")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_have_text("Changes saved.")
    expect(page.get_by_text("https://example.com/after")).to_be_visible()
    r = httpx.get(f"http://127.0.0.1:{stack.edge_port}/{slug}")
    assert r.status_code == 302 and r.headers["location"] == "https://example.com/after"
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Delete").click()
    page.wait_for_url("**/app/links?done=*")
    assert httpx.get(f"http://127.0.0.1:{stack.edge_port}/{slug}").status_code == 404


def test_dismissing_the_confirmation_deletes_nothing(
    browser: Browser, stack: Stack, contexts: list[BrowserContext]
) -> None:
    page = signed_in(browser, stack, contexts, stack.owner)
    slug = _slug("kept")
    _create(page, "https://example.com/kept", slug)
    page.once("dialog", lambda d: d.dismiss())
    page.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("button", name="Delete")).to_be_visible()
    assert httpx.get(f"http://127.0.0.1:{stack.edge_port}/{slug}").status_code == 302


def test_bulk_archive_move_tag_and_delete(browser: Browser, stack: Stack, contexts: list[BrowserContext]) -> None:
    page = signed_in(browser, stack, contexts, stack.owner)
    marker = secrets.token_hex(3)
    folder, tag = f"bulk-folder-{marker}", f"bulk-tag-{marker}"
    page.goto("/app/folders")
    page.get_by_label("New folder name").fill(folder)
    page.get_by_role("button", name="Create folder").click()
    page.goto("/app/tags")
    page.get_by_label("New tag name").fill(tag)
    page.get_by_role("button", name="Create tag").click()
    slugs = [f"bulk-{marker}-{i}" for i in range(3)]
    for s in slugs:
        _create(page, f"https://example.com/{s}", s)

    page.goto("/app/links")
    page.get_by_label("Search").fill(f"bulk-{marker}")
    expect(page.locator("tbody tr")).to_have_count(3)  # filtered by htmx, without a reload
    page.get_by_label(f"Select http://localhost:{stack.edge_port}/{slugs[0]}", exact=True).check()
    page.get_by_label(f"Select http://localhost:{stack.edge_port}/{slugs[1]}", exact=True).check()
    page.get_by_label("Folder to move to").select_option(label=folder)
    page.get_by_role("button", name="Move to folder").click()
    page.get_by_label("Select all links on this page").check()
    page.get_by_label("Tag to add").select_option(label=tag)
    page.get_by_role("button", name="Add tag").click()
    page.goto("/app/folders")
    expect(page.get_by_role("row", name=folder)).to_contain_text("2")
    page.goto("/app/tags")
    expect(page.get_by_role("row", name=tag)).to_contain_text("3")

    page.goto(f"/app/links?search=bulk-{marker}")
    page.get_by_label(f"Select http://localhost:{stack.edge_port}/{slugs[2]}", exact=True).check()
    page.get_by_role("button", name="Archive", exact=True).click()
    expect(page.get_by_role("status")).to_have_text("1 link archived.")
    expect(page.locator("tbody tr")).to_have_count(2)  # archived links leave the default (active) view
    page.get_by_label("Archived").select_option(label="Archived")
    expect(page.locator("tbody tr")).to_have_count(1)

    page.goto(f"/app/links?search=bulk-{marker}&archived=all")
    page.get_by_label("Select all links on this page").check()
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Delete", exact=True).click()
    expect(page.get_by_text("No link matches these filters.")).to_be_visible()
    for s in slugs:
        assert httpx.get(f"http://127.0.0.1:{stack.edge_port}/{s}").status_code == 404
