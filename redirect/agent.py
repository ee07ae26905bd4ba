"""What a User-Agent says: device type, OS and browser for routing rules; preview fetchers."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple

import ua_parser

from redirect.events import PREVIEW_FETCHERS

# One spelling for a rule's value (normalised when the record is built) and the visitor's fact
from redirect.record import normalise_browser, normalise_os

__all__ = ["Agent", "is_preview_fetcher", "normalise_browser", "normalise_os", "parse_agent"]


class Agent(NamedTuple):
    device: str  # desktop | mobile | tablet | bot
    os: str  # lower-case family with spaces removed: "ios", "android", "windows", "macos", "linux"
    browser: str  # lower-case family without "mobile"/"ios"/"webview": "chrome", "safari", "firefox"


# Who gets a link's Open Graph page: the preview fetchers of the events contract, and search
# engines (they render previews too). iMessage sends a desktop-Safari UA that also contains
# "facebookexternalhit" and "Twitterbot".
FETCHER_TOKENS = (*PREVIEW_FETCHERS, "googlebot", "bingbot", "yandexbot")
_FETCHER = re.compile("|".join(re.escape(t) for t in FETCHER_TOKENS))
_BOT = re.compile(r"bot\b|bot/|crawler|spider|crawl|slurp|preview|externalhit|headless|curl/|wget/", re.IGNORECASE)


def is_preview_fetcher(user_agent: str) -> bool:
    """True for the crawlers that build link previews (Facebook, X, LinkedIn, Slack, Discord…)."""
    return bool(user_agent) and _FETCHER.search(user_agent.lower()) is not None


@lru_cache(maxsize=16384)
def parse_agent(user_agent: str) -> Agent:
    """Classify a User-Agent (cached by string: the same few thousand UAs make most traffic)."""
    result = ua_parser.parse(user_agent[:512])
    os_family = result.os.family if result.os else ""
    browser = result.user_agent.family if result.user_agent else ""
    device_family = result.device.family if result.device else ""
    brand = (result.device.brand or "") if result.device else ""
    if device_family == "Spider" or (user_agent and _BOT.search(user_agent)) or not user_agent:
        device = "bot"
    elif device_family == "iPad" or "tablet" in brand.lower() or "tablet" in device_family.lower():
        device = "tablet"
    elif os_family == "Android" and "Mobile" not in user_agent:
        device = "tablet"  # Android tablets drop "Mobile" from the UA, per Google's guidance
    elif os_family in ("iOS", "Android", "Windows Phone", "BlackBerry OS", "KaiOS") or "Mobi" in user_agent:
        device = "mobile"
    else:
        device = "desktop"
    return Agent(device=device, os=normalise_os(os_family), browser=normalise_browser(browser))
