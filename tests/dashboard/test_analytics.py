"""The Analytics page: clicks sent through a real edge and stored by a real ingest process show in
its chart, map and tables; rows filter every panel; the URL is the state; the CSV is the view;
live clicks appear on the page and on the link's page. Screenshots with data, light and dark."""

from __future__ import annotations

import csv
import io
import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from api.services.analytics_query import GROUP_BYS
from tests.dashboard.conftest import Problems, Stack, _start, axe_violations, signed_in
from tests.services import free_port

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.2 Mobile/15E148 Safari/604.1"
)
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
ANDROID = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
# Addresses whose country the bundled DB-IP City Lite database knows.
GB, US, DE, JP, BR, FR, AU, NL = ("81.2.69.142", "8.8.8.8", "85.214.132.117", "133.242.0.3", "200.147.67.142",
                                  "62.210.16.6", "1.1.1.1", "91.198.174.192")  # fmt: skip
COUNTRY = {GB: "GB", US: "US", DE: "DE", JP: "JP", BR: "BR", FR: "FR", AU: "AU", NL: "NL"}
NEWSLETTER = "utm_source=newsletter&utm_medium=email&utm_campaign=spring"


@dataclass(frozen=True)
class Hit:
    link: int  # index in the workspace's links
    ip: str
    ua: str
    query: str = ""
    referer: str = ""


# The known clicks: (how many, hit). Link 0 "spring-sale", 1 "launch", 2 "docs".
CLICKS = [
    (6, Hit(0, GB, CHROME, NEWSLETTER)),
    (5, Hit(0, US, IPHONE, referer="https://www.google.com/search?q=h0p")),
    (4, Hit(1, DE, FIREFOX, referer="https://news.ycombinator.com/item?id=1")),
    (3, Hit(1, JP, ANDROID, "utm_source=twitter")),
    (2, Hit(2, BR, CHROME)),
    (2, Hit(0, FR, CHROME, "utm_source=newsletter")),
    (1, Hit(2, AU, IPHONE)),
    (1, Hit(1, NL, FIREFOX)),
]
BOTS = [(1, Hit(0, US, GOOGLEBOT))]
HUMANS = sum(n for n, _ in CLICKS)
SLUGS = ("spring-sale", "launch", "docs")


