"""Webhook routes: endpoints, secret rotation, test, deliveries and retry, and example event bodies."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from api.endpoints import Call, Endpoint
from api.schemas import Deleted, Domain, Link, PageQuery
from api.services import webhooks
from api.webhook_schemas import (
    Click,
    Delivery,
    DeliveryList,
    DeliveryListQuery,
    DomainVerifiedEvent,
    EventExamples,
    LinkClickedData,
    LinkClickedEvent,
    LinkEvent,
    PingData,
    PingEvent,
    Webhook,
    WebhookCreate,
    WebhookList,
    WebhookUpdate,
    WebhookWithSecret,
)

EXAMPLE = {"url": "https://hooks.example.com/h0p", "events": ["link.created", "link.clicked"], "name": "CRM"}
_AT = datetime(2030, 1, 31, 12, 0, tzinfo=UTC)
_LINK = msgspec.convert(
    {
        "id": "link_01JD5X7Q2M8V4N6P0R3S5T7W9Y", "domain": "go.example.com", "slug": "spring",
        "url": "https://example.com/spring-sale", "shortUrl": "https://go.example.com/spring", "rules": [],
        "split": [], "statusCode": 302, "passwordProtected": False, "expiresAt": None, "expiredUrl": None,
        "utm_source": "newsletter", "utm_medium": None, "utm_campaign": None, "utm_term": None,
        "utm_content": None, "forwardQuery": True, "archived": False, "ogTitle": None, "ogDescription": None,
        "ogImage": None, "title": "Spring sale", "description": None, "comments": None, "tagIds": [],
        "folderId": None, "externalId": None, "clicks": 42, "lastClickedAt": _AT, "createdAt": _AT,
        "updatedAt": _AT,
    },
    Link,
)  # fmt: skip
_CLICK = Click(
    id="0193a0e2-7c1f-7d3e-9f7a-2b1c3d4e5f60", timestamp=_AT, url="https://example.com/spring-sale",
    country="DE", region="Berlin", city="Berlin", continent="EU", latitude=52.52, longitude=13.405,
    device="mobile", browser="Mobile Safari", os="iOS", referer="news.ycombinator.com",
    referer_url="https://news.ycombinator.com/", qr=False, bot=False, utm_source="newsletter", utm_medium="",
    utm_campaign="", utm_term="", utm_content="",
)  # fmt: skip
_DOMAIN = Domain(
    id="dom_01JD5X7Q2M8V4N6P0R3S5T7W9Y", domain="go.example.com", verified=True, verified_at=_AT, records=[],
    root_url=None, not_found_url=None, expired_url=None, links=3, created_at=_AT, updated_at=_AT,
)  # fmt: skip
EVENT_EXAMPLES = EventExamples(
    link_created=LinkEvent(type="link.created", timestamp=_AT, data=_LINK),
    link_updated=LinkEvent(type="link.updated", timestamp=_AT, data=_LINK),
    link_deleted=LinkEvent(type="link.deleted", timestamp=_AT, data=_LINK),
    link_clicked=LinkClickedEvent(type="link.clicked", timestamp=_AT, data=LinkClickedData(click=_CLICK, link=_LINK)),
    domain_verified=DomainVerifiedEvent(type="domain.verified", timestamp=_AT, data=_DOMAIN),
    ping=PingEvent(type="ping", timestamp=_AT, data=PingData(webhook_id="wh_01JD5X7Q2M8V4N6P0R3S5T7W9Y")),
)


async def create(call: Call) -> WebhookWithSecret:
    return await webhooks.create_webhook(call.ctx, call.principal.workspace_id, call.body)


async def list_(call: Call) -> WebhookList:
    return await webhooks.list_webhooks(call.ctx, call.principal.workspace_id, call.query)


async def get(call: Call) -> Webhook:
    return await webhooks.get_webhook(call.ctx, call.principal.workspace_id, call.path["id"])


async def update(call: Call) -> Webhook:
    return await webhooks.update_webhook(call.ctx, call.principal.workspace_id, call.path["id"], call.body)


async def delete(call: Call) -> Deleted:
    await webhooks.delete_webhook(call.ctx, call.principal.workspace_id, call.path["id"])
    return Deleted(id=call.path["id"])


async def rotate(call: Call) -> WebhookWithSecret:
    return await webhooks.rotate_secret(call.ctx, call.principal.workspace_id, call.path["id"])


async def test(call: Call) -> Delivery:
    return await webhooks.test_webhook(call.ctx, call.principal.workspace_id, call.path["id"])


async def deliveries(call: Call) -> DeliveryList:
    return await webhooks.list_deliveries(call.ctx, call.principal.workspace_id, call.path["id"], call.query)


async def retry(call: Call) -> Delivery:
    ws = call.principal.workspace_id
    return await webhooks.retry_delivery(call.ctx, ws, call.path["id"], call.path["deliveryId"])


async def events(call: Call) -> EventExamples:
    return EVENT_EXAMPLES


ENDPOINTS = [
    Endpoint(
        "POST", "/webhooks", create, "Create a webhook", "Webhooks", scope="webhooks:write", body=WebhookCreate,
        response=WebhookWithSecret, status=201, example=EXAMPLE, operation_id="createWebhook",
        description="Events are POSTed signed per Standard Webhooks (`webhook-id`, `webhook-timestamp`, "
        "`webhook-signature`). The `secret` is shown only here and on rotation. `linkIds`, `folderIds`, `tagIds` "
        "narrow the links whose events are sent (none: every link of the workspace). The URL must be http(s) "
        "on a public address. Needs the plan feature `webhooks`.",
    ),
    Endpoint(
        "GET", "/webhooks", list_, "List webhooks", "Webhooks", scope="webhooks:read", query=PageQuery,
        response=WebhookList, operation_id="listWebhooks",
    ),
    Endpoint(
        "GET", "/webhooks/events", events, "Example body of each event", "Webhooks", scope="webhooks:read",
        response=EventExamples, operation_id="getWebhookEventExamples",
        description="What an endpoint receives for each event type: `{\"type\", \"timestamp\", \"data\"}`.",
    ),
    Endpoint(
        "GET", "/webhooks/{id}", get, "Get a webhook", "Webhooks", scope="webhooks:read", response=Webhook,
        operation_id="getWebhook",
    ),
    Endpoint(
        "PATCH", "/webhooks/{id}", update, "Update a webhook", "Webhooks", scope="webhooks:write",
        body=WebhookUpdate, response=Webhook, operation_id="updateWebhook", example={"disabled": True},
        description="`disabled: true` stops its pending deliveries at once; `false` re-enables it.",
    ),
    Endpoint(
        "DELETE", "/webhooks/{id}", delete, "Delete a webhook", "Webhooks", scope="webhooks:write",
        response=Deleted, operation_id="deleteWebhook",
    ),
    Endpoint(
        "POST", "/webhooks/{id}/rotate-secret", rotate, "Rotate the signing secret", "Webhooks",
        scope="webhooks:write", response=WebhookWithSecret, operation_id="rotateWebhookSecret",
        description="Returns the new secret. For 24 hours deliveries carry two signatures (new and previous).",
    ),
    Endpoint(
        "POST", "/webhooks/{id}/test", test, "Send a ping now", "Webhooks", scope="webhooks:write",
        response=Delivery, operation_id="testWebhook",
        description="Sends a `ping` event at once and returns its delivery. A success re-enables a disabled webhook.",
    ),
    Endpoint(
        "GET", "/webhooks/{id}/deliveries", deliveries, "List deliveries", "Webhooks", scope="webhooks:read",
        query=DeliveryListQuery, response=DeliveryList, operation_id="listWebhookDeliveries",
        description="Newest first; each with its attempts (status or error, duration, first KiB of the answer).",
    ),
    Endpoint(
        "POST", "/webhooks/{id}/deliveries/{deliveryId}/retry", retry, "Send a delivery again now", "Webhooks",
        scope="webhooks:write", response=Delivery, operation_id="retryWebhookDelivery",
        description="Same `webhook-id` as before, so receivers can deduplicate.",
    ),
]  # fmt: skip
