"""Contract: how a User-Agent is classified, one definition for the edge (rules) and ingest (analytics).

Browser, OS, brand and model come from uap-core's regexes (``ua-parser`` with its Rust resolver);
crawlers from the crawler-user-agents list (MIT, patterns of >1,500 bots), matched by the same Rust
regex engine, plus the preview fetchers of the events contract and scripted clients. uap-core has no
device *class*, so the form factor (desktop, mobile, tablet, tv, console) is decided here, in Matomo
device-detector's order: the tokens console browsers send and what Matomo's parser takes for a TV
whatever the model (HbbTV, Opera TV Store, "Shell" TV firmwares, Android TV, Tizen/webOS TVs, TV-only
browsers), then Matomo's per-brand, per-model device types (``redirect.device_models``) for what a
model code is, then TV-box words, uap-core's OS and the "Mobile" token.
Accuracy against Matomo's labelled fixtures: ``tests/redirect/test_visitor_agent_reference.py``.

Leaf module: stdlib, ua-parser(-rs), crawler-user-agents, ``redirect.device_models`` (Matomo's data),
the device classes (``redirect.device_classes``) and the events contract's fetcher list.
"""

from __future__ import annotations

import json
import re
from importlib.resources import files
from typing import NamedTuple

import ua_parser_rs  # ua-parser's native resolver; its extractors also serve the crawler list
from ua_parser import Domain, Parser, load_lazy_builtins
from ua_parser.regex import Resolver

from redirect.device_classes import DEVICE_CLASSES, normalise_device
from redirect.device_models import device_models
from redirect.events import PREVIEW_FETCHERS

__all__ = [
    "DEVICE_CLASSES", "SCRIPTED_CLIENTS", "VisitorAgent", "classify", "device_class", "is_bot_agent",
    "normalise_device",
]  # fmt: skip


class VisitorAgent(NamedTuple):
    """What a User-Agent says (field order is the ``clicks`` column order from ``device`` on)."""

    device: str  # one of DEVICE_CLASSES
    device_brand: str
    device_model: str
    browser: str  # uap-core family: "Chrome Mobile", "Mobile Safari", "Firefox"
    browser_version: str  # major.minor
    os: str  # uap-core family: "iOS", "Android", "Windows", "Mac OS X"
    os_version: str
    bot: bool


# Scripted clients and headless browsers: a person does not click a link with these.
SCRIPTED_CLIENTS = (
    "curl/", "wget/", "python-requests", "python-urllib", "python-httpx", "aiohttp", "httpie",
    "go-http-client", "java/", "apache-httpclient", "okhttp/", "libwww-perl", "node-fetch", "undici",
    "axios/", "postmanruntime", "insomnia", "headlesschrome", "phantomjs", "puppeteer", "playwright",
    "selenium", "scrapy", "guzzlehttp", "lighthouse", "uptimerobot", "pingdom", "statuscake", "monitor",
    "check_http", "zgrab", "masscan", "nmap",
)  # fmt: skip
_GENERIC_BOT = (
    "crawler", "spider", "crawl", "slurp", "fetcher", "scanner", "+http", "google-", "-google",
    "page speed", "transcoder", "observatory", "validator", "checker", "audit", "apachebench",
    "request-promise", "${", "<?", "{{",
)  # fmt: skip


class _Tokens:
    """A case-insensitive regex run by ua-parser-rs's Rust engine: linear time and ~10x faster than ``re``
    on these long alternations (each ``re`` search here cost 20-80 µs, a first sight of an agent 330 µs)."""

    __slots__ = ("_extractor",)

    def __init__(self, pattern: str) -> None:
        self._extractor = ua_parser_rs.DeviceExtractor([(pattern, "i", "match", None, None)])

    def search(self, ua: str) -> bool:
        return self._extractor.extract(ua) is not None


# "bot" ends a word ("Googlebot/2.1", "AhrefsBot;"), not inside one (a TV maker "BOTECH"); "curl/" starts
# one: an app built on libcurl ("appletv.client) libcurl/7.58") is a person's app, the curl tool is not
_BOT_WORDS = (r"bot(?:[^a-z]|$)", r"(?:^|[^a-z])curl/")
_BOT_TOKENS = _Tokens(
    "|".join(
        (*(re.escape(t) for t in (*PREVIEW_FETCHERS, *SCRIPTED_CLIENTS, *_GENERIC_BOT) if t != "curl/"), *_BOT_WORDS)
    )
)


def _crawler_patterns() -> ua_parser_rs.UserAgentExtractor:
    data = json.loads(files("crawleruseragents").joinpath("crawler-user-agents.json").read_text("utf-8"))
    # the list's own matcher is a Python alternation of 1,500 patterns (~800 µs a call); Rust's
    # prefiltered regex set answers the same question in ~2 µs
    return ua_parser_rs.UserAgentExtractor([(e["pattern"], "bot", None, None, None, None) for e in data])


_CRAWLERS = _crawler_patterns()
_PARSER = Parser(Resolver(load_lazy_builtins()))
_MODELS = device_models()

