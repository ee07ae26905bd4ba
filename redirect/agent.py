"""What a User-Agent says to routing rules: the contract's classification, cached, with names compared loosely.

The classification itself is ``redirect.visitor_agent`` (the same one ingest stores in analytics), so a
rule ``device=tablet`` and the analytics filter ``device=tablet`` agree on every visitor.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple

# One spelling for a rule's value (normalised when the record is built) and the visitor's fact
from redirect.device_classes import normalise_device
from redirect.events import PREVIEW_FETCHERS
from redirect.record import normalise_browser, normalise_os
from redirect.visitor_agent import classify

__all__ = ["Agent", "is_preview_fetcher", "normalise_browser", "normalise_device", "normalise_os", "parse_agent"]


class Agent(NamedTuple):
    device: str  # one of visitor_agent.DEVICE_CLASSES: desktop | mobile | tablet | tv | console | bot | other
    os: str  # lower-case family with spaces removed: "ios", "android", "windows", "macos", "linux"
    browser: str  # lower-case family without "mobile"/"ios"/"webview": "chrome", "safari", "firefox"


# Who gets a link's Open Graph page: the preview fetchers of the events contract, and search
# engines (they render previews too). iMessage sends a desktop-Safari UA that also contains
# "facebookexternalhit" and "Twitterbot".
FETCHER_TOKENS = (*PREVIEW_FETCHERS, "googlebot", "bingbot", "yandexbot")
_FETCHER = re.compile("|".join(re.escape(t) for t in FETCHER_TOKENS))


def is_preview_fetcher(user_agent: str) -> bool:
    """True for the crawlers that build link previews (Facebook, X, LinkedIn, Slack, Discord…)."""
    return bool(user_agent) and _FETCHER.search(user_agent.lower()) is not None


@lru_cache(maxsize=16384)
def parse_agent(user_agent: str) -> Agent:
    """Classify a User-Agent (cached by string: the same few thousand UAs make most traffic)."""
    agent = classify(user_agent[:1024])
    return Agent(device=agent.device, os=normalise_os(agent.os), browser=normalise_browser(agent.browser))
