"""One classifier for both sides: the edge's routing rules and ingest's analytics label a visitor alike."""

from __future__ import annotations

import pytest

from ingest.enrich.agent import AgentParser
from redirect.rules import Visitor, choose_rule
from redirect.visitor_agent import DEVICE_CLASSES, classify
from tests.redirect.agent_reference import crawler_instances, matomo_fixtures
from tests.redirect.test_rules import one, routed

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko)"
    " Version/17.0 Mobile/15E148 Safari/604.1"
)
LG_TV = (
    "Mozilla/5.0 (Web0S; Linux/SmartTV) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/79.0.3945.79 Safari/537.36"
    " WebAppManager"
)
PS5 = (
    "Mozilla/5.0 (PlayStation; PlayStation 5/2.26) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.0"
    " Safari/605.1.15"
)


@pytest.mark.slow
def test_a_device_rule_and_the_stored_device_agree_on_every_user_agent_of_the_reference_table() -> None:
    """Every Matomo fixture and crawler example: the classes a `device=X` rule matches at the edge are
    exactly the one class ingest stores (what the analytics filter `device=X` selects)."""
    table = [label.ua for label in matomo_fixtures()] + crawler_instances()
    assert len(table) > 30_000
    ingest = AgentParser(cache_size=100)
    rules = {cls: one({"type": "device", "value": cls}) for cls in DEVICE_CLASSES}
    disagreements = []
    for ua in table:
        visitor = Visitor(user_agent=ua)
        edge = [cls for cls, rule in rules.items() if choose_rule(rule, visitor)]
        stored = ingest.parse(ua).device
        if edge != [stored]:
            disagreements.append((ua, edge, stored))
    assert disagreements == []


@pytest.mark.parametrize("value", ["iOS", "ios", "IOS"])
def test_an_os_rule_matches_the_os_analytics_stores_whatever_its_case(value: str) -> None:
    assert classify(IPHONE).os == "iOS"
    assert routed(one({"type": "os", "value": value}), user_agent=IPHONE) is not None


@pytest.mark.parametrize("value", ["mobile", "phone", "Phone", "smartphone"])
def test_a_device_rule_for_phones_matches_an_iphone_under_any_usual_name(value: str) -> None:
    assert routed(one({"type": "device", "value": value}), user_agent=IPHONE) is not None


def test_tvs_and_consoles_are_classes_the_edge_routes_on() -> None:
    assert routed(one({"type": "device", "value": "tv"}), user_agent=LG_TV) is not None
    assert routed(one({"type": "device", "value": "console"}), user_agent=PS5) is not None
    assert (classify(LG_TV).device, classify(PS5).device) == ("tv", "console")


def test_an_agent_that_names_no_browser_os_or_device_is_a_bot_on_both_sides() -> None:
    for ua in ("My User Agent 1.0", "Request-Promise", "survey-security-dot-txt/0.1"):
        assert classify(ua).bot
        assert routed(one({"type": "device", "value": "bot"}), user_agent=ua) is not None


def test_every_preview_fetcher_the_edge_answers_with_a_preview_is_a_bot_in_analytics() -> None:
    from redirect.agent import is_preview_fetcher
    from redirect.events import PREVIEW_FETCHERS

    fetchers = [ua for ua in crawler_instances() if is_preview_fetcher(ua)]
    fetchers += [f"Mozilla/5.0 (compatible; {token}/1.0)" for token in PREVIEW_FETCHERS]
    assert len(fetchers) > len(PREVIEW_FETCHERS)
    assert [ua for ua in fetchers if not classify(ua).bot] == []


def test_webos_and_ipados_rules_match_what_analytics_stores() -> None:
    assert classify(LG_TV).os == "webOS"
    assert routed(one({"type": "os", "value": "webOS"}), user_agent=LG_TV) is not None
    assert routed(one({"type": "os", "value": "Web0S"}), user_agent=LG_TV) is not None
    ipad = IPHONE.replace("iPhone; CPU iPhone OS", "iPad; CPU OS")
    assert routed(one({"type": "os", "value": "iPadOS"}), user_agent=ipad) is not None


