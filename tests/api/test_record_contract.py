"""Writer side of the cache record contract: the API stores these rules and builds exactly the golden bytes."""

from __future__ import annotations

import msgspec

from api.link_rules import check_rules, rules_json
from api.schemas import Rule
from h0p_settings import Settings
from redirect.record import RECORD_VERSION, domain_record_from_row, encode, link_record_from_row
from tests.golden.records import DOMAIN_ROW, LINK_ROW, RULES, golden


def test_the_api_stores_the_golden_rules_from_the_clients_input() -> None:
    stored = rules_json(check_rules(msgspec.convert(RULES, list[Rule]), Settings()))
    assert msgspec.json.decode(stored) == msgspec.json.decode(LINK_ROW["rules"])


def test_the_api_writes_the_golden_bytes_of_the_current_version() -> None:
    assert encode(link_record_from_row(LINK_ROW)) == golden("link", RECORD_VERSION)
    assert encode(domain_record_from_row(DOMAIN_ROW)) == golden("domain", RECORD_VERSION)
