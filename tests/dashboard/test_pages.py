"""API Keys, Domains, Folders, Tags, link detail (QR), Settings and roles, in a real browser."""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx
from playwright.sync_api import Browser, BrowserContext, expect

from tests.api.dns_server import LoopbackDns
from tests.api.qr_decode import decode, decode_level, sample_logo
from tests.dashboard.conftest import PASSWORD, Stack, new_page, sign_in, signed_in


def test_a_key_is_shown_once_and_works_against_the_api_until_revoked(
    browser: Browser, stack: Stack, contexts: list[BrowserContext]
) -> None:
    page = signed_in(browser, stack, contexts, stack.owner)
    page.get_by_role("link", name="API Keys").click()
    name = f"cms-{secrets.token_hex(3)}"
    page.get_by_label("Key name").fill(name)
    for resource in ("keys", "workspace", "files", "webhooks", "analytics", "domains", "folders", "tags"):
        page.get_by_label(f"{resource}:read").uncheck()
        page.get_by_label(f"{resource}:write").uncheck()
    page.get_by_label("links:write").uncheck()
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#new-key").inner_text()
    expect(page.get_by_text("It is shown only once")).to_be_visible()
    assert secret.startswith("h0p_")
    r = httpx.get(f"{stack.api}/links", headers={"x-api-key": secret})
    assert r.status_code == 200
    r = httpx.post(f"{stack.api}/links", headers={"x-api-key": secret}, json={"url": "https://example.com"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "ACTION_NOT_ALLOWED"  # links:read only
    page.reload()
    assert secret not in page.content()  # never shown again
    expect(page.get_by_role("row", name=name)).to_have_count(1)  # the reload made no second key
    row = page.get_by_role("row", name=name)
    expect(row).to_contain_text(secret[-4:])
    page.goto("/app/keys")
    expect(page.get_by_role("row", name=name)).not_to_contain_text("Never")  # last used just now
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name=f"Revoke {name}").click()
    expect(page.get_by_role("row", name=name)).to_have_count(0)
    assert httpx.get(f"{stack.api}/links", headers={"x-api-key": secret}).status_code == 401


def test_a_domain_is_verified_against_its_txt_record(
    browser: Browser, stack: Stack, contexts: list[BrowserContext], dashboard_dns: LoopbackDns
) -> None:
    page = signed_in(browser, stack, contexts, stack.owner)
    page.get_by_role("link", name="Domains").click()
    host = f"go-{secrets.token_hex(3)}.example.com"
    page.get_by_label("Domain name").fill(host)
    page.get_by_role("button", name="Add domain").click()
    section = page.get_by_role("region", name=host)
    expect(section).to_contain_text("Pending verification")
    records = section.get_by_role("table", name=f"DNS records of {host}")
    expect(records).to_contain_text("CNAME")
    txt = records.get_by_role("row").filter(has_text="TXT")
    name = txt.get_by_role("cell").nth(1).inner_text().removesuffix("Copy").strip()
    value = txt.get_by_role("cell").nth(2).inner_text().removesuffix("Copy").strip()
    page.get_by_role("button", name=f"Verify {host}").click()
    expect(page.get_by_role("status")).to_contain_text(f"{host} is not verified yet")
    dashboard_dns.zone.records[name] = [value]
    page.get_by_role("button", name=f"Verify {host}").click()
    expect(page.get_by_role("status")).to_have_text(f"{host} is verified: its links are live.")
    expect(page.get_by_role("region", name=host)).to_contain_text("Verified")
    page.get_by_label("Unknown slugs go to").fill("https://example.com/lost")
    page.get_by_role("button", name=f"Save redirects of {host}").click()
    expect(page.get_by_label("Unknown slugs go to")).to_have_value("https://example.com/lost")
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name=f"Delete {host}").click()
    expect(page.get_by_role("region", name=host)).to_have_count(0)


