"""Browser tests of the dashboard: a real API process, a real edge, Debian's chromium via Playwright.

One browser for the package (torn down before the suite moves on to async tests); each test
gets fresh browser contexts (cookie jars). The API and the edge run as processes (what
production runs), on the session's database, Redis and broker; users are made with the real
``h0p users create`` command.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    Request,
    Response,
    sync_playwright,
)

from h0p_settings import Settings
from tests.api.dns_server import LoopbackDns
from tests.services import free_port, wait_for_port

CHROMIUM = os.environ.get("H0P_TEST_CHROMIUM", "/usr/bin/chromium")
AXE = Path(__file__).parent / "vendor" / "axe.min.js"
PASSWORD = "correct horse battery"
ACCOUNT_ATTEMPTS = 3


@dataclass
class Stack:
    api: str
    edge_port: int
    env: dict[str, str]
    workspace: str
    owner: str
    member: str
    users: set[str] = field(default_factory=set)

    def create_user(self, email: str, workspace: str | None = None, role: str = "owner") -> str:
        """A user made with the real CLI (password from H0P_USER_PASSWORD); returns the email."""
        run = subprocess.run(
            [sys.executable, "-m", "api.cli", "users", "create", email, "--workspace", workspace or self.workspace,
             "--role", role, "--create-workspace"],
            env={**self.env, "H0P_USER_PASSWORD": PASSWORD}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert PASSWORD not in run.stdout + run.stderr
        return email


def _start(code: str, env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        wait_for_port(port, timeout=30)
    except TimeoutError:
        proc.kill()
        raise
    return proc


@pytest.fixture(scope="package")
def dashboard_dns() -> Iterator[LoopbackDns]:
    dns = LoopbackDns().start()
    yield dns
    dns.stop()


@pytest.fixture(scope="package")
def stack(settings: Settings, dashboard_dns: LoopbackDns) -> Iterator[Stack]:
    """The API and the edge as processes; a workspace with an owner and a member."""
    api_port, edge_port = free_port(), free_port()
    env = {
        **os.environ,
        "H0P_DATABASE_URL": settings.database_url,
        "H0P_REDIS_URL": settings.redis_url,
        "H0P_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "H0P_KAFKA_TOPIC": settings.kafka_topic,
        "H0P_API_PORT": str(api_port),
        "H0P_REDIRECT_PORT": str(edge_port),
        "H0P_BIND_HOST": "127.0.0.1",
        "H0P_DNS_RESOLVER": dashboard_dns.address,
        "H0P_FILES_DIR": settings.files_dir,
        "H0P_SPOOL_DIR": settings.spool_dir,
        "H0P_SECRET_KEY": settings.secret_key,
        "H0P_LOG_LEVEL": "warning",
        "H0P_SIGNIN_ATTEMPTS_PER_ACCOUNT": str(ACCOUNT_ATTEMPTS),
        "H0P_SIGNIN_ATTEMPTS_PER_CLIENT": "1000",
    }
    env.pop("H0P_USER_PASSWORD", None)
    api = _start("from api.app import serve; from h0p_settings import load_settings_or_exit as s; serve(s())", env,
                 api_port)  # fmt: skip
    edge = _start("from redirect.app import serve; from h0p_settings import load_settings_or_exit as s; serve(s())",
                  env, edge_port)  # fmt: skip
    try:
        suffix = secrets.token_hex(3)
        s = Stack(f"http://127.0.0.1:{api_port}", edge_port, env, f"dash-{suffix}", "", "")
        s.owner = s.create_user(f"owner-{suffix}@example.com")
        s.member = s.create_user(f"member-{suffix}@example.com", role="member")
        yield s
    finally:
        for proc in (edge, api):
            proc.terminate()
        for proc in (edge, api):
            assert proc.wait(timeout=20) in (0, -15)


@pytest.fixture(scope="package")
def playwright(stack: Stack) -> Iterator[Playwright]:
    # After the stack: sync Playwright runs an event loop in this thread, and the session's
    # settings fixture needs asyncio.run (set up before it, torn down after it).
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get install chromium)")
    b = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    yield b
    b.close()


class Problems:
    """Console errors, page errors and failed requests seen by a page (each test asserts on them)."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def watch(self, page: Page) -> Page:
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.items.append(f"page error: {exc}"))
        page.on("requestfailed", self._failed)
        page.on("response", self._response)
        return page

    def _failed(self, request: Request) -> None:
        # a live stream (EventSource) is cut by design when its page leaves or changes its filters
        if request.resource_type == "eventsource" and request.failure == "net::ERR_ABORTED":
            return
        self.items.append(f"failed: {request.method} {request.url} {request.failure}")

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.items.append(f"console {message.type}: {message.text}")

    def _response(self, response: Response) -> None:
        if response.status >= 400:
            self.items.append(f"HTTP {response.status}: {response.request.method} {response.url}")


@pytest.fixture
def contexts(browser: Browser, stack: Stack) -> Iterator[list[BrowserContext]]:
    made: list[BrowserContext] = []
    yield made
    for c in made:
        c.close()


def new_page(browser: Browser, stack: Stack, contexts: list[BrowserContext], **options: object) -> Page:
    context = browser.new_context(base_url=stack.api, **options)  # type: ignore[arg-type]
    contexts.append(context)
    page = context.new_page()
    page.set_default_timeout(15_000)
    return page


def sign_in(page: Page, email: str, password: str = PASSWORD) -> None:
    page.goto("/app/signin")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def signed_in(browser: Browser, stack: Stack, contexts: list[BrowserContext], email: str, **options: object) -> Page:
    page = new_page(browser, stack, contexts, **options)
    sign_in(page, email)
    page.wait_for_url("**/app/links")
    return page


def axe_violations(page: Page) -> list[dict[str, object]]:
    """Serious and critical axe-core violations of the page (axe is vendored, injected as a file)."""
    # evaluated through the DevTools protocol, so the page's CSP (no inline script) does not block it
    page.evaluate(AXE.read_text())
    result = page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["html"][:200] for n in v["nodes"][:3]]}
        for v in result
        if v["impact"] in ("serious", "critical")
    ]
