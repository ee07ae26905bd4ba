import re
from pathlib import Path

import pytest

from h0p_settings import DEV_SECRET_KEY, KEY_PURPOSES, SettingsError, load_settings, require_private_secret


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
        ("H0P_WORKSPACE_RATE_LIMIT_PER_SECOND", "0", "from 1 to"),
        ("H0P_WORKSPACE_RATE_LIMIT_PER_MINUTE", "many", "expected a whole number"),
        ("H0P_MAX_KEYS_PER_WORKSPACE", "0", "from 1 to"),
        ("H0P_BULK_PASSWORDS_MAX", "101", "from 0 to 100"),
        ("H0P_PASSWORD_HASH_THREADS", "0", "from 1 to"),
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


def test_the_hardening_limits_have_their_documented_defaults() -> None:
    s = load_settings({})
    assert (s.workspace_rate_limit_per_second, s.workspace_rate_limit_per_minute) == (10, 300)
    assert (s.max_keys_per_workspace, s.bulk_passwords_max, s.password_hash_threads) == (100, 10, 2)
    assert load_settings({"H0P_BULK_PASSWORDS_MAX": "0"}).bulk_passwords_max == 0  # no passwords in bulk


def test_short_urls_carry_the_edge_port_only_for_a_local_default_domain() -> None:
    assert load_settings({}).short_url("localhost", "abc") == "http://localhost:8080/abc"
    prod = load_settings({"H0P_DEFAULT_DOMAIN": "h0p.link", "H0P_PUBLIC_SCHEME": "https"})
    assert prod.short_url("h0p.link", "abc") == "https://h0p.link/abc"


# --- H0P_SECRET_KEY: never a usable default -------------------------------------------------

_STRONG = "k" * 16 + "0123456789abcdef"  # 32 characters


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "api.internal"])
def test_the_development_secret_is_refused_on_a_listener_beyond_loopback(host: str) -> None:
    for env in ({"H0P_BIND_HOST": host}, {"H0P_BIND_HOST": host, "H0P_SECRET_KEY": DEV_SECRET_KEY}):
        with pytest.raises(SettingsError) as info:
            require_private_secret(load_settings(env))
        assert str(info.value).startswith("H0P_SECRET_KEY ")
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_the_development_secret_is_allowed_on_loopback(host: str) -> None:
    require_private_secret(load_settings({"H0P_BIND_HOST": host}))


def test_a_real_secret_may_listen_anywhere() -> None:
    require_private_secret(load_settings({"H0P_BIND_HOST": "0.0.0.0", "H0P_SECRET_KEY": _STRONG}))


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "H0P_SECRET_KEY is empty"),
        ("CHANGE-ME-to-a-long-random-string", "H0P_SECRET_KEY is a placeholder"),
        ("please-changeme-0123456789abcdefghij", "H0P_SECRET_KEY is a placeholder"),
        ("short-secret", "H0P_SECRET_KEY is 12 characters"),
    ],
)
def test_an_empty_placeholder_or_short_secret_is_refused(value: str, fragment: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"H0P_SECRET_KEY": value})
    assert fragment in str(info.value)


def test_the_shipped_example_files_carry_no_usable_secret() -> None:
    root = Path(__file__).resolve().parent.parent
    env_example = (root / "deploy/systemd/h0p.env.example").read_text()
    k8s = (root / "deploy/k8s/config.yaml").read_text()
    values = [m.group(1) for m in re.finditer(r"^H0P_SECRET_KEY=(.*)$", env_example, re.M)]
    values += [m.group(1).strip().strip("\"'") for m in re.finditer(r"^\s+H0P_SECRET_KEY:(.*)$", k8s, re.M)]
    assert len(values) == 2
    for value in values:
        with pytest.raises(SettingsError, match="H0P_SECRET_KEY"):
            load_settings({"H0P_SECRET_KEY": value})
    # compose takes the value from the operator's environment and stops without one
    compose = (root / "deploy/docker-compose.yml").read_text()
    (line,) = [m.group(1).strip() for m in re.finditer(r"^\s+H0P_SECRET_KEY:(.*)$", compose, re.M)]
    assert line.startswith("${H0P_SECRET_KEY:?")


def test_each_purpose_gets_its_own_key_and_all_follow_the_secret() -> None:
    a, b = load_settings({"H0P_SECRET_KEY": _STRONG}), load_settings({"H0P_SECRET_KEY": _STRONG[::-1]})
    keys = [a.derived_key(p) for p in KEY_PURPOSES]
    assert len(set(keys)) == len(KEY_PURPOSES) and all(len(k) == 32 for k in keys)
    assert all(a.derived_key(p) != b.derived_key(p) for p in KEY_PURPOSES)
    assert all(_STRONG.encode() not in k for k in keys)
    with pytest.raises(ValueError, match="unknown key purpose"):
        a.derived_key("anything")


def test_the_secret_is_never_printed_with_the_settings() -> None:
    assert _STRONG not in repr(load_settings({"H0P_SECRET_KEY": _STRONG}))


def test_the_webhook_retry_schedule_is_comma_separated_seconds_defaulting_to_svixs() -> None:
    assert load_settings({}).webhook_retry_schedule_s == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert load_settings({"H0P_WEBHOOK_RETRY_SCHEDULE_S": "0.5, 1,2"}).webhook_retry_schedule_s == (0.5, 1.0, 2.0)


def test_replicas_default_to_the_primaries_and_are_read_from_only() -> None:
    s = load_settings({})
    assert (s.edge_read_redis_url, s.read_url) == (s.redis_url, s.database_url)
    assert (s.kafka_partitions, s.kafka_replication, s.kafka_min_insync, s.api_metrics_port) == (12, 3, 2, 0)
    r = load_settings(
        {
            "H0P_EDGE_REDIS_URL": "redis://replica.local:6379/0",
            "H0P_READ_DATABASE_URL": "postgresql://reader@standby.local/h0p",
        }
    )
    assert r.edge_read_redis_url == "redis://replica.local:6379/0" and r.redis_url == "redis://127.0.0.1:6379/0"
    assert r.read_url == "postgresql://reader@standby.local/h0p" and r.database_url.endswith("127.0.0.1:5432/h0p")
    # Empty means "no replica", as when unset.
    assert load_settings({"H0P_EDGE_REDIS_URL": "", "H0P_READ_DATABASE_URL": ""}).read_url == s.database_url


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("H0P_EDGE_REDIS_URL", "http://replica:6379", "redis://"),
        ("H0P_READ_DATABASE_URL", "mysql://standby/h0p", "postgresql://"),
        ("H0P_KAFKA_PARTITIONS", "0", "from 1 to"),
        ("H0P_KAFKA_REPLICATION", "three", "expected a whole number"),
        ("H0P_KAFKA_MIN_INSYNC", "0", "from 1 to"),
        ("H0P_API_METRICS_PORT", "70000", "from 0 to 65535"),
    ],
)
def test_a_wrong_replica_or_topic_setting_is_named(name: str, value: str, fragment: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({name: value})
    assert name in str(raised.value) and fragment in str(raised.value)
