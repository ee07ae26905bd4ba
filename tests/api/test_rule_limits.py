"""A link's rules are bounded (each value, the whole set), so no tenant can make the shared edge slow."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec

from api.schemas import CONDITION_VALUE_MAX, RULES_MAX_BYTES


def rule(conditions: list[dict[str, Any]], n: int = 0) -> dict[str, Any]:
    return {"conditions": conditions, "url": f"https://example.com/r{n}"}


def details(r: httpx.Response) -> list[str]:
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    return [d["path"] for d in error["details"]]


async def test_a_condition_value_over_200_characters_is_refused_with_its_path(api: httpx.AsyncClient) -> None:
    rules = [rule([{"type": "city", "value": "Paris"}], i) for i in range(3)]
    rules.append(rule([{"type": "city", "value": "x" * (CONDITION_VALUE_MAX + 1)}], 3))
    r = await api.post("/links", json={"url": "https://example.com/", "slug": "long-value", "rules": rules})
    assert details(r) == ["rules[3].conditions[0].value"]
    assert (await api.get("/links/info", params={"slug": "long-value"})).status_code == 404


async def test_a_list_item_over_200_characters_is_refused_with_its_path(api: httpx.AsyncClient) -> None:
    values = ["ok", "y" * (CONDITION_VALUE_MAX + 1)]
    r = await api.post(
        "/links", json={"url": "https://example.com/", "rules": [rule([{"type": "os", "value": values}])]}
    )
    assert details(r) == ["rules[0].conditions[0].value[1]"]


def _big_rules(target_bytes: int) -> list[dict[str, Any]]:
    """Rules of 200-character city values, about ``target_bytes`` of JSON."""
    value = "c" * CONDITION_VALUE_MAX
    rules, size = [], 2
    for i in range(50):
        conditions = []
        for _ in range(20):
            if size + 230 > target_bytes:
                break
            conditions.append({"type": "city", "value": value, "not": True})
            size += len(msgspec.json.encode(conditions[-1])) + 1
        if not conditions:
            break
        rules.append(rule(conditions, i))
        size += 60
    return rules


async def test_a_rule_set_over_32_kib_is_refused_and_nothing_is_written(api: httpx.AsyncClient) -> None:
    rules = _big_rules(RULES_MAX_BYTES + 4000)
    assert len(msgspec.json.encode(rules)) > RULES_MAX_BYTES
    r = await api.post("/links", json={"url": "https://example.com/", "slug": "too-many-rules", "rules": rules})
    assert details(r) == ["rules"]
    assert (await api.get("/links/info", params={"slug": "too-many-rules"})).status_code == 404


async def test_a_rule_set_just_under_the_cap_is_accepted_and_updates_are_capped_too(api: httpx.AsyncClient) -> None:
    rules = _big_rules(RULES_MAX_BYTES - 2000)
    r = await api.post("/links", json={"url": "https://example.com/", "slug": "many-rules", "rules": rules})
    assert r.status_code == 201, r.text
    link = r.json()
    assert len(link["rules"]) == len(rules)
    more = await api.patch(f"/links/{link['id']}", json={"rules": _big_rules(RULES_MAX_BYTES + 4000)})
    assert details(more) == ["rules"]
    assert (await api.get(f"/links/{link['id']}")).json()["rules"] == link["rules"]


async def test_the_caps_are_in_the_openapi_document(api: httpx.AsyncClient) -> None:
    doc = (await api.get("/doc")).json()
    schemas = doc["components"]["schemas"]
    value = schemas["RuleCondition"]["properties"]["value"]
    variants = value["anyOf"]
    assert {"type": "string", "maxLength": CONDITION_VALUE_MAX} in [
        {k: v for k, v in s.items() if k in ("type", "maxLength")} for s in variants
    ]
    items = next(s for s in variants if s.get("type") == "array")["items"]
    assert items["maxLength"] == CONDITION_VALUE_MAX
    rules = schemas["LinkCreate"]["properties"]["rules"]
    assert rules["maxItems"] == 50 and rules["x-max-encoded-bytes"] == RULES_MAX_BYTES
    assert str(RULES_MAX_BYTES) in rules["description"]


async def test_ip_conditions_may_use_at_most_16_prefix_lengths_per_version(api: httpx.AsyncClient) -> None:
    v6 = [f"2001:db8::/{p}" for p in range(32, 48)]  # 16 lengths: accepted, with any number of IPv4 ones
    ok = [rule([{"type": "ip", "value": v6}]), rule([{"type": "ip", "value": [f"10.0.0.0/{p}" for p in range(8, 24)]}])]
    r = await api.post("/links", json={"url": "https://example.com/", "rules": ok})
    assert r.status_code == 201, r.text
    one_more = [*ok, rule([{"type": "ip", "value": ["10.9.0.0/16", "2001:db8::/64"]}], 2)]
    r = await api.post("/links", json={"url": "https://example.com/", "rules": one_more})
    assert details(r) == ["rules[2].conditions[0].value[1]"]
