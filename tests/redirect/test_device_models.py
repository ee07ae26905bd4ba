"""Matomo's device regexes behind a literal prefilter: the same answers as trying every pattern in order."""

from __future__ import annotations

import random

import pytest

from redirect.device_models import _Pattern, _Prefiltered, device_models, pattern_requirement
from tests.redirect.agent_reference import matomo_fixtures


def naive_first(patterns: list[_Pattern], ua: str) -> _Pattern | None:
    return next((p for p in patterns if p.search(ua)), None)


@pytest.mark.slow
def test_the_prefilter_picks_the_same_brand_and_model_as_trying_every_pattern_in_order() -> None:
    models = device_models()
    brands = models._brand_patterns
    labelled = [label.ua for label in matomo_fixtures() if label.device != "bot"]
    sample = random.Random(13).sample(labelled, 250)
    wrong = [ua for ua in sample if brands.first(ua) is not naive_first(brands._patterns, ua)]
    assert wrong == []
    wrong_model = []
    for ua in sample:
        hit = brands.first(ua)
        if hit is not None:
            brand = models._brands[int(hit.value)]
            model = naive_first(brand.models, ua)
            if brand.device_type(ua) != (model.value if model is not None else brand.default):
                wrong_model.append(ua)
    assert wrong_model == []


@pytest.mark.parametrize(
    ("pattern", "literals"),
    [
        (r"SM-T\d+", ["sm-t"]),
        (r"Archos.*GAMEPAD([2]?)", ["gamepad"]),
        (r"Nintendo (([3]?DS[i]?)|Wii[U]?|Switch|GameBoy)|Switch(?: Lite| OLED)?\)", ["nintendo ", "switch"]),
        (r"(?:BUZZ [1-7]|CLEVER [13])(?:[);/ ]|$)", ["buzz ", "clever "]),
        (r"Android.*V3[67]0(?:[);/ ]|$)", None),  # "android" is in every Android agent: no literal
        (r"Xiaomi(?!/(?:Miui|Mint )Browser)", ["xiaomi"]),
    ],
)
def test_a_pattern_is_keyed_on_a_literal_every_match_contains(pattern: str, literals: list[str] | None) -> None:
    assert pattern_requirement(pattern) == literals


def test_patterns_without_a_literal_are_still_tried() -> None:
    patterns = [_Pattern(r"Android.*V3[67]0(?:[);/ ]|$)", "a"), _Pattern(r"Nokia", "b")]
    lookup = _Prefiltered(patterns)
    assert lookup.first("Mozilla/5.0 (Linux; Android 9; V370) AppleWebKit") is patterns[0]
    assert lookup.first("Nokia6300/2.0") is patterns[1]
    assert lookup.first("Mozilla/5.0 (Windows NT 10.0)") is None


def test_model_codes_name_tablets_and_tv_boxes() -> None:
    models = device_models()
    assert models.device_type("Mozilla/5.0 (Linux; Android 10; SM-T510) AppleWebKit/537.36") == "tablet"
    assert models.device_type("Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 Mobile") == "smartphone"
    assert models.device_type("Mozilla/5.0 (Linux; Android 9; MIBOX4 Build/PI) AppleWebKit/537.36") == "tv"
