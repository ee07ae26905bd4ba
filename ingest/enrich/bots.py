"""Which hits are not people: crawlers, link-preview fetchers (the events contract's list), scripts, HEAD requests."""

from __future__ import annotations

import re

from redirect.events import PREVIEW_FETCHERS

# Scripted clients and headless browsers: a person does not click a link with these.
SCRIPTED_CLIENTS = (
    "curl/",
    "wget/",
    "python-requests",
    "python-urllib",
    "python-httpx",
    "aiohttp",
    "httpie",
    "go-http-client",
    "java/",
    "apache-httpclient",
    "okhttp/",
    "libwww-perl",
    "node-fetch",
    "undici",
    "axios/",
    "postmanruntime",
    "insomnia",
    "headlesschrome",
    "phantomjs",
    "puppeteer",
    "playwright",
    "selenium",
    "scrapy",
    "guzzlehttp",
    "ruby",
    "lighthouse",
    "uptimerobot",
    "pingdom",
    "statuscake",
    "monitor",
    "check_http",
    "zgrab",
    "masscan",
    "nmap",
)

_GENERIC = ("bot", "crawler", "spider", "crawl", "slurp", "fetcher", "scanner", "preview", "http://", "https://")

_BOT_PATTERN = re.compile("|".join(re.escape(t) for t in PREVIEW_FETCHERS + SCRIPTED_CLIENTS + _GENERIC))


def is_bot_agent(ua: str) -> bool:
    """True for an empty user agent or one that names a crawler, preview fetcher or script."""
    if len(ua) < 10:
        return True  # empty or too short to be a browser ("-", "Mozilla", "test")
    return _BOT_PATTERN.search(ua.lower()) is not None


def is_bot_request(method: str) -> bool:
    """HEAD requests are link checkers and unfurlers probing, never a person following a link."""
    return method.upper() == "HEAD"
