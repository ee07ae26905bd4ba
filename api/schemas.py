"""Request and response shapes of the management API (msgspec Structs, camelCase JSON).

These are what the routes decode and encode and what the OpenAPI document is generated from
(``msgspec.json.schema_components``). Shape checks live here (types, lengths, enums); rules
that need the database or the settings (slug taken, destination safety) live in the services.
``msgspec.convert({...}, LinkCreate)`` builds input from a JSON-shaped dict.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType, field

from redirect.device_classes import device_words

# Postgres text cannot hold NUL: refused at decoding, with the field's path, on every input string
TEXT = r"^[^\x00]*$"
# RFC 3339 (msgspec parses and emits it; the format is stated for generated clients)
Timestamp = Annotated[datetime, Meta(extra_json_schema={"format": "date-time"}, examples=["2030-01-31T12:00:00Z"])]
ConditionType = Literal[
    "device", "os", "browser", "country", "city", "language", "query", "referrer", "ip", "before", "after"
]
Url = Annotated[str, Meta(pattern=TEXT, min_length=1, max_length=2048, examples=["https://example.com/landing"])]
ShortText = Annotated[str, Meta(pattern=TEXT, max_length=500)]
LongText = Annotated[str, Meta(pattern=TEXT, max_length=5000)]
Slug = Annotated[str, Meta(pattern=TEXT, min_length=1, max_length=190, examples=["spring-sale"])]
Id = Annotated[str, Meta(pattern=TEXT, min_length=1, max_length=64)]
StatusCode = Literal[301, 302, 307, 308]
UtmValue = Annotated[str, Meta(pattern=TEXT, max_length=200)]


class _In(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    pass


class _Out(msgspec.Struct, rename="camel", kw_only=True):
    pass


# Bounds of a link's rules: the edge evaluates them on every click of the link, for every tenant.
CONDITION_VALUE_MAX = 200  # characters of one condition value (one item of a list)
RULES_MAX_BYTES = 32 * 1024  # the whole rule set, as stored (JSON, UTF-8); checked in api.link_rules
ConditionValue = Annotated[str, Meta(pattern=TEXT, max_length=CONDITION_VALUE_MAX)]
_VALUE_DOC = (
    "One value or a list (any matches). `device`: one of "
    + device_words()
    + " (another value is refused); `country`: ISO 3166-1 alpha-2; `language`: a tag such as `fr-CA`;"
    " `ip`: an address or CIDR; `referrer`: a host name; `before`/`after`: one ISO 8601 time;"
    " `os`, `browser`, `city`, `query`: free text."
)


class RuleCondition(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """One test; ``not: true`` negates it (a query condition without ``value`` means "present").

    ``device``: the classes analytics stores (``redirect.device_classes``), or an alias of one.
    ``os`` and ``browser`` compare loosely: "iOS", "ios" and "iPadOS" match an iPhone or iPad.
    """

    type: ConditionType
    value: Annotated[
        ConditionValue | Annotated[list[ConditionValue], Meta(min_length=1, max_length=50)] | None,
        Meta(description=_VALUE_DOC),
    ] = None
    key: Annotated[str, Meta(pattern=TEXT, min_length=1, max_length=200)] | None = None
    negate: bool = field(default=False, name="not")


class Rule(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """All conditions must hold; the first matching rule's ``url`` wins."""

    conditions: Annotated[list[RuleCondition], Meta(min_length=1, max_length=20)]
    url: Url


