"""The Analytics page: clicks sent through a real edge and stored by a real ingest process show in
its chart, map and tables; rows filter every panel; the URL is the state; the CSV is the view;
live clicks appear on the page and on the link's page. Screenshots with data, light and dark."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.dashboard.conftest import Problems, Stack, _start, signed_in
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

    def wait_stored(self, key: str, clicks: int) -> None:
        """Until /analytics counts ``clicks`` (bots included) for the key's workspace; no wall-clock claim."""
        deadline = time.monotonic() + 90
        with httpx.Client(base_url=self.stack.api, headers={"x-api-key": key}, timeout=30) as api:
            while time.monotonic() < deadline:
                r = api.get("/analytics", params={"groupBy": "count", "includeBots": "true", "interval": "24h"})
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
        yield ClickPath(f"http://127.0.0.1:{edge_port}", stack)
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
    sources = {s or "(unknown)": n for s, n in _expected("source").items()}
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
