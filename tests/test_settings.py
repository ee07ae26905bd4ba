import pytest

from h0p_settings import SettingsError, load_settings


def test_defaults_point_at_the_local_services() -> None:
    s = load_settings({})
    assert s.database_url == "postgresql://postgres@127.0.0.1:5432/h0p"
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert (s.api_port, s.redirect_port, s.default_domain) == (8000, 8080, "localhost")


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("H0P_API_PORT", "eighty", "H0P_API_PORT='eighty': expected a whole number"),
        ("H0P_REDIRECT_PORT", "70000", "from 1 to 65535"),
        ("H0P_DATABASE_URL", "mysql://x/y", "postgresql://"),
        ("H0P_REDIS_URL", "redis://127.0.0.1:6379/abc", "database index"),
        ("H0P_KAFKA_BOOTSTRAP", "localhost", "host:port"),
        ("H0P_TRUSTED_PROXIES", "10.0.0.0/8,nonsense", "'nonsense' is not an IP address"),
        ("H0P_RATE_LIMITS_ENABLED", "maybe", "expected true or false"),
        ("H0P_WEBHOOK_RETRY_SCHEDULE_S", "5,soon", "comma-separated seconds"),
        ("H0P_WEBHOOK_RETRY_SCHEDULE_S", "5,-1", "non-negative seconds"),
        ("H0P_WEBHOOK_TIMEOUT_S", "0", "at least 0.1"),
    ],
)
def test_a_wrong_value_is_named_in_a_one_line_error(name: str, value: str, fragment: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({name: value})
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_short_urls_carry_the_edge_port_only_for_a_local_default_domain() -> None:
    assert load_settings({}).short_url("localhost", "abc") == "http://localhost:8080/abc"
    prod = load_settings({"H0P_DEFAULT_DOMAIN": "h0p.link", "H0P_PUBLIC_SCHEME": "https"})
    assert prod.short_url("h0p.link", "abc") == "https://h0p.link/abc"


def test_the_webhook_retry_schedule_is_comma_separated_seconds_defaulting_to_svixs() -> None:
    assert load_settings({}).webhook_retry_schedule_s == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert load_settings({"H0P_WEBHOOK_RETRY_SCHEDULE_S": "0.5, 1,2"}).webhook_retry_schedule_s == (0.5, 1.0, 2.0)
