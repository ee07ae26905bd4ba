"""The link form's fields to and from the API's shapes (``LinkCreate`` / ``LinkUpdate``).

The form posts flat fields (``rules-0-url``, ``split-1-weight``); they become the same JSON
shape a client sends to ``POST /links``, decoded by the same msgspec types, so a form error
is the API's error, on the same field path.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.datastructures import FormData

from api.errors import field_error
from api.schemas import Link, Rule

UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
CONDITION_TYPES = (
    "device",
    "os",
    "browser",
    "country",
    "city",
    "language",
    "query",
    "referrer",
    "ip",
    "before",
    "after",
)
MAX_ROWS = 50


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _optional(form: FormData, name: str) -> str | None:
    return _text(form, name) or None


def conditions_text(rule: Rule) -> str:
    """A rule's conditions, one per line: ``[not ]type[ key]: value[, value…]``."""
    lines = []
    for c in rule.conditions:
        head = ("not " if c.negate else "") + c.type + (f" {c.key}" if c.key else "")
        value = ", ".join(c.value) if isinstance(c.value, list) else (c.value or "")
        lines.append(f"{head}: {value}" if value else head)
    return "\n".join(lines)


def parse_conditions(text: str, path: str) -> list[dict[str, Any]]:
    """The lines of ``conditions_text`` back into conditions; ValidationFailed naming the rule."""
    out: list[dict[str, Any]] = []
    for line in filter(None, (raw.strip() for raw in text.splitlines())):
        head, colon, raw_value = line.partition(":")
        words = head.split()
        negate = bool(words) and words[0].lower() == "not"
        words = words[1:] if negate else words
        if not words or words[0].lower() not in CONDITION_TYPES or len(words) > 2:
            raise field_error(
                path, f"{line!r}: write a condition as 'type: value' (types: {', '.join(CONDITION_TYPES)})"
            )
        condition: dict[str, Any] = {"type": words[0].lower()}
        if len(words) == 2:
            condition["key"] = words[1]
        values = [v.strip() for v in raw_value.split(",") if v.strip()] if colon else []
        if len(values) == 1:
            condition["value"] = values[0]
        elif values:
            condition["value"] = values
        if negate:
            condition["not"] = True
        out.append(condition)
    return out


def _expiry(raw: str) -> str | None:
    # <input type="datetime-local"> sends 2030-01-31T12:00 (no zone): the form says it is UTC.
    if not raw:
        return None
    try:
        return datetime.fromisoformat(raw).replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")
    except ValueError:
        raise field_error("expiresAt", "enter a date and time such as 2030-01-31T12:00") from None


def form_to_json(form: FormData, editing: bool) -> dict[str, Any]:
    """The API's JSON body for the form (camelCase names, null for an emptied optional field)."""
    data: dict[str, Any] = {
        "url": _text(form, "url"),
        "slug": _optional(form, "slug"),
        "domain": _optional(form, "domain"),
        "title": _optional(form, "title"),
        "tagIds": [v for v in form.getlist("tag_ids") if isinstance(v, str) and v],
        "folderId": _optional(form, "folder_id"),
        "statusCode": int(_text(form, "status_code") or 302) if _text(form, "status_code").isdigit() else 302,
        "expiresAt": _expiry(_text(form, "expires_at")),
        "expiredUrl": _optional(form, "expired_url"),
        "ogTitle": _optional(form, "og_title"),
        "ogDescription": _optional(form, "og_description"),
        "ogImage": _optional(form, "og_image"),
        "forwardQuery": form.get("forward_query") == "on",
        "archived": form.get("archived") == "on",
    }
    for name in UTM_FIELDS:
        data[name] = _optional(form, name)
    rules: list[dict[str, Any]] = []
    for i in range(MAX_ROWS + 1):
        url, conditions = _text(form, f"rules-{i}-url"), _text(form, f"rules-{i}-conditions")
        if f"rules-{i}-url" not in form:
            continue
        if url or conditions:
            rules.append({"url": url, "conditions": parse_conditions(conditions, f"rules[{len(rules)}].conditions")})
    data["rules"] = rules
    split: list[dict[str, Any]] = []
    weights: list[int] = []
    for i in range(5):
        url, weight = _text(form, f"split-{i}-url"), _text(form, f"split-{i}-weight")
        if url or weight:
            if not weight.isdigit():
                raise field_error(f"split[{len(split)}].weight", "a weight is a whole number from 1 to 99")
            weights.append(int(weight))
            split.append({"url": url, "weight": int(weight)})
    if split and sum(weights) != 100:
        raise field_error("split", f"the weights total {sum(weights)}; they must total 100")
    data["split"] = split
    password = form.get("password")
    if isinstance(password, str) and password:
        data["password"] = password
    elif editing and form.get("remove_password") == "on":
        data["password"] = None
    if not editing:  # a new link: an absent optional field is simply not sent
        data = {k: v for k, v in data.items() if v is not None}
    elif data["slug"] is None:
        del data["slug"]  # an emptied slug keeps the current one
    if editing and data.get("domain") is None:
        data.pop("domain", None)
    return data


def values_of(link: Link | None, form: FormData | None) -> dict[str, Any]:
    """What the form's inputs show: the posted values after an error, else the link's, else blanks."""
    if form is not None:
        rules = []
        for i in range(MAX_ROWS + 1):
            if f"rules-{i}-url" in form:
                rules.append({"url": _text(form, f"rules-{i}-url"), "conditions": _text(form, f"rules-{i}-conditions")})
        split = [
            {"url": _text(form, f"split-{i}-url"), "weight": _text(form, f"split-{i}-weight")}
            for i in range(5)
            if _text(form, f"split-{i}-url") or _text(form, f"split-{i}-weight")
        ]
        values: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str)}
        values.update(
            tag_ids=[v for v in form.getlist("tag_ids") if isinstance(v, str)],
            rules=rules,
            split=split,
            forward_query=form.get("forward_query") == "on",
            archived=form.get("archived") == "on",
        )
        return values
    if link is None:
        return {"forward_query": True, "status_code": "302", "tag_ids": [], "rules": [], "split": []}
    values = {
        "url": link.url,
        "slug": link.slug,
        "domain": link.domain,
        "title": link.title or "",
        "tag_ids": link.tag_ids,
        "folder_id": link.folder_id or "",
        "status_code": str(link.status_code),
        "expires_at": link.expires_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M") if link.expires_at else "",
        "expired_url": link.expired_url or "",
        "og_title": link.og_title or "",
        "og_description": link.og_description or "",
        "og_image": link.og_image or "",
        "forward_query": link.forward_query,
        "archived": link.archived,
        "rules": [{"url": r.url, "conditions": conditions_text(r)} for r in link.rules],
        "split": [{"url": s.url, "weight": str(s.weight)} for s in link.split],
    }
    for name in UTM_FIELDS:
        values[name] = getattr(link, name) or ""
    return values
