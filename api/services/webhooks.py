"""Webhooks: endpoints (create, list, update, delete, rotate the secret), test and retry, and the outbox.

Link and domain writes call ``record_event`` inside their transaction: an event row is written
only if the workspace has an enabled endpoint for its type, and ``h0p webhooks`` turns it into
deliveries (``webhooks/``). Deliveries are the delivery process's log; this module reads it
and sends at once for ``test`` and ``retry``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import msgspec

from api.errors import NotFound, field_error
from api.ids import new_id
from api.schemas import PageQuery
from api.services.context import ServiceContext
from api.services.plans import get_plan, require_below, require_feature
from api.urls import UnsafeUrl, check_destination
from api.webhook_schemas import (
    Delivery,
    DeliveryAttempt,
    DeliveryList,
    DeliveryListQuery,
    PingData,
    Webhook,
    WebhookCreate,
    WebhookList,
    WebhookUpdate,
    WebhookWithSecret,
)
from webhooks import sender
from webhooks.outbound import RefusedTarget, Unresolvable, check_addresses, delivery_session, resolve
from webhooks.signing import new_secret

ROTATION_OVERLAP_S = 24 * 3600

_COLUMNS = (
    "id, name, url, events, link_ids, folder_ids, tag_ids, include_bots, disabled, disabled_reason, disabled_at,"
    " failing_since, CASE WHEN previous_secret_until > now() THEN previous_secret_until END AS previous_until,"
    " created_at, updated_at, secret"
)
_DELIVERY_COLUMNS = "id, webhook_id, event_type, state, attempts::text AS attempts, next_attempt_at, created_at"
_attempts_decoder = msgspec.json.Decoder(list[DeliveryAttempt])


def _webhook(row: asyncpg.Record) -> Webhook:
    return Webhook(
        id=row["id"],
        name=row["name"],
        url=row["url"],
        events=list(row["events"]),
        link_ids=list(row["link_ids"]),
        folder_ids=list(row["folder_ids"]),
        tag_ids=list(row["tag_ids"]),
        include_bots=row["include_bots"],
        disabled=row["disabled"],
        disabled_reason=row["disabled_reason"],
        disabled_at=row["disabled_at"],
        failing_since=row["failing_since"],
        previous_secret_expires_at=row["previous_until"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _with_secret(row: asyncpg.Record) -> WebhookWithSecret:
    return WebhookWithSecret(**msgspec.structs.asdict(_webhook(row)), secret=row["secret"])


def _delivery(row: asyncpg.Record) -> Delivery:
    return Delivery(
        id=row["id"],
        webhook_id=row["webhook_id"],
        event_type=row["event_type"],
        state=row["state"],
        attempts=_attempts_decoder.decode(row["attempts"]),
        next_attempt_at=row["next_attempt_at"] if row["state"] == "pending" else None,
        created_at=row["created_at"],
    )


async def check_endpoint_url(ctx: ServiceContext, url: str) -> None:
    """VALIDATION_ERROR unless deliveries may go to ``url``: http(s), public host, every address public.

    A name that does not resolve (yet) is accepted; each delivery checks again at connect time.
    """
    try:
        check_destination(url, ctx.settings)
    except UnsafeUrl as exc:
        raise field_error("url", str(exc)) from None
    split = urlsplit(url)
    host = split.hostname or ""
    try:
        addresses = await resolve(host, split.port or 443, ctx.settings)
    except RefusedTarget as exc:
        raise field_error("url", str(exc)) from None
    except Unresolvable:  # not now: checked again at every connect
        return
    try:
        check_addresses(host, addresses, ctx.settings)
    except RefusedTarget as exc:
        raise field_error("url", str(exc)) from None


async def _check_scope_ids(conn: asyncpg.Connection, workspace_id: str, columns: dict[str, Any]) -> None:
    for key, table, path in (("link_ids", "links", "linkIds"), ("folder_ids", "folders", "folderIds"),
                             ("tag_ids", "tags", "tagIds")):  # fmt: skip
        ids = columns.get(key)
        if not ids:
            continue
        found = {
            r["id"]
            for r in await conn.fetch(
                f"SELECT id FROM {table} WHERE workspace_id = $1 AND id = ANY($2::text[])", workspace_id, ids
            )
        }
        missing = [i for i in ids if i not in found]
        if missing:
            raise field_error(path, f"not in this workspace: {', '.join(missing[:5])}")


async def _require_feature(conn: asyncpg.Connection, ctx: ServiceContext, workspace_id: str) -> None:
    plan_name = await conn.fetchval("SELECT plan FROM workspaces WHERE id = $1", workspace_id)
    if plan_name is None:
        raise NotFound("workspace not found")
    require_feature(get_plan(ctx.settings, plan_name), "webhooks")


async def create_webhook(ctx: ServiceContext, workspace_id: str, data: WebhookCreate) -> WebhookWithSecret:
    """A new endpoint and its secret (shown only here and on rotation)."""
    async with ctx.pool.acquire() as conn:
        await _require_feature(conn, ctx, workspace_id)
        await check_endpoint_url(ctx, data.url)
        columns = {"link_ids": data.link_ids, "folder_ids": data.folder_ids, "tag_ids": data.tag_ids}
        await _check_scope_ids(conn, workspace_id, columns)
        webhook_id = new_id("wh")
        async with conn.transaction():
            await conn.execute("SELECT 1 FROM workspaces WHERE id = $1 FOR UPDATE", workspace_id)
            used = await conn.fetchval("SELECT count(*) FROM webhooks WHERE workspace_id = $1", workspace_id)
            plan = get_plan(
                ctx.settings, await conn.fetchval("SELECT plan FROM workspaces WHERE id = $1", workspace_id)
            )
            require_below(plan, "webhooks", ctx.settings.webhooks_per_workspace, used)
            row = await conn.fetchrow(
                "INSERT INTO webhooks (id, workspace_id, name, url, events, link_ids, folder_ids, tag_ids,"
                " include_bots, disabled, disabled_reason, disabled_at, secret)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, CASE WHEN $10 THEN 'disabled by a user' END,"
                " CASE WHEN $10 THEN now() END, $11)"
                f" RETURNING {_COLUMNS}",
                webhook_id,
                workspace_id,
                data.name.strip(),
                data.url,
                sorted(set(data.events)),
                data.link_ids,
                data.folder_ids,
                data.tag_ids,
                data.include_bots,
                data.disabled,
                new_secret(),
            )
    return _with_secret(row)


async def _row(conn: asyncpg.Connection | asyncpg.Pool, workspace_id: str, webhook_id: str) -> asyncpg.Record:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM webhooks WHERE id = $1 AND workspace_id = $2", webhook_id, workspace_id
    )
    if row is None:
        raise NotFound(f"webhook {webhook_id!r} not found")
    return row


async def get_webhook(ctx: ServiceContext, workspace_id: str, webhook_id: str) -> Webhook:
    """One of the workspace's endpoints; NotFound otherwise."""
    return _webhook(await _row(ctx.pool, workspace_id, webhook_id))