def test_yandex_browser_is_labelled_as_yandex_not_as_the_chrome_it_is_built_on() -> None:
    ua = (
        "Mozilla/5.0 (Linux; Android 14; TECNO LI9 Build/UP1A.231005.007; wv) AppleWebKit/537.36 (KHTML, like Gecko)"
        " Version/4.0 Chrome/117.0.0.0 YaBrowser/22.8.1.94 (lite) Mobile Safari/537.36"
    )
    agent = classify(ua)
    assert (agent.browser, agent.browser_version) == ("Yandex Browser", "22.8")


# TVs Matomo recognises whatever their model, by its own rules (examples from the tuning half of its fixtures)
MATOMO_TV_SIGNALS = {
    "HbbTV from a maker whose name holds 'bot'": (
        "Mozilla/5.0 (Linux; Andr0id 9; ATV R1) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/77.0.3865.120"
        " Safari/537.36 OPR/46.0.2207.0 OMI/4.20.5.31.Oak.45 HbbTV/1.5.1 (+DRM;BOTECH;ATV R1;Demo 1.0;"
        "Demonstration only;TVs;) FVC/5.0 (BOTECH;TVs;)"
    ),
    "Opera TV Store on an embedded Linux": (
        "Mozilla/5.0 (Linux armv7l) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/77.0.3865.120 Safari/537.36"
        " OPR/46.0.2207.0 OMI/4.20.3.54.Catcher2.147 Model/Hisense-MSD6886 TV Store/4.20"
    ),
    "a 'Shell' TV firmware": (
        "Mozilla/5.0 (Linux; Android 8.0.0; Leff Shell LC390TA2A Build/OPR5.170623.014; wv) AppleWebKit/537.36"
        " (KHTML, like Gecko) Version/4.0 Chrome/61.0.3163.98 Safari/537.36"
    ),
    "a TCL TV that claims to be an iPad": (
        "Mozilla/5.0 (iPad; U; CPU OS 5_0 like Mac OS X; en-us) AppleWebKit/534.46 (KHTML, like Gecko)"
        " Version/5.0.2 Mobile/9A5248d Safari/6533.18.5#2.0#TCL/TCL-ME-MS68-S1/22/tclwebkit1.0.2/1920*1080"
    ),
    "Coolita OS": (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/88.99.234.5"
        " Safari/537.36 Coolita OS QJY/2.0 (; STV; AMLT921D; LiteOS3.0.0; E3A; )FXM-END"
    ),
    "the Espial TV browser": "Mozilla/4.0 (compatible; MSIE 5.23; Macintosh; PPC) Escape 5.1.8",
    "a set-top box model on Linux mips": (
        "Opera/9.80 (Linux mips; ) Presto/2.12.407 Version/12.51 MB95/3.3.8.n (AKAI, Si2157LG32, wireless)"
    ),
    "an Android TV box whose name holds 'xbox'": (
        "Mozilla/5.0 Linux; Android 5.1.1; NEXBOX-A95X AppleWebKit/537.36 KHTML, like Gecko"
        " Chrome/74.0.3729.157 Safari/537.36"
    ),
    "an Apple TV app built on libcurl": (
        "otg/1.5.1 (AppleTv Apple TV 4; tvOS16.2; appletv.client) libcurl/7.58.0 OpenSSL/1.0.2o zlib/1.2.11"
    ),
}


@pytest.mark.parametrize("ua", list(MATOMO_TV_SIGNALS.values()), ids=list(MATOMO_TV_SIGNALS))
def test_tvs_are_recognised_by_the_signals_matomo_uses_and_routed_by_a_tv_rule(ua: str) -> None:
    assert (classify(ua).device, classify(ua).bot) == ("tv", False)
    assert routed(one({"type": "device", "value": "tv"}), user_agent=ua) is not None


def test_a_phone_named_after_a_tv_brand_is_a_phone() -> None:
    aquos = (
        "Mozilla/5.0 (Linux; Android 13; Sharp Aquos zero6) AppleWebKit/537.36 (KHTML, like Gecko)"
        " Chrome/117.0.0.0 Mobile Safari/537.36"
    )
    assert classify(aquos).device == "mobile"


def test_the_curl_tool_and_crawlers_are_still_bots() -> None:
    for ua in ("curl/8.4.0", "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "Bot_x/1.0"):
        assert classify(ua).bot, ua