_CONSOLE = _Tokens(
    r"playstation|\bxbox|nintendo|\bwiiu?\b|ouya|dreamcast|\bpsp\b|ps vita|steamdeck|retroid|\bRG\d{3}[A-Z]?\b|"
    r"razer edge|\bshield build/|; switch(?: oled)?\)|gamepad|jxd_|\bps[345]\b|sega|anbernic|ayaneo",
)
# What Matomo device-detector itself takes for a TV whatever the model (its parser's TV fragments, its
# HbbTV and "Shell" TV parsers, its TV-only browsers and Coolita OS), and the TV platforms' own names:
# these win over a model's type, as in Matomo
_TV = _Tokens(
    r"(?:hbbtv|smarttva)/[1-9]|[ _]shell[ _]\w{6}|tclwebkit\d|opera tv|\bomi/|tv store|whaletv|smart ?tvs?\b|"
    r"smart-tv|\(tv;|andr0id|(?:android(?: uhd)?|google) ?tv|\(lite\) tv|bravia|firebolt| tv$|; tv;|"
    r"tizen.*\btv\b|\btv\b.*tizen|coolita os|\bkylo\b|espial|\bescape[/ ]\d|\bsraf\b|\bodin/|tivimate|"
    r"quick search tv|tv bro/|apple ?tv|\btvos\b|crkey|roku|web0s|webos.*tv|netcast|inettvbrowser|philipstv|"
    r"large screen|vidaa|\bAFT[A-Z]{1,4}\d?\b",
)
# Likely TVs and TV boxes by a word or model name: tried only when Matomo's models do not know the
# device (an AQUOS or a "DTV" may be a phone, an Echo Show a tablet)
_TV_HINTS = _Tokens(
    r"aquos|\bviera\b|\bstb|set-?top|mibox|\bdtv\b|\bh?tv\)|_tv_|\btv[-_ ]?box|\bTV Safari\b|"
    r"chromecast|freebox|dlna|android box|\batv\b|\bmxq|\bt95|\bx96|\bh96|\bhk1\b|a95x|zidoo|mecool|"
    r"beelink|linkbox|dune ?hd|ce-html|netrange|tpapi|libvlc|"
    r"; (?:[A-Z]+_)?[2-9]\d[A-Z]{1,5}\d{2,4}[A-Z0-9_-]*(?: Build|\))",
)
# A PC's own platform token (Matomo's desktop fragment, and any x86 Linux): no model look-up needed.
# Other Linux agents (armv7l, mips) are TVs and set-top boxes as often as PCs: their models are looked up
_PC = _Tokens(r"windows nt|\bx11\b.*\blinux (?:x86_64|i[3-6]86)|macintosh|\bcros\b")
_TABLET = _Tokens(
    r"ipad|tablet|kindle|silk/|playbook|nexus (?:7|9|10)\b|\bsm-[tpx]\d|lenovo tab|mediapad|matepad|xoom|"
    r"\bgt-p\d|\bsch-i800|\btouchpad\b|\bKF[A-Z]{2,4}\b|/apad\b|[a-z]pad\b|\bpad\b|tab\b|\btab\d|\btb-?\d|"
    r"surftab|\b(?:bah|jdn|mon|btv|ags|kob|scm|cmr|dby|bzk|krj)\d?-",
)
_MOBILE = _Tokens(
    r"mobile|iphone|ipod|windows phone|blackberry|\bbb10\b|opera mini|iemobile|symbian|series ?[46]0|"
    r"j2me|midp|kaios|\bmaui\b|nokia|up\.browser|palm|webos|obigo|netfront|\bucweb|teleca|brew",
)
# Android builds for laptops and desktops
_ANDROID_PC = _Tokens(
    r"chromebook|crosarc|inspiron|travelmate|thinkpad|latitude|elitebook|probook|pavilion|\bcompaq\b|\bPC\)|"
    r"aspire|ideapad|vostro|optiplex",
)
# desktop apps that name their platform without a browser's OS token (Office, GOG, git, feed readers)
_DESKTOP = _Tokens(
    r"darwin/.*\((?:x86_64|arm64)\)|power%20macintosh|macintosh|"
    r"\bdesktop\b|mac ?os|\bwin(?:dows|32|64|10|11)\b|\.windows\.|\blinux\b|\bx11\b|amiga|beos|haiku|morphos|"
    r"os/2|inferno|solaris|sunos|freebsd|openbsd|netbsd|\bunix\b",
)
_MOBILE_OS = frozenset(
    {"iOS", "Android", "Windows Phone", "BlackBerry OS", "BlackBerry Tablet OS", "KaiOS", "Symbian OS",
     "Symbian^3", "Firefox OS", "Tizen", "webOS", "Bada", "Sailfish", "Ubuntu Touch", "Windows Mobile",
     "Windows CE", "MeeGo", "Maemo", "HarmonyOS"}
)  # fmt: skip
_DESKTOP_OS = frozenset(
    {"Windows", "Mac OS X", "Linux", "Ubuntu", "Chrome OS", "ChromeOS", "Fedora", "FreeBSD", "Debian", "OpenBSD",
     "NetBSD", "Solaris", "Mint", "Arch Linux", "Gentoo", "Kubuntu", "Red Hat", "SUSE", "Slackware", "CentOS"}
)  # fmt: skip
# Matomo's device types in our classes (wearables, media players, cameras, car browsers: "other")
_MATOMO_TYPES = {
    "smartphone": "mobile", "phablet": "mobile", "feature phone": "mobile", "tablet": "tablet", "tv": "tv",
    "console": "console", "desktop": "desktop", "wearable": "other", "portable media player": "other",
    "smart display": "other", "camera": "other", "car browser": "other", "peripheral": "other",
    "smart speaker": "other",
}  # fmt: skip
_SPIDER_FAMILIES = frozenset({"Spider"})
# uap-core spellings users would not type: LG's TV OS is "webOS" to its users (a filter os=webOS)
_OS_RENAMES = {"Web0S": "webOS"}
# Yandex's browsers (the most used browser family in Russia) that uap-core reads as the Chrome or
# WebView they are built on; the label a person expects is the browser they opened
_YANDEX = re.compile(r"\bYa(?:Search)?Browser/(\d+)(?:\.(\d+))?")
_YANDEX_BASES = frozenset({"Chrome", "Chrome Mobile", "Chrome Mobile WebView", "YandexSearch", "Other"})
_GENERIC_BRANDS = frozenset({"Spider", "Generic", "Generic_Android", "Generic_Android_Tablet", "Generic_Inettv"})