async def list_webhooks(ctx: ServiceContext, workspace_id: str, page: PageQuery) -> WebhookList:
    """The workspace's endpoints, newest first."""
    total = await ctx.pool.fetchval("SELECT count(*) FROM webhooks WHERE workspace_id = $1", workspace_id)
    rows = await ctx.pool.fetch(
        f"SELECT {_COLUMNS} FROM webhooks WHERE workspace_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3",
        workspace_id,
        page.limit,
        page.page * page.limit,
    )
    return WebhookList(data=[_webhook(r) for r in rows], page=page.page, limit=page.limit, total=total)


async def update_webhook(ctx: ServiceContext, workspace_id: str, webhook_id: str, data: WebhookUpdate) -> Webhook:
    """Change the fields present; ``disabled: true`` stops the pending deliveries at once."""
    fields = {f: v for f in data.__struct_fields__ if (v := getattr(data, f)) is not msgspec.UNSET}
    async with ctx.pool.acquire() as conn:
        await _row(conn, workspace_id, webhook_id)
        if "url" in fields:
            await check_endpoint_url(ctx, fields["url"])
        await _check_scope_ids(conn, workspace_id, fields)
        if "events" in fields:
            fields["events"] = sorted(set(fields["events"]))
        if "name" in fields:
            fields["name"] = fields["name"].strip()
        disabled = fields.pop("disabled", None)
        async with conn.transaction():
            if fields:
                sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(fields, 3))
                await conn.execute(
                    f"UPDATE webhooks SET {sets}, updated_at = now() WHERE id = $1 AND workspace_id = $2",
                    webhook_id,
                    workspace_id,
                    *fields.values(),
                )
            if disabled is True:
                await sender.disable_webhooks(conn, [webhook_id], "disabled by a user")
            elif disabled is False:
                await _enable(conn, webhook_id)
        return _webhook(await _row(conn, workspace_id, webhook_id))


async def _enable(conn: asyncpg.Connection, webhook_id: str) -> None:
    await conn.execute(
        "UPDATE webhooks SET disabled = false, disabled_reason = NULL, disabled_at = NULL, failing_since = NULL,"
        " updated_at = now() WHERE id = $1 AND disabled",
        webhook_id,
    )


async def delete_webhook(ctx: ServiceContext, workspace_id: str, webhook_id: str) -> None:
    """Delete an endpoint; its deliveries go with it (nothing more is sent)."""
    done = await ctx.pool.fetchval(
        "DELETE FROM webhooks WHERE id = $1 AND workspace_id = $2 RETURNING id", webhook_id, workspace_id
    )
    if done is None:
        raise NotFound(f"webhook {webhook_id!r} not found")


