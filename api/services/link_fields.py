"""Turning validated link input into column values: every field rule in one place.

``link_columns`` takes the fields a client set (create: all of them; update: the ones
present) and returns the values to store, or raises one ValidationFailed listing every
problem with its JSON field path. Database checks (slug taken, folder exists) are done by
``api.services.links`` in the write transaction.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC
from typing import Any

import argon2
import asyncpg

from api.errors import ValidationFailed
from api.link_rules import Problem, check_rules, check_split, rules_json, split_json
from api.schemas import LinkCreate, LinkUpdate
from api.services.domains import live_claim
from api.services.plans import Plan, require_feature
from api.urls import UnsafeUrl, check_destination, normalise_domain, slug_problem
from h0p_settings import Settings

# Python attribute -> JSON name, for field paths in errors
JSON_NAMES: dict[str, str] = dict(zip(LinkCreate.__struct_fields__, LinkCreate.__struct_encode_fields__, strict=True))
assert set(LinkUpdate.__struct_fields__) == set(JSON_NAMES)
# Columns of ``links`` written straight from the field of the same name
PLAIN_COLUMNS = (
    "url", "domain", "slug", "external_id", "title", "description", "comments", "folder_id", "status_code",
    "expires_at", "expired_url", "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content",
    "forward_query", "archived", "og_title", "og_description", "og_image",
)  # fmt: skip
_FILE_ID = re.compile(r"^file_[0-9A-Za-z]{10,40}$")
_hasher = argon2.PasswordHasher()


def _check_url(problems: list[dict[str, str]], name: str, value: str | None, settings: Settings) -> str | None:
    """The URL to store (its host in the ASCII form it was checked in), or the problem recorded."""
    if value is None:
        return None
    try:
        return check_destination(value, settings)
    except UnsafeUrl as exc:
        problems.append({"path": JSON_NAMES[name], "message": str(exc)})
        return value


def link_columns(fields: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """Column values for the link fields in ``fields`` (attribute names); ValidationFailed if any is wrong.

    ``rules``/``split`` become JSON text, ``password`` stays as given (hash it with
    ``hash_password``), ``tag_ids`` a de-duplicated list.
    """
    problems: list[dict[str, str]] = []
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if name in ("url", "expired_url"):
            out[name] = _check_url(problems, name, value, settings)
        elif name == "slug":
            if value is not None and (why := slug_problem(value)):
                problems.append({"path": "slug", "message": why})
            out[name] = value
        elif name == "domain":
            out[name] = normalise_domain(value) if value else None
        elif name == "og_image":
            out[name] = value if value is None or _FILE_ID.match(value) else _check_url(problems, name, value, settings)
        elif name == "expires_at":
            if value is not None and value.tzinfo is None:
                value = value.replace(tzinfo=UTC)  # a time without an offset is read as UTC
            out[name] = value
        elif name == "rules":
            try:
                out[name] = rules_json(check_rules(value, settings))
            except Problem as exc:
                problems.append({"path": exc.path, "message": exc.message})
        elif name == "split":
            try:
                out[name] = split_json(check_split(value, settings))
            except Problem as exc:
                problems.append({"path": exc.path, "message": exc.message})
        elif name == "tag_ids":
            out[name] = list(dict.fromkeys(value))
        elif name in ("title", "description", "comments", "external_id") or name.startswith(("utm_", "og_")):
            out[name] = value.strip() or None if isinstance(value, str) else value
        else:
            out[name] = value
    if problems:
        raise ValidationFailed(problems)
    return out


def require_features(plan: Plan, columns: Mapping[str, Any], default_domain: str) -> None:
    """FeatureNotAvailable if the link uses something outside the workspace's plan."""
    if columns.get("rules") not in (None, "[]"):
        require_feature(plan, "routing_rules")
    if columns.get("split") not in (None, "[]"):
        require_feature(plan, "ab_testing")
    if columns.get("password"):
        require_feature(plan, "password_protection")
    if columns.get("expires_at") is not None:
        require_feature(plan, "link_expiration")
    if columns.get("domain") not in (None, default_domain):
        require_feature(plan, "custom_domains")


@functools.cache
def _hash_pool(threads: int) -> ThreadPoolExecutor:
    # One pool per process (settings are built once): at most ``threads`` hashes run at once, each
    # ~50 ms of CPU and 64 MiB; more wait their turn here instead of taking the default executor
    # (shared with DNS look-ups and file I/O) and every core with them.
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="h0p-password-hash")


async def hash_password(password: str, settings: Settings) -> str:
    """argon2id hash of a link password, computed in the bounded hashing pool (off the event loop)."""
    pool = _hash_pool(settings.password_hash_threads)
    return await asyncio.get_running_loop().run_in_executor(pool, _hasher.hash, password)


async def check_references(conn: asyncpg.Connection, workspace_id: str, columns: Mapping[str, Any]) -> None:
    """ValidationFailed if the folder or a tag is not one of the workspace's.

    Called in the writing transaction: FOR KEY SHARE holds the rows found until it commits, so a
    folder or tag deleted meanwhile is either waited for (and then not found here) or kept.
    """
    problems = []
    folder_id = columns.get("folder_id")
    if folder_id is not None:
        found = await conn.fetchval(
            "SELECT 1 FROM folders WHERE id = $1 AND workspace_id = $2 FOR KEY SHARE", folder_id, workspace_id
        )
        if not found:
            problems.append({"path": "folderId", "message": f"no folder {folder_id!r} in this workspace"})
    tag_ids = columns.get("tag_ids") or []
    if tag_ids:
        known = {
            r["id"]
            for r in await conn.fetch(
                "SELECT id FROM tags WHERE workspace_id = $1 AND id = ANY($2::text[]) FOR KEY SHARE",
                workspace_id,
                tag_ids,
            )
        }
        for i, tag_id in enumerate(tag_ids):
            if tag_id not in known:
                problems.append({"path": f"tagIds[{i}]", "message": f"no tag {tag_id!r} in this workspace"})
    if problems:
        raise ValidationFailed(problems)


async def check_domain(conn: asyncpg.Connection, workspace_id: str, domain: str, settings: Settings) -> None:
    """ValidationFailed unless ``domain`` is the default domain or one of the workspace's domains."""
    if domain == settings.default_domain:
        return
    # FOR SHARE: a verification by another workspace, which drops this claim and its links, waits
    # for this link's transaction and then drops the link too.
    found = await conn.fetchval(
        f"SELECT 1 FROM domains d WHERE hostname = $1 AND workspace_id = $2 AND {live_claim('d', settings)} FOR SHARE",
        domain,
        workspace_id,
    )
    if not found:
        raise ValidationFailed([{"path": "domain", "message": f"{domain!r} is not a domain of this workspace"}])
