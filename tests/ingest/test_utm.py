"""UTM values: the landing query wins field by field over the link's own UTM fields."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ingest.enrich.utm import NO_UTM, Utm, merge_utm, utm_from_query

LINK = Utm("newsletter", "email", "spring", "", "")


def test_query_without_utm_keeps_the_links_utm() -> None:
    assert merge_utm(utm_from_query("ref=abc&x=1"), LINK) == LINK


def test_query_utm_wins_over_the_links_field_by_field() -> None:
    landing = utm_from_query("utm_source=twitter&utm_content=hero%20image")
    assert merge_utm(landing, LINK) == Utm("twitter", "email", "spring", "", "hero image")


def test_link_without_utm_takes_the_landing_values() -> None:
    assert merge_utm(utm_from_query("utm_medium=social&utm_term=shoes"), NO_UTM) == Utm("", "social", "", "shoes", "")


def test_first_value_of_a_repeated_key_wins_and_keys_are_case_insensitive() -> None:
    assert utm_from_query("UTM_SOURCE=a&utm_source=b").source == "a"


def test_empty_values_do_not_override_the_links() -> None:
    assert merge_utm(utm_from_query("utm_source="), LINK) == LINK


@given(st.text(max_size=300))
def test_any_query_string_parses_without_error(query: str) -> None:
    utm = utm_from_query(query)
    assert all(len(v) <= 256 for v in utm)