@dataclass
class ClickPath:
    """An edge and an ingest process of this module's own, on a topic of their own: clicks sent to the
    edge (from any address: it trusts X-Forwarded-For from loopback) are stored for the stack's API."""

    edge: str
    stack: Stack
    env: dict[str, str]

    def workspace(self, name: str) -> tuple[str, str, list[dict[str, Any]]]:
        """A user (an owner) of a new workspace with a key and three links: (email, key, links)."""
        email = self.stack.create_user(f"{name}@example.com", workspace=name)
        run = subprocess.run(
            [sys.executable, "-m", "api.cli", "keys", "create", "--workspace", name], env=self.stack.env,
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        key = run.stdout.strip()
        links = []
        with httpx.Client(base_url=self.stack.api, headers={"x-api-key": key}, timeout=30) as api:
            for slug, title in zip(SLUGS, ("Spring sale", "Launch post", "Getting started"), strict=True):
                r = api.post("/links", json={"url": f"https://example.com/{slug}", "slug": f"{name}-{slug}",
                                             "title": title})  # fmt: skip
                assert r.status_code == 201, r.text
                links.append(r.json())
        return email, key, links

    def send(self, links: list[dict[str, Any]], clicks: list[tuple[int, Hit]]) -> None:
        with httpx.Client(base_url=self.edge, timeout=30) as client:
            for n, hit in clicks:
                for _ in range(n):
                    headers = {"user-agent": hit.ua, "x-forwarded-for": hit.ip}
                    if hit.referer:
                        headers["referer"] = hit.referer
                    path = "/" + links[hit.link]["slug"] + (f"?{hit.query}" if hit.query else "")
                    r = client.get(path, headers=headers)
                    assert r.status_code == 302, (path, r.status_code)

    def wait_stored(self, key: str, clicks: int, interval: str = "24h") -> None:
        """Until /analytics counts ``clicks`` (bots included) for the key's workspace; no wall-clock claim."""
        deadline = time.monotonic() + 90
        with httpx.Client(base_url=self.stack.api, headers={"x-api-key": key}, timeout=30) as api:
            while time.monotonic() < deadline:
                r = api.get("/analytics", params={"groupBy": "count", "includeBots": "true", "interval": interval})
                if r.json().get("clicks") == clicks:
                    return
                time.sleep(0.3)
        raise AssertionError(f"{clicks} clicks were not stored: {r.json()}")


@pytest.fixture(scope="module")
def click_path(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickPath]:
    tag = secrets.token_hex(4)
    edge_port, metrics_port = free_port(), free_port()
    env = {
        **stack.env,
        "H0P_KAFKA_TOPIC": f"dash-clicks-{tag}",
        "H0P_KAFKA_DEAD_LETTER_TOPIC": f"dash-clicks-dlq-{tag}",
        "H0P_KAFKA_GROUP": f"dash-ingest-{tag}",
        "H0P_REDIRECT_PORT": str(edge_port),
        "H0P_EDGE_METRICS_PORT": "0",
        "H0P_INGEST_METRICS_PORT": str(metrics_port),
        "H0P_TRUSTED_PROXIES": "127.0.0.1/32",
        "H0P_SPOOL_DIR": str(tmp_path_factory.mktemp("analytics-spool")),
        "H0P_EVENT_LINGER_MS": "5",
        "H0P_INGEST_LINGER_MS": "50",
        "H0P_INGEST_SESSION_TIMEOUT_MS": "1500",
    }
    edge = _start("from redirect.app import serve; from h0p_settings import load_settings_or_exit as s; serve(s())",
                  env, edge_port)  # fmt: skip
    try:
        ingest = _start("from ingest.consumer import serve; from h0p_settings import load_settings_or_exit as s; "
                        "serve(s())", env, metrics_port)  # fmt: skip
    except BaseException:
        edge.terminate()
        raise
    try:
        yield ClickPath(f"http://127.0.0.1:{edge_port}", stack, env)
    finally:
        for proc in (edge, ingest):
            proc.terminate()
        for proc in (edge, ingest):
            assert proc.wait(timeout=60) in (0, -15)


@dataclass(frozen=True)
class Known:
    email: str
    key: str
    links: list[dict[str, Any]]


@pytest.fixture(scope="module")
def known(click_path: ClickPath) -> Known:
    """A workspace that received exactly CLICKS (and BOTS) through the edge, all stored."""
    email, key, links = click_path.workspace(f"analytics-{secrets.token_hex(3)}")
    click_path.send(links, CLICKS + BOTS)
    click_path.wait_stored(key, HUMANS + sum(n for n, _ in BOTS))
    return Known(email, key, links)


def _expected(by: str, where: dict[str, str] | None = None) -> Counter[str]:
    counts: Counter[str] = Counter()
    for n, hit in CLICKS:
        values = {
            "country": COUNTRY[hit.ip],
            "link": SLUGS[hit.link],
            "device": "mobile" if hit.ua in (IPHONE, ANDROID) else "desktop",
            "source": dict(p.split("=") for p in hit.query.split("&") if p).get("utm_source", ""),
        }
        if all(values[k] == v for k, v in (where or {}).items()):
            counts[values[by]] += n
    return counts


def _open(browser: Browser, stack: Stack, contexts: list[BrowserContext], email: str, path: str,
          **options: object) -> tuple[Page, Problems]:  # fmt: skip
    page = signed_in(browser, stack, contexts, email, **options)
    problems = Problems()
    problems.watch(page)
    page.goto(path)
    _ready(page)
    return page, problems


def _ready(page: Page) -> None:
    """Every panel of the current state has drawn (analytics.js marks the body when they all have)."""
    page.wait_for_function("() => document.body.dataset.analyticsReady && !document.querySelector('[aria-busy=true]')")


def _table(page: Page, group: str) -> dict[str, int]:
    """A ranked table as {label: clicks}."""
    rows = page.locator(f"table[data-group={group}] tbody tr")
    out = {}
    for i in range(rows.count()):
        cells = rows.nth(i).locator("td")
        out[cells.nth(0).inner_text().strip()] = int(cells.nth(1).inner_text().replace(",", ""))
    return out


def _tab(page: Page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()
    _ready(page)


NAMES = {"GB": "United Kingdom", "US": "United States", "DE": "Germany", "JP": "Japan", "BR": "Brazil",
         "FR": "France", "AU": "Australia", "NL": "Netherlands"}  # fmt: skip


def test_clicks_sent_through_the_edge_show_in_the_chart_map_and_every_table(
    browser: Browser, stack: Stack, contexts: list[BrowserContext], known: Known
) -> None:
    page, problems = _open(browser, stack, contexts, known.email, "/app/analytics")
    expect(page.locator("#total-clicks")).to_have_text(str(HUMANS))
    assert _table(page, "countries") == {NAMES[c]: n for c, n in _expected("country").items()}
    assert _table(page, "devices") == dict(_expected("device"))
    links = {f"{link['domain']}/{link['slug']}": n for link in known.links
             for s, n in _expected("link").items() if link["slug"].endswith(s)}  # fmt: skip
    assert _table(page, "top_links") == links
    _tab(page, "Source")
    sources = {s or "(none)": n for s, n in _expected("source").items()}
    assert _table(page, "utm_sources") == sources
    # the map: every country with clicks is shaded, the busiest darkest
    shaded = page.eval_on_selector_all(
        "#world-map path[data-country]",
        "ps => Object.fromEntries(ps.map(p => [p.dataset.country, p.getAttribute('class')]))",
    )
    assert set(shaded) == set(_expected("country"))
    assert shaded["GB"] == "land shade5" and shaded["NL"] != "land shade5"
    # the time series holds every click (its series' sum, as uPlot was given it)
    assert (
        page.locator("#timeseries-chart").get_attribute("aria-label").startswith(f"Clicks over time: {HUMANS} clicks")
    )
    # bots are left out until asked for
    page.get_by_label("Include bots").check()
    _ready(page)
    expect(page.locator("#total-clicks")).to_have_text(str(HUMANS + 1))
    assert "includeBots=true" in page.url
    assert problems.items == []


def _link_label(link: dict[str, Any]) -> str:
    return f"{link['domain']}/{link['slug']}"


def test_clicking_a_country_filters_every_panel_and_the_url_round_trips(
    browser: Browser, stack: Stack, contexts: list[BrowserContext], known: Known
) -> None:
    page, problems = _open(browser, stack, contexts, known.email, "/app/analytics")
    page.get_by_role("button", name="United Kingdom").click()
    _ready(page)
    assert "country=GB" in page.url
    expect(page.get_by_role("list", name="Filters")).to_have_text("Country: United Kingdom×")
    gb = {"country": "GB"}
    expect(page.locator("#total-clicks")).to_have_text(str(sum(_expected("country", gb).values())))
    assert _table(page, "countries") == {"United Kingdom": 6}
    assert _table(page, "devices") == dict(_expected("device", gb))
    assert _table(page, "referers") == {"(direct)": 6}
    assert _table(page, "top_links") == {_link_label(known.links[0]): 6}
    assert page.eval_on_selector_all("#world-map path[data-country]", "ps => ps.map(p => p.dataset.country)") == ["GB"]
    assert page.locator("#timeseries-chart").get_attribute("aria-label").startswith("Clicks over time: 6 clicks")

    # unique visitors (a visitor is a day, an address and a browser: one here), then another period
    page.get_by_label("Unique visitors").check()
    _ready(page)
    expect(page.locator("#total-visitors")).to_have_text("1")
    expect(page.locator("table[data-group=countries] thead")).to_contain_text("Visitors")
    page.get_by_label("Period").select_option("30d")
    _ready(page)
    assert "interval=30d" in page.url and "unique=true" in page.url and "country=GB" in page.url

    # the URL is the whole state: a reload (or a colleague opening it) shows the same view
    page.reload()
    _ready(page)
    expect(page.get_by_label("Period")).to_have_value("30d")
    expect(page.get_by_label("Unique visitors")).to_be_checked()
    expect(page.get_by_role("list", name="Filters")).to_have_text("Country: United Kingdom×")
    expect(page.locator("#total-clicks")).to_have_text("6")
    expect(page.locator("#total-visitors")).to_have_text("1")

    # back: the 24 hours with unique visitors, then clicks only, then no filter
    page.go_back()
    _ready(page)
    expect(page.get_by_label("Period")).to_have_value("24h")
    expect(page.get_by_label("Unique visitors")).to_be_checked()
    page.go_back()
    _ready(page)
    expect(page.get_by_label("Clicks", exact=True)).to_be_checked()
    expect(page.locator("#visitors-stat")).to_be_hidden()
    page.go_back()
    _ready(page)
    expect(page.locator("#total-clicks")).to_have_text(str(HUMANS))
    expect(page.get_by_role("list", name="Filters")).to_have_text("")
    page.go_forward()
    _ready(page)
    expect(page.locator("#total-clicks")).to_have_text("6")

    # two filters from two panels, then the chips take them off one by one
    page.get_by_role("button", name="desktop").click()
    _ready(page)
    page.goto(page.url.replace("country=GB", "country=US"))
    _ready(page)
    expect(page.locator("#total-clicks")).to_have_text("0")  # the US clicks all came from iPhones
    expect(page.locator("table[data-group=countries]")).to_have_count(0)
    page.get_by_role("link", name="Remove filter Device desktop").click()
    _ready(page)
    expect(page.locator("#total-clicks")).to_have_text("5")
    page.get_by_role("link", name="Remove filter Country United States").click()
    _ready(page)
    expect(page.locator("#total-clicks")).to_have_text(str(HUMANS))
    assert problems.items == []


def test_download_csv_streams_exactly_the_filtered_view(
    browser: Browser, stack: Stack, contexts: list[BrowserContext], known: Known
) -> None:
    page, problems = _open(browser, stack, contexts, known.email, "/app/analytics?country=US&interval=7d")
    expect(page.locator("#total-clicks")).to_have_text("5")

    def download() -> list[dict[str, str]]:
        with page.expect_download() as info:
            page.get_by_role("link", name="Download CSV").click()
        return list(csv.DictReader(io.StringIO(Path(info.value.path()).read_text())))

    rows = download()
    assert len(rows) == 5  # the Googlebot click from the US is not in the view
    assert {(r["country"], r["device"], r["slug"], r["bot"]) for r in rows} == {
        ("US", "mobile", known.links[0]["slug"], "false")
    }
    page.get_by_label("Include bots").check()
    _ready(page)
    expect(page.locator("#total-clicks")).to_have_text("6")
    rows = download()
    assert len(rows) == 6 and sorted(r["bot"] for r in rows) == ["false"] * 5 + ["true"]
    assert problems.items == []


def test_a_link_tag_folder_or_domain_opens_the_page_scoped_to_it(
    browser: Browser, stack: Stack, contexts: list[BrowserContext], known: Known
) -> None:
    page = signed_in(browser, stack, contexts, known.email)
    problems = Problems()
    problems.watch(page)
    page.goto(f"/app/links/{known.links[1]['id']}")
    page.get_by_role("link", name="Analytics", exact=True).last.click()
    _ready(page)
    assert f"linkId={known.links[1]['id']}" in page.url
    expect(page.get_by_role("heading", level=1)).to_contain_text(known.links[1]["shortUrl"])
    expect(page.locator("#total-clicks")).to_have_text(str(sum(_expected("link", {"link": "launch"}).values())))
    assert _table(page, "top_links") == {_link_label(known.links[1]): 8}
    page.goto(f"/app/analytics?domain={known.links[0]['domain']}")
    _ready(page)
    expect(page.locator("#total-clicks")).to_have_text(str(HUMANS))
    assert problems.items == []


def test_without_javascript_the_period_chips_and_download_still_work(
    browser: Browser, stack: Stack, contexts: list[BrowserContext], known: Known
) -> None:
    page = signed_in(browser, stack, contexts, known.email, java_script_enabled=False)
    page.goto("/app/analytics?country=GB&interval=7d&unique=true")
    expect(page.get_by_role("list", name="Filters")).to_contain_text("Country: GB")
    href = page.get_by_role("link", name="Download CSV").get_attribute("href")
    assert href is not None
    export = page.request.get(href)
    assert export.status == 200
    rows = list(csv.DictReader(io.StringIO(export.text())))
    assert len(rows) == 6 and {r["country"] for r in rows} == {"GB"}
    page.get_by_label("Period").select_option("30d")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url("**interval=30d**")
    assert "country=GB" in page.url and "unique=true" in page.url
    page.get_by_role("link", name="Remove filter Country GB").click()
    page.wait_for_url(lambda url: "country" not in url)
    expect(page.get_by_role("list", name="Filters")).to_have_text("")


@pytest.mark.parametrize("params", [{"interval": "7d"}, {"interval": "30d", "country": "GB", "unique": "true"},
                                    {"interval": "24h", "device": "mobile", "includeBots": "true",
                                     "timezone": "Asia/Kolkata"}])  # fmt: skip
def test_the_page_data_is_what_get_analytics_answers_for_every_group_by(
    browser: Browser, stack: Stack, contexts: list[BrowserContext], known: Known, params: dict[str, str]
) -> None:
    page = signed_in(browser, stack, contexts, known.email)
    with httpx.Client(base_url=stack.api, headers={"x-api-key": known.key}, timeout=30) as api:
        for group_by in GROUP_BYS:
            query = {**params, "groupBy": group_by}
            dashboard = page.request.get("/app/analytics/data", params=query)
            assert dashboard.status == 200, dashboard.text()
            answer = api.get("/analytics", params=query)
            while answer.status_code == 429:  # the key's rate limit (the session's pages have none)
                time.sleep(float(answer.headers["retry-after"]))
                answer = api.get("/analytics", params=query)
            assert dashboard.json() == answer.json(), group_by


def test_the_time_series_is_bucketed_in_the_browsers_time_zone(
    browser: Browser, stack: Stack, contexts: list[BrowserContext], known: Known
) -> None:
    page = signed_in(browser, stack, contexts, known.email, timezone_id="America/St_Johns")
    with page.expect_request(lambda r: "groupBy=timeseries" in r.url) as asked:
        page.goto("/app/analytics?interval=7d")
    _ready(page)
    assert "timezone=America%2FSt_Johns" in asked.value.url
    expect(page.locator("#timeseries-note")).to_have_text("Times in America/St_Johns.")
    # the day buckets start at midnight in Newfoundland (UTC-03:30, in summer -02:30), as the API gives them
    starts = page.request.get(asked.value.url).json()
    assert starts and all(p["start"][10:] in ("T00:00:00-03:30", "T00:00:00-02:30") for p in starts)
    assert "timezone=America%2FSt_Johns" in (page.get_by_role("link", name="Download CSV").get_attribute("href") or "")


def test_bad_parameters_get_the_api_error_shape_and_the_page_says_what_is_wrong(
    browser: Browser, stack: Stack, contexts: list[BrowserContext], known: Known
) -> None:
    page, _ = _open(browser, stack, contexts, known.email, "/app/analytics")
    r = page.request.get("/app/analytics/data?groupBy=nope")
    assert r.status == 400
    assert r.json()["error"]["code"] == "VALIDATION_ERROR" and r.json()["error"]["details"][0]["path"] == "groupBy"
    r = page.request.get("/app/analytics/live?interval=7d")
    assert r.status == 400 and r.json()["error"]["details"][0]["path"] == "interval"
    r = page.request.get("/app/analytics/export?country=toolong")
    assert r.status == 400 and r.json()["error"]["details"][0]["path"] == "country"
    page.goto("/app/analytics?interval=custom&start=2026-02-01&end=2026-01-01")
    expect(page.get_by_role("alert")).to_contain_text("start must be before end")


def test_live_clicks_appear_on_the_analytics_page_and_on_the_link_page(
    browser: Browser, stack: Stack, contexts: list[BrowserContext], click_path: ClickPath
) -> None:
    email, _, links = click_path.workspace(f"live-{secrets.token_hex(3)}")
    page, problems = _open(browser, stack, contexts, email, "/app/analytics")
    expect(page.locator("#live-status")).to_have_text("Live")
    expect(page.locator("#total-clicks")).to_have_text("0")
    click_path.send(links, [(1, Hit(0, JP, ANDROID))])
    row = page.locator("#live-clicks tbody tr").first
    expect(row).to_contain_text(_link_label(links[0]))
    expect(row).to_contain_text("Japan")
    expect(page.locator("#live-count")).to_have_text("1")
    expect(page.locator("#total-clicks")).to_have_text("1")  # the panels follow the stored clicks

    detail = page.context.new_page()
    problems.watch(detail)
    detail.goto(f"/app/links/{links[1]['id']}")
    expect(detail.locator("#live-status")).to_have_text("Live")
    click_path.send(links, [(1, Hit(2, BR, CHROME)), (1, Hit(1, DE, FIREFOX))])  # another link's, then its own
    expect(detail.locator("#live-clicks tbody tr").first).to_contain_text(_link_label(links[1]))
    expect(detail.locator("#live-clicks tbody tr")).to_have_count(1)
    expect(detail.locator("#link-clicks")).to_have_text("1")
    expect(page.locator("#live-count")).to_have_text("3")  # the workspace's page saw all three
    assert problems.items == []


def _shots(tmp_path: Path) -> Path:
    # `make screenshots` points this at docs/screenshots; otherwise they go to the test's tmp dir.
    target = Path(os.environ.get("H0P_SCREENSHOTS_DIR") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    return target


@pytest.fixture(scope="module")
def month(click_path: ClickPath) -> tuple[Known, int]:
    """A workspace with a month of clicks (tests/dashboard/past_clicks.py), all stored: (it, how many)."""
    email, key, links = click_path.workspace(f"acme-{secrets.token_hex(3)}")
    run = subprocess.run(
        [sys.executable, "-m", "tests.dashboard.past_clicks", *(link["id"] for link in links)],
        env=click_path.env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    sent = int(run.stdout.strip())
    click_path.wait_stored(key, sent, interval="30d")
    return Known(email, key, links), sent


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_a_month_of_clicks_passes_axe_in_light_and_dark_and_fits_a_phone(
    browser: Browser, stack: Stack, contexts: list[BrowserContext], month: tuple[Known, int], tmp_path: Path,
    scheme: str,
) -> None:  # fmt: skip
    known, sent = month
    page, problems = _open(browser, stack, contexts, known.email, "/app/analytics?interval=30d",
                           color_scheme=scheme, viewport={"width": 1280, "height": 900})  # fmt: skip
    expect(page.locator("#total-clicks")).to_have_text(f"{sent:,}")
    assert axe_violations(page) == []
    suffix = "" if scheme == "light" else "-dark"
    page.screenshot(path=str(_shots(tmp_path) / f"analytics{suffix}.png"), full_page=True)
    page.get_by_role("button", name="United Kingdom").click()
    _ready(page)
    assert axe_violations(page) == []
    assert problems.items == []
    if scheme == "light":
        phone, _ = _open(browser, stack, contexts, known.email, "/app/analytics?interval=30d",
                         viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True)  # fmt: skip
        overflow = phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the Analytics page scrolls sideways by {overflow}px on a phone"
