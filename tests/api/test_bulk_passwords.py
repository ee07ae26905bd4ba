"""A bulk create cannot buy unbounded CPU: passwords per request are capped, hashing runs in a bounded pool."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import argon2
import httpx
import pytest

from api.errors import ValidationFailed
from api.schemas import LinkCreate
from api.services import links
from api.services.context import ServiceContext
from api.services.link_fields import hash_password
from api.services.workspaces import Workspace


def _items(n_passwords: int, n_plain: int = 0, tag: str = "") -> list[dict[str, str]]:
    out = [{"url": f"https://example.com/p{i}", "slug": f"bp{tag}-{i}", "password": "pw"} for i in range(n_passwords)]
    return [{"url": "https://example.com/plain", "slug": f"bp{tag}-plain-{i}"} for i in range(n_plain)] + out


async def test_a_bulk_with_more_passwords_than_the_cap_is_refused_and_creates_nothing(
    api: httpx.AsyncClient, ctx: ServiceContext, workspace: Workspace
) -> None:
    cap = ctx.settings.bulk_passwords_max
    r = await api.post("/links/bulk", json=_items(cap + 1, n_plain=2, tag="over"))
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["details"][0]["path"] == f"[{cap + 2}].password"  # the first password past the cap
    assert await ctx.pool.fetchval("SELECT count(*) FROM links WHERE workspace_id = $1", workspace.id) == 0


async def test_a_bulk_with_passwords_up_to_the_cap_creates_them_all(
    api: httpx.AsyncClient, ctx: ServiceContext
) -> None:
    cap = ctx.settings.bulk_passwords_max
    r = await api.post("/links/bulk", json=_items(cap, n_plain=3, tag="fits"))
    assert r.status_code == 200
    assert [item["passwordProtected"] for item in r.json()] == [False] * 3 + [True] * cap


async def test_the_service_refuses_the_same_bulk_for_mcp_and_the_cli(ctx: ServiceContext, workspace: Workspace) -> None:
    strict = dataclasses.replace(ctx, settings=dataclasses.replace(ctx.settings, bulk_passwords_max=1))
    items = [LinkCreate(url=f"https://example.com/{p}", password=p) for p in ("a", "b")]
    with pytest.raises(ValidationFailed) as info:
        await links.bulk_create_links(strict, workspace.id, items)
    assert info.value.details is not None and [d["path"] for d in info.value.details] == ["[1].password"]
    assert await ctx.pool.fetchval("SELECT count(*) FROM links WHERE workspace_id = $1", workspace.id) == 0


async def test_password_hashing_runs_on_at_most_the_configured_threads(ctx: ServiceContext) -> None:
    threads = ctx.settings.password_hash_threads
    hashes = await asyncio.gather(*(hash_password(f"pw{i}", ctx.settings) for i in range(threads * 3)))
    assert all(argon2.PasswordHasher().verify(h, f"pw{i}") for i, h in enumerate(hashes))
    hashing = [t for t in threading.enumerate() if t.name.startswith("h0p-password-hash")]
    assert 1 <= len(hashing) <= threads
