"""Tools for webhooks: list, create, update, delete endpoints, and read their deliveries."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from api.mcp.spec import ToolSpec
from api.schemas import Deleted, PageQuery
from api.services import webhooks
from api.services.context import ServiceContext
from api.services.keys import Principal
from api.webhook_schemas import (
    DeliveryList,
    DeliveryListQuery,
    Webhook,
    WebhookCreate,
    WebhookList,
    WebhookUpdate,
    WebhookWithSecret,
)

WebhookId = Annotated[str, Meta(min_length=1, max_length=100, examples=["wh_01JD5X7Q2M8V4N6P0R3S5T7W9Y"])]
_EVENTS = "link.created, link.updated, link.deleted, link.clicked, domain.verified"


class WebhookIdArgs(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A webhook by id."""

    id: WebhookId


class UpdateWebhookArgs(WebhookUpdate, kw_only=True):
    """The webhook's ``id`` plus the fields to change."""

    id: WebhookId


class DeliveriesArgs(DeliveryListQuery, kw_only=True):
    """The webhook's ``id``, an optional ``status`` and the page."""

    id: WebhookId


async def _list(ctx: ServiceContext, who: Principal, args: PageQuery) -> WebhookList:
    return await webhooks.list_webhooks(ctx, who.workspace_id, args)


async def _create(ctx: ServiceContext, who: Principal, args: WebhookCreate) -> WebhookWithSecret:
    return await webhooks.create_webhook(ctx, who.workspace_id, args)


async def _update(ctx: ServiceContext, who: Principal, args: UpdateWebhookArgs) -> Webhook:
    fields = {f: getattr(args, f) for f in WebhookUpdate.__struct_fields__}
    return await webhooks.update_webhook(ctx, who.workspace_id, args.id, WebhookUpdate(**fields))


async def _delete(ctx: ServiceContext, who: Principal, args: WebhookIdArgs) -> Deleted:
    await webhooks.delete_webhook(ctx, who.workspace_id, args.id)
    return Deleted(id=args.id)


async def _deliveries(ctx: ServiceContext, who: Principal, args: DeliveriesArgs) -> DeliveryList:
    query = DeliveryListQuery(status=args.status, page=args.page, limit=args.limit)
    return await webhooks.list_deliveries(ctx, who.workspace_id, args.id, query)


WEBHOOK_TOOLS: list[ToolSpec] = [
    ToolSpec(
        name="list_webhooks",
        title="List webhooks",
        description="List the workspace's webhook endpoints, newest first (secrets are not shown). "
        "`page` from 0, `limit` up to 50; returns {data, page, limit, total}.",
        example='{"limit": 50}',
        route="GET /webhooks",
        scope="webhooks:read",
        args=PageQuery,
        run=_list,
        output=WebhookList,
        read_only=True,
    ),
    ToolSpec(
        name="create_webhook",
        title="Create a webhook",
        description=(
            f"Send events to `url` (public http(s)). `events`: any of {_EVENTS}. `linkIds`, `folderIds`, "
            "`tagIds` narrow the links whose events are sent (none: all); `includeBots` adds bot clicks to "
            "link.clicked. Returns the webhook with its signing `secret` (whsec_…), shown only now: "
            "receivers verify the Standard Webhooks signature with it."
        ),
        example='{"url": "https://hooks.example.com/h0p", "events": ["link.created", "link.clicked"]}',
        route="POST /webhooks",
        scope="webhooks:write",
        args=WebhookCreate,
        run=_create,
        output=WebhookWithSecret,
    ),
    ToolSpec(
        name="update_webhook",
        title="Update a webhook",
        description="Change fields of the webhook `id` (only those given). `disabled: true` stops it and its "
        "pending deliveries at once; `disabled: false` re-enables it.",
        example='{"id": "wh_01JD5X7Q2M8V4N6P0R3S5T7W9Y", "disabled": true}',
        route="PATCH /webhooks/{id}",
        scope="webhooks:write",
        args=UpdateWebhookArgs,
        run=_update,
        output=Webhook,
        idempotent=True,
    ),
    ToolSpec(
        name="delete_webhook",
        title="Delete a webhook",
        description="Delete the webhook `id` and its delivery log; nothing more is sent to it.",
        example='{"id": "wh_01JD5X7Q2M8V4N6P0R3S5T7W9Y"}',
        route="DELETE /webhooks/{id}",
        scope="webhooks:write",
        args=WebhookIdArgs,
        run=_delete,
        output=Deleted,
        destructive=True,
        idempotent=True,
    ),
    ToolSpec(
        name="list_webhook_deliveries",
        title="List a webhook's deliveries",
        description="The deliveries of the webhook `id`, newest first, each with its attempts (HTTP status or "
        "error, duration, start of the answer), `state` (pending, delivered, failed) and next attempt. "
        "Filter with `status`.",
        example='{"id": "wh_01JD5X7Q2M8V4N6P0R3S5T7W9Y", "status": "failed"}',
        route="GET /webhooks/{id}/deliveries",
        scope="webhooks:read",
        args=DeliveriesArgs,
        run=_deliveries,
        output=DeliveryList,
        read_only=True,
    ),
]
