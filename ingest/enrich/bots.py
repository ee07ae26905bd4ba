"""Which hits are not people: crawlers, link-preview fetchers, scripts, HEAD requests."""

from __future__ import annotations

import re

# Link-preview fetchers (chat apps and social networks unfurling a pasted link) count as
# bots: a link posted in a busy Slack channel would otherwise look like dozens of clicks.
# Tokens are specific to the fetcher: in-app browsers of the same apps (Snapchat, Viber,
# "[Pinterest/iOS]", Teams) carry real people and are not listed.
PREVIEW_FETCHERS = (
    "facebookexternalhit",
    "facebookcatalog",
    "facebot",
    "meta-externalagent",
    "twitterbot",
    "slackbot",
    "slack-imgproxy",
    "discordbot",
    "whatsapp",
    "telegrambot",
    "linkedinbot",
    "pinterestbot",
    "pinterest/0.",
    "redditbot",
    "skypeuripreview",
    "microsoftpreview",
    "iframely",
    "embedly",
    "vkshare",
    "mastodon",
    "bluesky",
    "google-pagerenderer",
    "googleother",
    "applebot",
    "bitlybot",
    "outbrain",
    "qwantify",
    "yahoo! slurp",
)

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
