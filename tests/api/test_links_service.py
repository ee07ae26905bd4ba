"""The links service against real Postgres and Redis: field rules, write-through, errors."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import argon2
import msgspec
import pytest
import redis.asyncio as aioredis

from api.errors import AlreadyExists, FeatureNotAvailable, NotFound, PlanLimitReached, ValidationFailed, from_msgspec
from api.ids import new_id
from api.schemas import LinkCreate, LinkUpdate
from api.services import links as links_service
from api.services.context import ServiceContext
from api.services.links import create_link, delete_link, get_link, update_link
from api.services.workspaces import Workspace, get_or_create_workspace, set_plan
from redirect.record import NEGATIVE, decode_link, link_key
from tests.api.conftest import raw


def new(**fields: Any) -> LinkCreate:
    return msgspec.convert({"url": "https://example.com/page", **fields}, LinkCreate)


def problem_paths(exc: ValidationFailed) -> list[str | None]:
    return [d.get("path") for d in exc.details or []]


async def refused_paths(ctx: ServiceContext, workspace: Workspace, **fields: Any) -> list[str | None]:
    """The field paths of a refused create, whether the schema (as a route decodes it) or the service refuses."""
    try:
        await create_link(ctx, workspace.id, new(**fields))
    except msgspec.ValidationError as exc:
        return problem_paths(from_msgspec(exc))
    except ValidationFailed as exc:
        return problem_paths(exc)
    raise AssertionError(f"accepted: {fields}")


async def add_domain(ctx: ServiceContext, workspace: Workspace, hostname: str) -> None:
    await ctx.pool.execute(
        "INSERT INTO domains (id, workspace_id, hostname, verification_token, verified_at)"
        " VALUES ($1, $2, $3, 'token', now())",
        new_id("dom"),
        workspace.id,
        hostname,
    )


async def test_created_link_has_a_7_char_base62_slug_and_short_url(ctx: ServiceContext, workspace: Workspace) -> None:
    link = await create_link(ctx, workspace.id, new())
    assert re.fullmatch(r"[0-9A-Za-z]{7}", link.slug)
    assert link.domain == ctx.settings.default_domain
    assert link.short_url == ctx.settings.short_url(link.domain, link.slug)
    assert link.id.startswith("link_")
    assert link.status_code == 302 and link.clicks == 0 and link.tag_ids == []


async def test_created_link_record_is_in_redis_for_the_edge(
    ctx: ServiceContext, workspace: Workspace, redis: aioredis.Redis
) -> None:
    link = await create_link(
        ctx,
        workspace.id,
        new(
            slug="rec-1",
            statusCode=301,
            utm_source="news",
            rules=[{"conditions": [{"type": "country", "value": ["fr", "BE"]}], "url": "https://example.fr/"}],
            split=[{"url": "https://a.example.com/", "weight": 30}, {"url": "https://b.example.com/", "weight": 70}],
        ),
    )
    record = decode_link(await raw(redis, link_key(link.domain, "rec-1")))
    assert record is not None
    assert (record.link_id, record.workspace_id, record.url, record.status_code) == (
        link.id,
        workspace.id,
        "https://example.com/page",
        301,
    )
    assert record.rule_table is not None  # countries normalised to ISO upper case, indexed for the edge
    assert set(record.rule_table.facts["country"]) == {"FR", "BE"}
    assert [r.url for r in record.rules] == ["https://example.fr/"]
    assert [t.weight for t in record.split] == [30, 70]
    assert record.utm == (("utm_source", "news"),)
    assert 0 < await redis.ttl(link_key(link.domain, "rec-1")) <= 7 * 24 * 3600


async def test_creating_a_link_replaces_a_cached_negative_entry_and_publishes_the_key(
    ctx: ServiceContext, workspace: Workspace, redis: aioredis.Redis
) -> None:
    key = link_key(ctx.settings.default_domain, "was-missing")
    await redis.set(key, NEGATIVE, ex=60)
    pubsub = redis.pubsub()
    await pubsub.subscribe(ctx.settings.invalidation_channel)
    await pubsub.get_message(timeout=1.0)  # the subscribe confirmation
    await create_link(ctx, workspace.id, new(slug="was-missing"))
    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2.0)
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    assert message is not None and message["data"] == key.encode()
    assert decode_link(await raw(redis, key)) is not None


async def test_duplicate_slug_on_the_same_domain_is_already_exists(ctx: ServiceContext, workspace: Workspace) -> None:
    await create_link(ctx, workspace.id, new(slug="Dup"))
    with pytest.raises(AlreadyExists):
        other = await get_or_create_workspace(ctx, f"{workspace.name}-other")
        await create_link(ctx, other.id, new(slug="Dup"))
    # slugs are case-sensitive: another case is another link
    assert (await create_link(ctx, workspace.id, new(slug="dup"))).slug == "dup"


async def test_same_slug_on_another_domain_is_allowed(ctx: ServiceContext, workspace: Workspace) -> None:
    host = f"go{workspace.id.lower()[-8:]}.example.com"
    await add_domain(ctx, workspace, host)
    await create_link(ctx, workspace.id, new(slug="same"))
    link = await create_link(ctx, workspace.id, new(slug="same", domain=host.upper()))
    assert link.domain == host


async def test_a_domain_of_another_workspace_is_refused(ctx: ServiceContext, workspace: Workspace) -> None:
    other = await get_or_create_workspace(ctx, f"{workspace.name}-owner")
    host = f"theirs{other.id.lower()[-8:]}.example.com"
    await add_domain(ctx, other, host)
    with pytest.raises(ValidationFailed) as caught:
        await create_link(ctx, workspace.id, new(domain=host))
    assert problem_paths(caught.value) == ["domain"]


async def test_generated_slug_retries_after_a_collision(
    ctx: ServiceContext, workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = await create_link(ctx, workspace.id, new())
    candidates = iter([taken.slug, taken.slug, "Fresh42"])
    monkeypatch.setattr(links_service, "random_slug", lambda length=7: next(candidates))
    link = await create_link(ctx, workspace.id, new())
    assert link.slug == "Fresh42"


@pytest.mark.parametrize("slug", ["healthz", "readyz", "metrics", "api", "API", "doc", "ui", "mcp", "_h0p"])
async def test_reserved_slugs_are_refused(ctx: ServiceContext, workspace: Workspace, slug: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await create_link(ctx, workspace.id, new(slug=slug))
    assert problem_paths(caught.value) == ["slug"]


@pytest.mark.parametrize("slug", ["a b", "a/b", "é", "x.y", "a%20", "a" * 191, ""])
async def test_malformed_slugs_are_refused(ctx: ServiceContext, workspace: Workspace, slug: str) -> None:
    assert await refused_paths(ctx, workspace, slug=slug) == ["slug"]


async def test_a_190_char_slug_with_dash_and_underscore_is_accepted(ctx: ServiceContext, workspace: Workspace) -> None:
    slug = ("a-B_9" * 38)[:190]
    assert (await create_link(ctx, workspace.id, new(slug=slug))).slug == slug


UNSAFE = [
    "http://127.1/",
    "http://2130706433/",
    "http://0x7f.0.0.1/",
    "http://017700000001/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::1]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/",
    "http://10.0.0.1/",
    "http://192.168.1.1/",
    "http://localhost:8080/",
    "http://printer.local/",
    "http://intranet/",
    "javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "ftp://example.com/file",
    "//example.com/relative",
    "/relative/path",
    "https://user:pass@example.com/",
    "https://user@example.com/",
    "https://exa mple.com/",
    "https://example.com/" + "a" * 2100,
]


@pytest.mark.parametrize("url", UNSAFE)
async def test_unsafe_destinations_are_refused(ctx: ServiceContext, workspace: Workspace, url: str) -> None:
    assert await refused_paths(ctx, workspace, url=url) == ["url"]


async def test_unsafe_urls_are_refused_in_rules_split_and_expired_url(
    ctx: ServiceContext, workspace: Workspace
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await create_link(
            ctx,
            workspace.id,
            new(
                rules=[{"conditions": [{"type": "os", "value": "iOS"}], "url": "http://127.1/"}],
                split=[{"url": "http://10.1.1.1/", "weight": 50}, {"url": "https://ok.example.com/", "weight": 50}],
                expiredUrl="javascript:alert(1)",
            ),
        )
    assert set(problem_paths(caught.value)) == {"rules[0].url", "split[0].url", "expiredUrl"}


async def test_private_targets_are_allowed_when_the_setting_says_so(ctx: ServiceContext, workspace: Workspace) -> None:
    intranet = ServiceContext(dataclasses.replace(ctx.settings, allow_private_targets=True), ctx.pool, ctx.redis)
    link = await create_link(intranet, workspace.id, new(url="http://10.0.0.5:8080/wiki"))
    assert link.url == "http://10.0.0.5:8080/wiki"


async def test_blocked_hosts_and_their_subdomains_are_refused(ctx: ServiceContext, workspace: Workspace) -> None:
    blocking = ServiceContext(dataclasses.replace(ctx.settings, blocked_hosts=("evil.example",)), ctx.pool, ctx.redis)
    for url in ("https://evil.example/", "https://www.EVIL.example/x"):
        assert await refused_paths(blocking, workspace, url=url) == ["url"]
    assert (await create_link(blocking, workspace.id, new(url="https://notevil.example/"))).url


@pytest.mark.parametrize(
    ("condition", "path"),
    [
        ({"type": "country", "value": "XX"}, "rules[0].conditions[0].value"),
        ({"type": "country", "value": ["FR", "France"]}, "rules[0].conditions[0].value[1]"),
        ({"type": "device", "value": "fridge"}, "rules[0].conditions[0].value"),
        ({"type": "ip", "value": "10.0.0.0/33"}, "rules[0].conditions[0].value"),
        ({"type": "ip", "value": "not-an-ip"}, "rules[0].conditions[0].value"),
        ({"type": "before", "value": "next tuesday"}, "rules[0].conditions[0].value"),
        ({"type": "after", "value": ["2030-01-01", "2031-01-01"]}, "rules[0].conditions[0].value"),
        ({"type": "language", "value": "french!"}, "rules[0].conditions[0].value"),
        ({"type": "referrer", "value": "https://x.com/path"}, "rules[0].conditions[0].value"),
        ({"type": "query"}, "rules[0].conditions[0].key"),
        ({"type": "os", "key": "x", "value": "iOS"}, "rules[0].conditions[0].key"),
        ({"type": "os"}, "rules[0].conditions[0].value"),
        ({"type": "city", "value": "  "}, "rules[0].conditions[0].value"),
    ],
)
async def test_invalid_rule_conditions_are_refused_with_their_path(
    ctx: ServiceContext, workspace: Workspace, condition: dict[str, Any], path: str
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await create_link(ctx, workspace.id, new(rules=[{"conditions": [condition], "url": "https://x.example.com/"}]))
    assert problem_paths(caught.value) == [path]


async def test_every_condition_type_is_stored_in_the_agreed_json_shape(
    ctx: ServiceContext, workspace: Workspace
) -> None:
    conditions = [
        {"type": "device", "value": "Mobile"},
        {"type": "os", "value": "iOS"},
        {"type": "browser", "value": ["Chrome", "Firefox"]},
        {"type": "country", "value": "de"},
        {"type": "city", "value": "Berlin"},
        {"type": "language", "value": "fr-CA"},
        {"type": "query", "key": "ref", "value": "x"},
        {"type": "query", "key": "ref", "not": True},
        {"type": "referrer", "value": "News.YCombinator.com"},
        {"type": "ip", "value": "10.0.0.0/8"},
        {"type": "before", "value": "2030-01-31T12:00:00+01:00"},
        {"type": "after", "value": "2020-01-01T00:00:00Z"},
    ]
    link = await create_link(
        ctx, workspace.id, new(rules=[{"conditions": conditions, "url": "https://r.example.com/"}])
    )
    stored = await ctx.pool.fetchval("SELECT rules::text FROM links WHERE id = $1", link.id)
    assert msgspec.json.decode(stored) == [
        {
            "conditions": [
                {"type": "device", "value": "mobile"},
                {"type": "os", "value": "iOS"},
                {"type": "browser", "value": ["Chrome", "Firefox"]},
                {"type": "country", "value": "DE"},
                {"type": "city", "value": "Berlin"},
                {"type": "language", "value": "fr-CA"},
                {"type": "query", "value": "x", "key": "ref"},
                {"type": "query", "key": "ref", "not": True},
                {"type": "referrer", "value": "news.ycombinator.com"},
                {"type": "ip", "value": "10.0.0.0/8"},
                {"type": "before", "value": "2030-01-31T11:00:00Z"},
                {"type": "after", "value": "2020-01-01T00:00:00Z"},
            ],
            "url": "https://r.example.com/",
        }
    ]


@pytest.mark.parametrize(
    "split",
    [
        [{"url": "https://a.example.com/", "weight": 50}],
        [{"url": "https://a.example.com/", "weight": 50}, {"url": "https://b.example.com/", "weight": 40}],
    ],
)
async def test_a_split_needs_2_to_4_targets_summing_to_100(
    ctx: ServiceContext, workspace: Workspace, split: list[dict[str, Any]]
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await create_link(ctx, workspace.id, new(split=split))
    assert problem_paths(caught.value) == ["split"]


async def test_password_is_stored_as_argon2_hash_and_never_returned(
    ctx: ServiceContext, workspace: Workspace, redis: aioredis.Redis
) -> None:
    link = await create_link(ctx, workspace.id, new(password="s3cret!"))
    assert link.password_protected
    assert b"s3cret!" not in msgspec.json.encode(link)
    stored = await ctx.pool.fetchval("SELECT password_hash FROM links WHERE id = $1", link.id)
    assert stored.startswith("$argon2id$") and argon2.PasswordHasher().verify(stored, "s3cret!")
    record = decode_link(await raw(redis, link_key(link.domain, link.slug)))
    assert record is not None and record.password_hash == stored
    cleared = await update_link(ctx, workspace.id, link.id, LinkUpdate(password=None))
    assert not cleared.password_protected


async def test_update_changes_only_given_fields_and_null_clears(ctx: ServiceContext, workspace: Workspace) -> None:
    link = await create_link(ctx, workspace.id, new(title="Hello", comments="keep me"))
    updated = await update_link(
        ctx, workspace.id, link.id, msgspec.convert({"title": None, "archived": True}, LinkUpdate)
    )
    assert (updated.title, updated.comments, updated.archived) == (None, "keep me", True)
    assert updated.updated_at > link.updated_at


async def test_moving_a_link_to_a_new_slug_frees_the_old_key(
    ctx: ServiceContext, workspace: Workspace, redis: aioredis.Redis
) -> None:
    link = await create_link(ctx, workspace.id, new(slug="old-name"))
    await update_link(ctx, workspace.id, link.id, LinkUpdate(slug="new-name", url="https://example.com/new"))
    assert await redis.get(link_key(link.domain, "old-name")) == NEGATIVE
    record = decode_link(await raw(redis, link_key(link.domain, "new-name")))
    assert record is not None and record.url == "https://example.com/new"


async def test_update_to_a_taken_slug_is_already_exists(ctx: ServiceContext, workspace: Workspace) -> None:
    await create_link(ctx, workspace.id, new(slug="first"))
    second = await create_link(ctx, workspace.id, new(slug="second"))
    with pytest.raises(AlreadyExists):
        await update_link(ctx, workspace.id, second.id, LinkUpdate(slug="first"))
    assert (await get_link(ctx, workspace.id, second.id)).slug == "second"


async def test_deleted_link_is_gone_and_negative_in_redis(
    ctx: ServiceContext, workspace: Workspace, redis: aioredis.Redis
) -> None:
    link = await create_link(ctx, workspace.id, new())
    await delete_link(ctx, workspace.id, link.id)
    with pytest.raises(NotFound):
        await get_link(ctx, workspace.id, link.id)
    assert await redis.get(link_key(link.domain, link.slug)) == NEGATIVE
    assert 0 < await redis.pttl(link_key(link.domain, link.slug)) <= 5000
    with pytest.raises(NotFound):
        await delete_link(ctx, workspace.id, link.id)


async def test_links_of_another_workspace_are_not_found(ctx: ServiceContext, workspace: Workspace) -> None:
    link = await create_link(ctx, workspace.id, new())
    other = await get_or_create_workspace(ctx, f"{workspace.name}-intruder")
    with pytest.raises(NotFound):
        await get_link(ctx, other.id, link.id)
    with pytest.raises(NotFound):
        await update_link(ctx, other.id, link.id, LinkUpdate(title="mine"))
    with pytest.raises(NotFound):
        await delete_link(ctx, other.id, link.id)


async def test_duplicate_external_id_is_already_exists(ctx: ServiceContext, workspace: Workspace) -> None:
    await create_link(ctx, workspace.id, new(externalId="cms-1"))
    with pytest.raises(AlreadyExists) as caught:
        await create_link(ctx, workspace.id, new(externalId="cms-1"))
    assert caught.value.details == [{"path": "externalId", "message": "taken"}]


async def test_unknown_folder_and_tags_are_refused(ctx: ServiceContext, workspace: Workspace) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await create_link(ctx, workspace.id, new(folderId="fold_nope", tagIds=["tag_nope"]))
    assert problem_paths(caught.value) == ["folderId", "tagIds[0]"]


async def test_free_plan_stops_at_its_monthly_link_limit(ctx: ServiceContext, workspace: Workspace) -> None:
    await set_plan(ctx, workspace.id, "free")
    for _ in range(25):
        await create_link(ctx, workspace.id, new())
    with pytest.raises(PlanLimitReached):
        await create_link(ctx, workspace.id, new())


async def test_routing_rules_outside_the_plan_are_feature_not_available(
    ctx: ServiceContext, workspace: Workspace
) -> None:
    await set_plan(ctx, workspace.id, "free")
    with pytest.raises(FeatureNotAvailable):
        await create_link(
            ctx,
            workspace.id,
            new(rules=[{"conditions": [{"type": "os", "value": "iOS"}], "url": "https://i.example/"}]),
        )
    with pytest.raises(FeatureNotAvailable):
        await create_link(ctx, workspace.id, new(password="x"))