async def rotate_secret(ctx: ServiceContext, workspace_id: str, webhook_id: str) -> WebhookWithSecret:
    """A new secret; the current one keeps signing beside it for 24 hours."""
    row = await ctx.pool.fetchrow(
        "UPDATE webhooks SET previous_secret = secret, previous_secret_until = now() + make_interval(secs => $3),"
        f" secret = $4, updated_at = now() WHERE id = $1 AND workspace_id = $2 RETURNING {_COLUMNS}",
        webhook_id,
        workspace_id,
        float(ROTATION_OVERLAP_S),
        new_secret(),
    )
    if row is None:
        raise NotFound(f"webhook {webhook_id!r} not found")
    return _with_secret(row)


async def _delivery_row(ctx: ServiceContext, workspace_id: str, webhook_id: str, delivery_id: str) -> asyncpg.Record:
    row = await ctx.pool.fetchrow(
        f"SELECT {', '.join('d.' + c for c in _DELIVERY_COLUMNS.split(', '))}"
        " FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id"
        " WHERE d.id = $1 AND d.webhook_id = $2 AND w.workspace_id = $3",
        delivery_id,
        webhook_id,
        workspace_id,
    )
    if row is None:
        raise NotFound(f"delivery {delivery_id!r} not found")
    return row


async def _send_now(ctx: ServiceContext, delivery_id: str, leased: bool = False) -> None:
    async with delivery_session(ctx.settings, max_connections=1) as session:
        await sender.send_now(ctx.pool, session, delivery_id, ctx.settings, leased)


async def test_webhook(ctx: ServiceContext, workspace_id: str, webhook_id: str) -> Delivery:
    """Send a ``ping`` now and return its delivery; a success re-enables a disabled endpoint."""
    await _row(ctx.pool, workspace_id, webhook_id)
    delivery_id = new_id("msg")
    data = msgspec.json.encode(PingData(webhook_id=webhook_id))
    body = sender.envelope("ping", datetime.now(UTC), data)
    await ctx.pool.execute(
        # leased on insert: a delivery process must not send this ping while the API does
        "INSERT INTO webhook_deliveries (id, webhook_id, event_type, body, next_attempt_at, leased_until)"
        " VALUES ($1, $2, 'ping', $3, now(), now() + make_interval(secs => $4))",
        delivery_id,
        webhook_id,
        body.decode(),
        sender.lease_seconds(ctx.settings),
    )
    await _send_now(ctx, delivery_id, leased=True)
    row = await _delivery_row(ctx, workspace_id, webhook_id, delivery_id)
    if row["state"] == "delivered":
        async with ctx.pool.acquire() as conn:
            await _enable(conn, webhook_id)
    return _delivery(row)


async def retry_delivery(ctx: ServiceContext, workspace_id: str, webhook_id: str, delivery_id: str) -> Delivery:
    """Send the delivery again now (same ``webhook-id``); if a sender has it in flight, that attempt stands."""
    await _delivery_row(ctx, workspace_id, webhook_id, delivery_id)
    await _send_now(ctx, delivery_id)
    return _delivery(await _delivery_row(ctx, workspace_id, webhook_id, delivery_id))


async def list_deliveries(
    ctx: ServiceContext, workspace_id: str, webhook_id: str, query: DeliveryListQuery
) -> DeliveryList:
    """The endpoint's deliveries, newest first, optionally of one state."""
    await _row(ctx.pool, workspace_id, webhook_id)
    where = "webhook_id = $1 AND ($2::text IS NULL OR state = $2)"
    total = await ctx.pool.fetchval(f"SELECT count(*) FROM webhook_deliveries WHERE {where}", webhook_id, query.status)
    rows = await ctx.pool.fetch(
        f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries WHERE {where}"
        " ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4",
        webhook_id,
        query.status,
        query.limit,
        query.page * query.limit,
    )
    return DeliveryList(data=[_delivery(r) for r in rows], page=query.page, limit=query.limit, total=total)


# --- the outbox ---------------------------------------------------------------------------

_RECORD_EVENT_SQL = """
INSERT INTO webhook_events (workspace_id, type, link_id, data)
SELECT $1, $2, $3, $4::jsonb
WHERE EXISTS (SELECT 1 FROM webhooks WHERE workspace_id = $1 AND NOT disabled AND $2 = ANY(events))
"""


async def record_event(
    conn: asyncpg.Connection, workspace_id: str, event_type: str, data: msgspec.Struct, link_id: str | None = None
) -> None:
    """Record an event in the caller's transaction (nothing when no enabled endpoint wants this type)."""
    await conn.execute(_RECORD_EVENT_SQL, workspace_id, event_type, link_id, msgspec.json.encode(data).decode())