def _version(*parts: str | None) -> str:
    out = []
    for part in parts:
        if part is None:
            break
        out.append(part)
    return ".".join(out)


def is_bot_agent(ua: str) -> bool:
    """True for an empty user agent or one that names a crawler, preview fetcher or script."""
    if len(ua) < 10:
        return True  # empty or too short to be a browser ("-", "Mozilla", "test")
    return _BOT_TOKENS.search(ua) or _CRAWLERS.extract(ua) is not None


def device_class(ua: str, os_family: str, device_family: str, device_brand: str) -> str:
    """The form factor of a person's device, or "bot" for an agent that names no browser, OS or device."""
    if _CONSOLE.search(ua):
        return "console"
    if device_brand == "Generic_Inettv" or _TV.search(ua):
        return "tv"
    if device_family == "iPad":
        return "tablet"
    if device_family.startswith(("iPhone", "iPod")):
        return "mobile"
    if os_family not in _DESKTOP_OS or not _PC.search(ua):
        # which phone, tablet or TV box a model code is: Matomo's per-brand, per-model data
        matomo = _MATOMO_TYPES.get(_MODELS.device_type(ua), "")
        if matomo:
            return matomo
    if _TV_HINTS.search(ua):
        return "tv"
    if device_brand == "Generic_Android_Tablet" or _TABLET.search(ua):
        return "tablet"
    if os_family == "Android" and _ANDROID_PC.search(ua) and "mobile" not in ua.lower():
        return "desktop"
    if os_family == "Android" and "mobile" not in ua.lower():
        return "tablet"  # Android tablets drop the "Mobile" token (Google's guidance to browser makers)
    if os_family in _MOBILE_OS or _MOBILE.search(ua):
        return "mobile"
    if os_family or _DESKTOP.search(ua):
        return "desktop"
    return "other"


def classify(ua: str) -> VisitorAgent:
    """Classify one User-Agent (uncached: each side keeps its own bounded cache by string)."""
    ua = ua[:1024]
    result = _PARSER(ua, Domain.ALL).complete()
    browser, os_, dev = result.user_agent, result.os, result.device
    os_family = os_.family if os_ is not None and os_.family != "Other" else ""
    dev_family = dev.family if dev is not None else ""
    raw_brand = (dev.brand or "") if dev is not None else ""
    bot = dev_family in _SPIDER_FAMILIES or is_bot_agent(ua)
    device = "bot" if bot else device_class(ua, os_family, dev_family, raw_brand)
    if device == "other" and (browser is None or browser.family == "Other") and dev_family in ("", "Other"):
        # names no browser, OS or device: a script or a scanner (people click with browsers and apps
        # that say what they run on); counted as a bot so it never inflates human clicks
        device, bot = "bot", True
    brand = raw_brand if raw_brand not in _GENERIC_BRANDS else ""
    model = dev.model if dev is not None and dev.family != "Spider" and dev.model else ""
    browser_family = browser.family if browser is not None and browser.family != "Other" else ""
    browser_version = _version(browser.major, browser.minor) if browser is not None else ""
    if (browser_family or "Other") in _YANDEX_BASES and "Browser/" in ua:
        yandex = _YANDEX.search(ua)
        if yandex is not None:
            browser_family, browser_version = "Yandex Browser", _version(*yandex.groups())
    return VisitorAgent(
        device=device,
        device_brand=brand,
        device_model=model or "",
        browser=browser_family,
        browser_version=browser_version,
        os=_OS_RENAMES.get(os_family, os_family),
        os_version=_version(os_.major, os_.minor, os_.patch) if os_ is not None and os_family else "",
        bot=bot,
    )
