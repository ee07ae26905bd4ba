"""Request and response shapes of webhooks, their deliveries, and the events they carry.

Kept beside ``api/schemas.py`` (same base classes and conventions) so that each stays one concept.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import UNSET, Meta, UnsetType, field

from api.schemas import TEXT, Domain, Id, Link, Timestamp, Url, _In, _Out

# The events an endpoint can subscribe to (ping is sent only by POST /webhooks/{id}/test).
SubscribableEvent = Literal["link.created", "link.updated", "link.deleted", "link.clicked", "domain.verified"]
EventType = Literal["link.created", "link.updated", "link.deleted", "link.clicked", "domain.verified", "ping"]
EVENT_TYPES: tuple[str, ...] = ("link.created", "link.updated", "link.deleted", "link.clicked", "domain.verified")
Events = Annotated[list[SubscribableEvent], Meta(min_length=1, max_length=len(EVENT_TYPES))]
ScopeIds = Annotated[list[Id], Meta(max_length=100)]
Name = Annotated[str, Meta(pattern=TEXT, max_length=200)]
DeliveryState = Literal["pending", "delivered", "failed"]


class WebhookCreate(_In):
    """A new endpoint. Without linkIds/folderIds/tagIds it receives the events of every link of the workspace."""

    url: Url
    events: Events
    name: Name = ""
    link_ids: ScopeIds = []
    folder_ids: ScopeIds = []
    tag_ids: ScopeIds = []
    include_bots: bool = False
    disabled: bool = False


class WebhookUpdate(_In):
    """A partial update; ``disabled: false`` re-enables an endpoint (and clears its failing streak)."""

    url: Url | UnsetType = UNSET
    events: Events | UnsetType = UNSET
    name: Name | UnsetType = UNSET
    link_ids: ScopeIds | UnsetType = UNSET
    folder_ids: ScopeIds | UnsetType = UNSET
    tag_ids: ScopeIds | UnsetType = UNSET
    include_bots: bool | UnsetType = UNSET
    disabled: bool | UnsetType = UNSET


class Webhook(_Out):
    """An endpoint (its secret is shown only at creation and rotation)."""

    id: Annotated[str, Meta(examples=["wh_01JD5X7Q2M8V4N6P0R3S5T7W9Y"])]
    name: str
    url: str
    events: list[str]
    link_ids: list[str]
    folder_ids: list[str]
    tag_ids: list[str]
    include_bots: bool
    disabled: bool
    disabled_reason: str | None
    disabled_at: Timestamp | None
    # first failed attempt since the last success (disabled after H0P_WEBHOOK_DISABLE_AFTER_S)
    failing_since: Timestamp | None
    # until then the previous secret signs too (after a rotation)
    previous_secret_expires_at: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp


class WebhookWithSecret(Webhook):
    """An endpoint with its signing secret (Standard Webhooks ``whsec_`` + base64)."""

    secret: Annotated[str, Meta(examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])]


class WebhookList(_Out):
    data: list[Webhook]
    page: int
    limit: int
    total: int


class DeliveryAttempt(_Out):
    """One try: the HTTP status, or the network error (timeout, refused target …) when none came."""

    at: Timestamp
    status: int | None
    error: str | None
    duration_ms: int
    response: Annotated[str, Meta(description="the first KiB of the answer's body")]


class Delivery(_Out):
    """One event sent to one endpoint; ``id`` is the ``webhook-id`` header, the same on every attempt."""

    id: Annotated[str, Meta(examples=["msg_01JD5X7Q2M8V4N6P0R3S5T7W9Y"])]
    webhook_id: str
    event_type: str
    state: DeliveryState
    attempts: list[DeliveryAttempt]
    next_attempt_at: Timestamp | None
    created_at: Timestamp


class DeliveryList(_Out):
    data: list[Delivery]
    page: int
    limit: int
    total: int


class DeliveryListQuery(_In):
    """``status`` filters by state; newest first."""

    status: DeliveryState | None = None
    page: Annotated[int, Meta(ge=0, le=1_000_000)] = 0
    limit: Annotated[int, Meta(ge=1, le=50)] = 10


# --- event payloads (documented in /doc; examples served by GET /webhooks/events) ----------


class Click(_Out):
    """A stored, enriched click as ``link.clicked`` carries it (no IP address)."""

    id: str
    timestamp: Timestamp
    url: str | None
    country: str
    region: str
    city: str
    continent: str
    latitude: float | None
    longitude: float | None
    device: str
    browser: str
    os: str
    referer: str
    referer_url: str
    qr: bool
    bot: bool
    utm_source: str = field(name="utm_source")
    utm_medium: str = field(name="utm_medium")
    utm_campaign: str = field(name="utm_campaign")
    utm_term: str = field(name="utm_term")
    utm_content: str = field(name="utm_content")


class LinkClickedData(_Out):
    click: Click
    link: Link | None


class PingData(_Out):
    webhook_id: str


class LinkEvent(_Out):
    """``link.created``, ``link.updated``, ``link.deleted``: the link as the API returns it."""

    type: Literal["link.created", "link.updated", "link.deleted"]
    timestamp: Timestamp
    data: Link


class LinkClickedEvent(_Out):
    """``link.clicked``: the enriched click and its link (humans only unless ``includeBots``)."""

    type: Literal["link.clicked"]
    timestamp: Timestamp
    data: LinkClickedData


class DomainVerifiedEvent(_Out):
    type: Literal["domain.verified"]
    timestamp: Timestamp
    data: Domain


class PingEvent(_Out):
    type: Literal["ping"]
    timestamp: Timestamp
    data: PingData


class EventExamples(_Out):
    """An example body of each event type, as POSTed to an endpoint (Standard Webhooks envelope)."""

    link_created: LinkEvent = field(name="link.created")
    link_updated: LinkEvent = field(name="link.updated")
    link_deleted: LinkEvent = field(name="link.deleted")
    link_clicked: LinkClickedEvent = field(name="link.clicked")
    domain_verified: DomainVerifiedEvent = field(name="domain.verified")
    ping: PingEvent
