"""Real user-agent strings classified: device type, browser, OS, bot flag."""

from __future__ import annotations

import pytest

from ingest.enrich.agent import AgentParser
from ingest.enrich.bots import is_bot_agent, is_bot_request

CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)
SAFARI_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.2 Safari/605.1.15"
)
FIREFOX_LINUX = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"
EDGE_WINDOWS = CHROME_WINDOWS + " Edg/120.0.0.0"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.2 Mobile/15E148 Safari/604.1"
)
PIXEL = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.6099.144 Mobile Safari/537.36"
)
SAMSUNG = (
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36"
)
IPAD = (
    "Mozilla/5.0 (iPad; CPU OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.2 Mobile/15E148 Safari/604.1"
)
GALAXY_TAB = (
    "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)
INSTAGRAM_IN_APP = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Mobile/15E148 Instagram 309.0.2.17.109 (iPhone14,5; iOS 17_1; en_US; en; scale=3.00; 1170x2532; 536402290)"
)
SMART_TV = (
    "Mozilla/5.0 (SMART-TV; LINUX; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) 76.0.3809.146/6.0 TV Safari/537.36"
)

PEOPLE = [
    # (user agent, device, browser, os)
    (CHROME_WINDOWS, "desktop", "Chrome", "Windows"),
    (SAFARI_MAC, "desktop", "Safari", "Mac OS X"),
    (FIREFOX_LINUX, "desktop", "Firefox", "Ubuntu"),
    (EDGE_WINDOWS, "desktop", "Edge", "Windows"),
    (IPHONE, "mobile", "Mobile Safari", "iOS"),
    (PIXEL, "mobile", "Chrome Mobile", "Android"),
    (SAMSUNG, "mobile", "Samsung Internet", "Android"),
    (INSTAGRAM_IN_APP, "mobile", "Instagram", "iOS"),
    (IPAD, "tablet", "Mobile Safari", "iOS"),
    (GALAXY_TAB, "tablet", "Chrome", "Android"),
    (SMART_TV, "tv", "Safari", "Tizen"),
]

BOTS = [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Twitterbot/1.0",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "Slackbot 1.0 (+https://api.slack.com/robots)",
    "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
    "WhatsApp/2.23.20.0 A",
    "TelegramBot (like TwitterBot)",
    "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_1) AppleWebKit/601.2.4 (KHTML, like Gecko) "
    "Version/9.0.1 Safari/601.2.4 facebookexternalhit/1.1 Facebot Twitterbot/1.0",  # iMessage preview
    "Mozilla/5.0 (Windows NT 6.1; WOW64) SkypeUriPreview Preview/0.5",
    "Pinterest/0.2 (+https://www.pinterest.com/bot.html)",
    "Mozilla/5.0 (compatible; Applebot/0.1; +http://www.apple.com/go/applebot)",
    "curl/8.5.0",
    "Wget/1.21.4",
    "python-requests/2.31.0",
    "Python-urllib/3.11",
    "python-httpx/0.28.1",
    "Go-http-client/2.0",
    "axios/1.6.2",
    "PostmanRuntime/7.36.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36",
    "",
    "-",
]


@pytest.fixture(scope="module")
def agents() -> AgentParser:
    return AgentParser()


@pytest.mark.parametrize(("ua", "device", "browser", "os"), PEOPLE)
def test_browsers_of_people_are_classified_by_device_browser_and_os(
    agents: AgentParser, ua: str, device: str, browser: str, os: str
) -> None:
    agent = agents.parse(ua)
    assert (agent.device, agent.browser, agent.os) == (device, browser, os)
    assert not agent.bot


@pytest.mark.parametrize("ua", BOTS)
def test_crawlers_preview_fetchers_and_scripts_are_bots(agents: AgentParser, ua: str) -> None:
    agent = agents.parse(ua)
    assert agent.bot
    assert agent.device == "bot"


def test_versions_brand_and_model_are_kept(agents: AgentParser) -> None:
    agent = agents.parse(SAMSUNG)
    assert (agent.device_brand, agent.device_model) == ("Samsung", "SM-S918B")
    assert agent.browser_version == "23.0"
    assert agent.os_version == "14"
    assert agents.parse(IPHONE).os_version == "17.2.1"


def test_in_app_browsers_of_social_apps_are_people_not_preview_fetchers() -> None:
    assert not is_bot_agent(INSTAGRAM_IN_APP)
    assert not is_bot_agent(
        "Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Mobile/15E148 [Pinterest/iOS]"
    )


def test_head_requests_are_bots_whatever_the_agent() -> None:
    assert is_bot_request("HEAD")
    assert not is_bot_request("GET")


def test_repeated_agents_are_parsed_once(agents: AgentParser) -> None:
    assert agents.parse(PIXEL) is agents.parse(PIXEL)
