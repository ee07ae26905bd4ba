"""User agent string to device type, brand/model, browser and OS (ua-parser with ua-parser-rs)."""

from __future__ import annotations

import re
from typing import NamedTuple

from ua_parser import Domain, Parser, load_lazy_builtins

from ingest.enrich.bots import is_bot_agent

try:  # the Rust resolver (ua-parser-rs): ~10x faster than the pure-Python regex loop
    from ua_parser.regex import Resolver as _FastResolver
except ImportError:  # pragma: no cover - the dependency is pinned; keep working without it
    from ua_parser.basic import Resolver as _FastResolver  # type: ignore[assignment]


class Agent(NamedTuple):
    device: str  # desktop, mobile, tablet, tv, console, bot, other
    device_brand: str
    device_model: str
    browser: str
    browser_version: str
    os: str
    os_version: str
    bot: bool  # from the user agent alone (HEAD requests are flagged per event)


_TABLET = re.compile(r"ipad|tablet|kindle|silk/|playbook|nexus (7|9|10)|sm-t\d|sm-x\d|lenovo tab|mediapad|xoom", re.I)
_MOBILE = re.compile(r"mobile|iphone|ipod|android.*mobile|windows phone|blackberry|opera mini|iemobile", re.I)
_TV = re.compile(
    r"smart-?tv|hbbtv|appletv|apple tv|crkey|googletv|android tv|bravia|roku|web0s|netcast|tizen.*tv", re.I
)
_CONSOLE = re.compile(r"playstation|xbox|nintendo", re.I)
_DESKTOP_OS = frozenset(
    {"Windows", "Mac OS X", "Linux", "Ubuntu", "Chrome OS", "ChromeOS", "Fedora", "FreeBSD", "Debian", "OpenBSD"}
)


def _version(*parts: str | None) -> str:
    out = []
    for part in parts:
        if part is None:
            break
        out.append(part)
    return ".".join(out)


def device_type(ua: str, os_family: str, device_family: str, bot: bool) -> str:
    """Classify the device; ua-parser gives family/brand/model but not the form factor."""
    if bot or device_family == "Spider":
        return "bot"
    if _CONSOLE.search(ua):
        return "console"
    if _TV.search(ua):
        return "tv"
    if _TABLET.search(ua) or device_family == "iPad":
        return "tablet"
    if os_family == "Android" and "mobile" not in ua.lower():
        # Android tablets drop the "Mobile" token (Google's guidance to browser makers)
        return "tablet"
    if _MOBILE.search(ua) or os_family in ("iOS", "Android", "Windows Phone", "BlackBerry OS", "KaiOS"):
        return "mobile"
    if os_family in _DESKTOP_OS:
        return "desktop"
    return "other"


class AgentParser:
    """Parses user agents once each: a bounded cache keyed by the full string (they repeat a lot)."""

    def __init__(self, cache_size: int = 50_000) -> None:
        self._parser = Parser(_FastResolver(load_lazy_builtins()))
        self._cache: dict[str, Agent] = {}
        self._cache_size = cache_size

    def parse(self, ua: str) -> Agent:
        """The Agent for ``ua`` (cached)."""
        agent = self._cache.get(ua)
        if agent is None:
            agent = self._parse(ua)
            if len(self._cache) >= self._cache_size:
                del self._cache[next(iter(self._cache))]
            self._cache[ua] = agent
        return agent

    def _parse(self, ua: str) -> Agent:
        result = self._parser(ua, Domain.ALL).complete()
        browser = result.user_agent
        os_ = result.os
        dev = result.device
        bot = is_bot_agent(ua) or (dev is not None and dev.family == "Spider")
        os_family = os_.family if os_ is not None and os_.family != "Other" else ""
        dev_family = dev.family if dev is not None else ""
        brand = (
            dev.brand
            if dev is not None
            and dev.brand not in (None, "Spider", "Generic", "Generic_Android", "Generic_Android_Tablet")
            else ""
        )
        model = dev.model if dev is not None and dev.family != "Spider" and dev.model else ""
        return Agent(
            device=device_type(ua, os_family, dev_family, bot),
            device_brand=brand or "",
            device_model=model or "",
            browser=browser.family if browser is not None and browser.family != "Other" else "",
            browser_version=_version(browser.major, browser.minor) if browser is not None else "",
            os=os_family,
            os_version=_version(os_.major, os_.minor, os_.patch) if os_ is not None and os_family else "",
            bot=bot,
        )
