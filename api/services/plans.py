"""Plans: limits and features per workspace, from configuration.

Built-in plans are ``self-hosted`` (the default: no limits, every feature), ``pro`` and
``free``; ``H0P_PLANS`` (JSON, camelCase keys) overrides or adds plans, e.g.
``{"team": {"linksPerMonth": 5000, "domains": 10, "keys": 20, "features": ["custom_domains"]}}``.
A limit of ``null`` is unlimited. Rate limits left ``null`` use the global settings; the
per-key ones are ``rateLimitPerSecond``/``PerMinute``, the bucket all keys of a workspace share
``workspaceRateLimitPerSecond``/``PerMinute``.
"""

from __future__ import annotations

from functools import lru_cache

import msgspec

from api.errors import FeatureNotAvailable, PlanLimitReached
from h0p_settings import Settings, SettingsError

DEFAULT_PLAN = "self-hosted"
FEATURES = (
    "custom_domains",
    "webhooks",
    "routing_rules",
    "ab_testing",
    "password_protection",
    "link_expiration",
    "analytics",
    "files",
)


class Plan(msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """What a workspace on this plan may do (``None`` = unlimited)."""

    name: str = ""
    links_per_month: int | None = None
    domains: int | None = None
    keys: int | None = None
    features: frozenset[str] = frozenset(FEATURES)
    rate_limit_per_second: int | None = None
    rate_limit_per_minute: int | None = None
    # The bucket all keys of a workspace share (null: the settings' workspace limits).
    workspace_rate_limit_per_second: int | None = None
    workspace_rate_limit_per_minute: int | None = None


BUILTIN_PLANS: dict[str, Plan] = {
    "self-hosted": Plan(name="self-hosted"),
    "pro": Plan(name="pro", links_per_month=1000, domains=10, keys=20),
    "free": Plan(
        name="free",
        links_per_month=25,
        domains=3,
        keys=2,
        features=frozenset({"custom_domains", "analytics", "link_expiration"}),
        rate_limit_per_second=2,
        rate_limit_per_minute=60,
    ),
}


@lru_cache(maxsize=8)
def _parse(plans_json: str) -> dict[str, Plan]:
    plans = dict(BUILTIN_PLANS)
    if not plans_json:
        return plans
    try:
        raw = msgspec.json.decode(plans_json, type=dict[str, Plan])
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SettingsError(f"H0P_PLANS: {exc}") from None
    for name, plan in raw.items():
        unknown = plan.features - set(FEATURES)
        if unknown:
            raise SettingsError(f"H0P_PLANS: plan {name!r} has unknown features {sorted(unknown)}")
        plans[name] = msgspec.structs.replace(plan, name=name)
    return plans


def all_plans(settings: Settings) -> dict[str, Plan]:
    """Every configured plan by name; raises SettingsError on a bad ``H0P_PLANS`` (checked at start-up)."""
    return _parse(settings.plans_json)


def get_plan(settings: Settings, name: str) -> Plan:
    """The plan called ``name``; an unknown name falls back to the default plan."""
    plans = all_plans(settings)
    return plans.get(name) or plans[DEFAULT_PLAN]


def require_feature(plan: Plan, feature: str) -> None:
    """Raise FeatureNotAvailable unless ``plan`` includes ``feature``."""
    if feature not in plan.features:
        raise FeatureNotAvailable(f"the {plan.name} plan does not include {feature.replace('_', ' ')}")


def require_below(plan: Plan, what: str, limit: int | None, used: int, adding: int = 1) -> None:
    """Raise PlanLimitReached if ``used + adding`` would pass ``limit``."""
    if limit is not None and used + adding > limit:
        raise PlanLimitReached(f"the {plan.name} plan allows {limit} {what}; {used} used")