def test_folders_and_tags_are_created_renamed_counted_and_deleted(
    browser: Browser, stack: Stack, contexts: list[BrowserContext]
) -> None:
    page = signed_in(browser, stack, contexts, stack.owner)
    marker = secrets.token_hex(3)
    page.goto("/app/tags")
    page.get_by_label("New tag name").fill(f"t-{marker}")
    page.get_by_label("Colour", exact=True).select_option("green")
    page.get_by_role("button", name="Create tag").click()
    expect(page.get_by_role("link", name=f"t-{marker}")).to_be_visible()
    page.evaluate("window.h0pNoReload = true")  # gone if the page reloads
    page.get_by_label(f"New name of t-{marker}").fill(f"t2-{marker}")
    page.get_by_label(f"Colour of t-{marker}").select_option("red")
    page.get_by_role("row", name=f"t-{marker}").get_by_role("button", name="Save").click()
    expect(page.get_by_role("row", name=f"t2-{marker}").locator(".tag.red")).to_be_visible()
    assert page.evaluate("window.h0pNoReload === true")  # the row was edited in place (htmx)
    page.get_by_label(f"New name of t2-{marker}").fill("")
    page.get_by_label(f"New name of t2-{marker}").evaluate("el => el.removeAttribute('required')")
    page.get_by_role("row", name=f"t2-{marker}").get_by_role("button", name="Save").click()
    expect(page.get_by_role("row", name=f"t2-{marker}").get_by_role("alert")).to_be_visible()  # the API's error
    page.reload()
    expect(page.get_by_role("link", name=f"t2-{marker}")).to_be_visible()  # nothing changed
    page.goto("/app/folders")
    page.get_by_label("New folder name").fill(f"f-{marker}")
    page.get_by_role("button", name="Create folder").click()
    page.get_by_label(f"New name of f-{marker}").fill(f"f2-{marker}")
    page.get_by_role("row", name=f"f-{marker}").get_by_role("button", name="Rename").click()
    expect(page.get_by_role("link", name=f"f2-{marker}")).to_be_visible()
    # a duplicate name: the API's error beside the field, nothing created
    page.get_by_label("New folder name").fill(f"f2-{marker}")
    page.get_by_role("button", name="Create folder").click()
    expect(page.locator("#new-folder-error")).to_be_visible()
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name=f"Delete folder f2-{marker}").click()
    expect(page.get_by_role("link", name=f"f2-{marker}")).to_have_count(0)


def test_the_link_page_shows_a_qr_code_that_decodes_to_the_link_and_downloads_png_and_svg(
    browser: Browser, stack: Stack, contexts: list[BrowserContext]
) -> None:
    page = signed_in(browser, stack, contexts, stack.owner)
    slug = f"qr-{secrets.token_hex(3)}"
    page.goto("/app/links/new")
    page.get_by_label("Destination URL").fill("https://example.com/qr")
    page.get_by_label("Short link").fill(slug)
    page.get_by_role("button", name="Create link").click()
    short_url = f"http://localhost:{stack.edge_port}/{slug}"
    expect(page.get_by_role("img", name=f"QR code of {short_url}")).to_be_visible()
    page.get_by_label("Foreground").fill("#1144aa")
    page.get_by_label("Size (px)").fill("400")
    page.get_by_role("button", name="Update QR code").click()
    with page.expect_download() as png:
        page.get_by_role("link", name="Download PNG").click()
    data = Path(png.value.path()).read_bytes()
    assert data.startswith(b"\x89PNG")
    assert decode(data, "image/png")[0].startswith(short_url)
    with page.expect_download() as svg:
        page.get_by_role("link", name="Download SVG").click()
    text = Path(svg.value.path()).read_text()
    assert "<svg" in text and "#14a" in text.lower()  # segno writes #1144aa as #14a
    # a logo, uploaded from the designer: the code keeps decoding to the link, now at level H
    page.get_by_label("Logo image").set_input_files(
        files=[{"name": "logo.png", "mimeType": "image/png", "buffer": sample_logo()}]
    )
    page.get_by_role("button", name="Upload logo").click()
    page.wait_for_url("**logo=file_*")
    with page.expect_download() as with_logo:
        page.get_by_role("link", name="Download PNG").click()
    data = Path(with_logo.value.path()).read_bytes()
    assert decode(data, "image/png")[0].startswith(short_url) and decode_level(data, "image/png") == "H"


def test_a_member_manages_links_but_not_keys_or_members(
    browser: Browser, stack: Stack, contexts: list[BrowserContext]
) -> None:
    page = signed_in(browser, stack, contexts, stack.member)
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="API Keys")).to_have_count(0)
    expect(nav.get_by_role("link", name="Webhooks")).to_have_count(0)
    expect(nav.get_by_role("link", name="Links")).to_be_visible()
    page.goto("/app/keys")
    expect(page.get_by_role("heading", name="Owners only")).to_be_visible()
    page.goto("/app/settings")
    expect(page.get_by_text("Members and invitations are managed by the workspace's owners.")).to_be_visible()
    token = page.locator("input[name=csrf]").first.get_attribute("value")
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    with httpx.Client(base_url=stack.api, cookies=cookies) as client:
        r = client.post("/app/keys", data={"csrf": token, "name": "sneaky", "scopes": "links:read"})
        assert r.status_code == 403
        r = client.post("/app/settings/invitations", data={"csrf": token, "email": "x@example.com", "role": "owner"})
        assert r.status_code == 403
    page.goto("/app/links/new")
    page.get_by_label("Destination URL").fill("https://example.com/member")
    page.get_by_role("button", name="Create link").click()
    expect(page.get_by_role("status")).to_have_text("Link created.")