class SplitTarget(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: Url
    weight: Annotated[int, Meta(ge=1, le=99)]


Rules = Annotated[
    list[Rule],
    Meta(
        max_length=50,
        description=f"Routing rules, tried in order. At most 50 rules, and {RULES_MAX_BYTES} bytes as JSON in all.",
        extra_json_schema={"x-max-encoded-bytes": RULES_MAX_BYTES},
    ),
]
Split = Annotated[list[SplitTarget], Meta(max_length=4)]
TagIds = Annotated[list[Id], Meta(max_length=50)]


class LinkCreate(_In):
    """A new short link. Only ``url`` is required; ``slug`` is generated when absent."""

    url: Url
    domain: Annotated[str, Meta(pattern=TEXT, max_length=253, examples=["go.example.com"])] | None = None
    slug: Slug | None = None
    external_id: Annotated[str, Meta(pattern=TEXT, min_length=1, max_length=255)] | None = None
    title: ShortText | None = None
    description: LongText | None = None
    comments: LongText | None = None
    tag_ids: TagIds = []
    folder_id: Id | None = None
    status_code: StatusCode = 302
    rules: Rules = []
    split: Split = []
    password: Annotated[str, Meta(pattern=TEXT, min_length=1, max_length=200)] | None = None
    expires_at: Timestamp | None = None
    expired_url: Url | None = None
    utm_source: UtmValue | None = field(default=None, name="utm_source")
    utm_medium: UtmValue | None = field(default=None, name="utm_medium")
    utm_campaign: UtmValue | None = field(default=None, name="utm_campaign")
    utm_term: UtmValue | None = field(default=None, name="utm_term")
    utm_content: UtmValue | None = field(default=None, name="utm_content")
    forward_query: bool = True
    archived: bool = False
    og_title: ShortText | None = None
    og_description: LongText | None = None
    og_image: Url | None = None


class LinkUpdate(_In):
    """A partial update: absent fields are kept, ``null`` clears a field that may be empty."""

    url: Url | UnsetType = UNSET
    domain: Annotated[str, Meta(pattern=TEXT, max_length=253)] | UnsetType = UNSET
    slug: Slug | UnsetType = UNSET
    external_id: Annotated[str, Meta(pattern=TEXT, min_length=1, max_length=255)] | None | UnsetType = UNSET
    title: ShortText | None | UnsetType = UNSET
    description: LongText | None | UnsetType = UNSET
    comments: LongText | None | UnsetType = UNSET
    tag_ids: TagIds | UnsetType = UNSET
    folder_id: Id | None | UnsetType = UNSET
    status_code: StatusCode | UnsetType = UNSET
    rules: Rules | UnsetType = UNSET
    split: Split | UnsetType = UNSET
    password: Annotated[str, Meta(pattern=TEXT, min_length=1, max_length=200)] | None | UnsetType = UNSET
    expires_at: Timestamp | None | UnsetType = UNSET
    expired_url: Url | None | UnsetType = UNSET
    utm_source: UtmValue | None | UnsetType = field(default=UNSET, name="utm_source")
    utm_medium: UtmValue | None | UnsetType = field(default=UNSET, name="utm_medium")
    utm_campaign: UtmValue | None | UnsetType = field(default=UNSET, name="utm_campaign")
    utm_term: UtmValue | None | UnsetType = field(default=UNSET, name="utm_term")
    utm_content: UtmValue | None | UnsetType = field(default=UNSET, name="utm_content")
    forward_query: bool | UnsetType = UNSET
    archived: bool | UnsetType = UNSET
    og_title: ShortText | None | UnsetType = UNSET
    og_description: LongText | None | UnsetType = UNSET
    og_image: Url | None | UnsetType = UNSET


class Link(_Out):
    """A short link as the API returns it (the password itself is never returned)."""

    id: Annotated[str, Meta(examples=["link_01JD5X7Q2M8V4N6P0R3S5T7W9Y"])]
    domain: str
    slug: str
    url: str
    short_url: Annotated[str, Meta(examples=["https://go.example.com/spring-sale"])]
    rules: list[Rule]
    split: list[SplitTarget]
    status_code: int
    password_protected: bool
    expires_at: Timestamp | None
    expired_url: str | None
    utm_source: str | None = field(name="utm_source")
    utm_medium: str | None = field(name="utm_medium")
    utm_campaign: str | None = field(name="utm_campaign")
    utm_term: str | None = field(name="utm_term")
    utm_content: str | None = field(name="utm_content")
    forward_query: bool
    archived: bool
    og_title: str | None
    og_description: str | None
    og_image: str | None
    title: str | None
    description: str | None
    comments: str | None
    tag_ids: list[str]
    folder_id: str | None
    external_id: str | None
    clicks: int
    last_clicked_at: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp


class LinkList(_Out):
    data: list[Link]
    page: int
    limit: int
    total: int


class LinkListQuery(_In):
    """Filters, sort and page of ``GET /links`` (query string)."""

    search: Annotated[str, Meta(pattern=TEXT, max_length=200)] | None = None
    domain: Annotated[str, Meta(pattern=TEXT, max_length=253)] | None = None
    tag_ids: (
        Annotated[str, Meta(pattern=TEXT, max_length=2000, description="comma-separated tag ids (any of)")] | None
    ) = None
    folder_id: Id | None = None
    archived: bool | None = None
    sort: Literal["createdAt", "clicks", "lastClickedAt"] = "createdAt"
    order: Literal["asc", "desc"] = "desc"
    page: Annotated[int, Meta(ge=0, le=1_000_000)] = 0
    limit: Annotated[int, Meta(ge=1, le=50)] = 10


class LinkInfoQuery(_In):
    """``GET /links/info``: a link by its short URL parts (domain defaults to the default domain)."""

    slug: Slug
    domain: Annotated[str, Meta(pattern=TEXT, max_length=253)] | None = None


class BulkItemError(msgspec.Struct):
    code: str
    message: str


class BulkItemFailure(msgspec.Struct):
    """One item of a bulk request that was not written (nothing of it was)."""

    error: BulkItemError


class Deleted(_Out):
    id: str


class PageQuery(_In):
    """``page`` from 0, ``limit`` default 10, max 50."""

    page: Annotated[int, Meta(ge=0, le=1_000_000)] = 0
    limit: Annotated[int, Meta(ge=1, le=50)] = 10


Hostname = Annotated[str, Meta(pattern=TEXT, min_length=3, max_length=253, examples=["go.example.com"])]


class DomainCreate(_In):
    """A custom domain to add; it serves links once its DNS is verified."""

    domain: Hostname
    root_url: Url | None = None
    not_found_url: Url | None = None
    expired_url: Url | None = None


class DomainUpdate(_In):
    """Where the domain sends visitors of its root, of unknown slugs and of expired links (null: a page)."""

    root_url: Url | None | UnsetType = UNSET
    not_found_url: Url | None | UnsetType = UNSET
    expired_url: Url | None | UnsetType = UNSET


class DnsRecord(_Out):
    type: Literal["TXT", "CNAME"]
    name: str
    value: str


class Domain(_Out):
    """A custom domain: publish ``records`` in its DNS, then verify it."""

    id: str
    domain: str
    verified: bool
    verified_at: Timestamp | None
    records: list[DnsRecord]
    root_url: str | None
    not_found_url: str | None
    expired_url: str | None
    links: int
    created_at: Timestamp
    updated_at: Timestamp


class DomainList(_Out):
    data: list[Domain]
    page: int
    limit: int
    total: int


class DomainVerification(_Out):
    """The result of a DNS check: ``problem`` says what is missing when not verified."""

    verified: bool
    problem: str | None
    domain: Domain


class DomainDeleteQuery(_In):
    force: bool = False


Name = Annotated[str, Meta(pattern=TEXT, min_length=1, max_length=100, examples=["Spring campaign"])]
TagColor = Literal["gray", "red", "yellow", "green", "blue", "purple", "pink", "brown"]


class FolderWrite(_In):
    name: Name


class Folder(_Out):
    id: str
    name: str
    links: int
    created_at: Timestamp
    updated_at: Timestamp


class FolderList(_Out):
    data: list[Folder]
    page: int
    limit: int
    total: int


class TagCreate(_In):
    name: Name
    color: TagColor = "gray"


class TagUpdate(_In):
    name: Name | UnsetType = UNSET
    color: TagColor | UnsetType = UNSET


class Tag(_Out):
    id: str
    name: str
    color: str
    links: int
    created_at: Timestamp
    updated_at: Timestamp


class TagList(_Out):
    data: list[Tag]
    page: int
    limit: int
    total: int


class KeyCreate(_In):
    """A new API key; ``scopes`` default to every scope the calling key has."""

    name: Name
    scopes: (
        Annotated[list[Annotated[str, Meta(pattern=TEXT, max_length=40)]], Meta(min_length=1, max_length=30)] | None
    ) = None