def test_an_invitation_link_works_once_and_the_invitee_switches_workspaces(
    browser: Browser, stack: Stack, contexts: list[BrowserContext]
) -> None:
    marker = secrets.token_hex(3)
    other_owner = stack.create_user(f"other-{marker}@example.com", workspace=f"other-{marker}")
    owner = signed_in(browser, stack, contexts, other_owner)
    owner.get_by_role("link", name="Settings").click()
    invitee = stack.create_user(f"invitee-{marker}@example.com")  # already in the stack's workspace
    owner.get_by_label("Email to invite").fill(invitee)
    owner.get_by_label("Role").select_option("member")
    owner.get_by_role("button", name="Create invitation link").click()
    link = owner.locator("#invite-link").inner_text()
    expect(owner.get_by_role("table", name="Pending invitations")).to_contain_text(invitee)

    guest = new_page(browser, stack, contexts)
    guest.goto(link)
    expect(guest.get_by_role("heading", name=f"Join other-{marker}")).to_be_visible()
    guest.get_by_label("Your password").fill(PASSWORD)
    guest.get_by_role("button", name="Accept invitation").click()
    guest.wait_for_url("**/app/links")
    expect(guest.get_by_text(f"other-{marker} (member)")).to_be_visible()
    guest.get_by_label("Workspace").select_option(label=stack.workspace)
    guest.get_by_role("button", name="Switch").click()
    expect(guest.get_by_text(f"{stack.workspace} (owner)")).to_be_visible()

    again = new_page(browser, stack, contexts)
    again.goto(link)
    expect(again.get_by_role("heading", name="Invitation not valid")).to_be_visible()
    owner.reload()
    expect(owner.get_by_role("table", name="Members")).to_contain_text(invitee)


def test_a_new_user_sets_a_password_on_the_invitation_page(
    browser: Browser, stack: Stack, contexts: list[BrowserContext]
) -> None:
    owner = signed_in(browser, stack, contexts, stack.owner)
    owner.goto("/app/settings")
    email = f"new-{secrets.token_hex(3)}@example.com"
    owner.get_by_label("Email to invite").fill(email)
    owner.get_by_role("button", name="Create invitation link").click()
    link = owner.locator("#invite-link").inner_text()
    guest = new_page(browser, stack, contexts)
    guest.goto(link)
    guest.get_by_label("Choose a password").fill("short")
    guest.get_by_role("button", name="Accept invitation").click()
    guest.get_by_label("Choose a password").fill("a long enough password")
    guest.get_by_role("button", name="Accept invitation").click()
    guest.wait_for_url("**/app/links")
    fresh = new_page(browser, stack, contexts)
    sign_in(fresh, email, "a long enough password")
    fresh.wait_for_url("**/app/links")


def test_a_webhook_is_added_with_its_events_its_secret_shown_once_and_its_deliveries_listed(
    browser: Browser, stack: Stack, contexts: list[BrowserContext]
) -> None:
    page = signed_in(browser, stack, contexts, stack.owner)
    page.get_by_role("link", name="Webhooks").click()
    name = f"crm-{secrets.token_hex(3)}"
    page.get_by_label("Endpoint URL").fill(f"https://{name}.example.com/h0p")
    page.get_by_label("Name").fill(name)
    page.get_by_label("link.deleted").uncheck()
    page.get_by_label("link.clicked").check()
    page.get_by_role("button", name="Add endpoint").click()
    secret = page.locator("#webhook-secret").inner_text()
    assert secret.startswith("whsec_")
    expect(page.get_by_text("Events: domain.verified, link.clicked, link.created, link.updated")).to_be_visible()
    page.reload()
    assert secret not in page.content()
    page.get_by_role("button", name="Send test event").click()
    expect(page.get_by_role("table", name="Deliveries, newest first")).to_contain_text("ping")
    page.goto("/app/webhooks")
    expect(page.get_by_role("row", name=name)).to_contain_text("link.clicked")
    # a private address is refused with the API's message beside the field, nothing added
    page.get_by_label("Endpoint URL").fill("http://127.0.0.1:9/hook")
    page.get_by_role("button", name="Add endpoint").click()
    expect(page.locator("#wh-url-error")).to_be_visible()
    page.goto("/app/webhooks")
    page.get_by_role("link", name=name).click()
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Delete").click()
    page.wait_for_url("**/app/webhooks")
    expect(page.get_by_role("link", name=name)).to_have_count(0)
