"""Analytics query parameters: validated once, with the time range and bucket size resolved.

Shared by the HTTP routes, MCP and tests; invalid input raises ``ValidationFailed`` with the
parameter's name as ``path``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache, cached_property
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

from api.errors import ValidationFailed

GROUP_BYS = (
    "count", "timeseries", "countries", "regions", "cities", "continents", "devices", "browsers", "os",
    "referers", "referer_urls", "top_links", "utm_sources", "utm_mediums", "utm_campaigns", "utm_terms",
    "utm_contents",
)  # fmt: skip
INTERVALS = ("24h", "7d", "30d", "90d", "1y", "mtd", "ytd", "all")
_SPANS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30),
          "90d": timedelta(days=90), "1y": timedelta(days=365)}  # fmt: skip

# query parameter → clicks column (tagId/folderId are resolved through links)
FILTERS = {
    "linkId": "link_id", "domain": "domain", "tagId": "tag_id", "folderId": "folder_id",
    "country": "country", "region": "region", "city": "city", "continent": "continent",
    "device": "device", "browser": "browser", "os": "os", "referer": "referer", "refererUrl": "referer_url",
    "utm_source": "utm_source", "utm_medium": "utm_medium", "utm_campaign": "utm_campaign",
    "utm_term": "utm_term", "utm_content": "utm_content",
}  # fmt: skip
MAX_LIMIT = 1000
# Ranges are clamped to the years a click can have: no click predates 2000, and the far end
# leaves room for any UTC offset before datetime's year 9999 runs out.
MIN_INSTANT = datetime(2000, 1, 1, tzinfo=UTC)
MAX_INSTANT = datetime(9999, 1, 1, tzinfo=UTC)
# A time series longer than this is refused rather than built (and zero-filled) in memory.
MAX_BUCKETS = 2000


@cache
def _zone_names() -> frozenset[str]:
    # The IANA names both Python and Postgres know; a file name that merely loads (posixrules) is not one.
    return frozenset(available_timezones())


def _fail(path: str, message: str) -> ValidationFailed:
    return ValidationFailed([{"path": path, "message": message}])


def _bool(params: Mapping[str, Any], name: str) -> bool | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise _fail(name, f"{name} must be true or false")


def _instant(params: Mapping[str, Any], name: str, zone: ZoneInfo) -> datetime | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            raise _fail(name, f"{name} must be an ISO 8601 date or date-time") from None
    if parsed.tzinfo is None:  # a wall-clock time in the requested time zone
        parsed = parsed.replace(tzinfo=zone)
    try:
        instant = parsed.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 shifted past datetime's range by the offset
        return MIN_INSTANT if parsed.year < 2000 else MAX_INSTANT
    return min(max(instant, MIN_INSTANT), MAX_INSTANT)


def _bucket_count(start: datetime, end: datetime, unit: str) -> int:
    """How many ``unit`` buckets [start, end) spans, give or take one (bucket_starts gives them)."""
    if unit == "month":
        return (end.year - start.year) * 12 + end.month - start.month + 1
    step = {"minute": 60, "hour": 3600, "day": 86400}[unit]
    return int((end - start).total_seconds() // step) + 2


@dataclass(frozen=True)
class AnalyticsQuery:
    """What to count and over what; ``start``/``end`` are UTC, end exclusive."""

    group_by: str
    start: datetime
    end: datetime
    timezone: str
    filters: dict[str, str]
    qr: bool | None = None
    unique: bool = False
    include_bots: bool = False
    limit: int = 100
    needs_first_click: bool = False  # interval=all: start is the workspace's first click

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def with_start(self, start: datetime) -> AnalyticsQuery:
        """The query from ``start`` (the first click of interval=all), its bucket count checked again."""
        start = min(max(start, MIN_INSTANT), self.end)
        return dataclasses.replace(self, start=start, needs_first_click=False).checked()

    def checked(self) -> AnalyticsQuery:
        """This query, or VALIDATION_ERROR if its time series would hold more than MAX_BUCKETS buckets."""
        if self.group_by == "timeseries" and not self.needs_first_click:
            count = _bucket_count(self.start, self.end, self.bucket)
            if count > MAX_BUCKETS:
                message = (
                    f"the range holds about {count} {self.bucket} buckets, more than {MAX_BUCKETS}: "
                    "give a shorter range"
                )
                raise _fail("end", message)
        return self

    @cached_property
    def bucket(self) -> str:
        """Time series granularity chosen from the span: minute, hour, day or month."""
        span = self.end - self.start
        if span <= timedelta(hours=2):
            return "minute"
        if span <= timedelta(days=3):
            return "hour"
        if span <= timedelta(days=120):
            return "day"
        return "month"


def parse_query(params: Mapping[str, Any], now: datetime | None = None) -> AnalyticsQuery:
    """Validate ``GET /analytics`` parameters (HTTP names: groupBy, interval, start, end, …)."""
    group_by = str(params.get("groupBy") or "count")
    if group_by not in GROUP_BYS:
        raise _fail("groupBy", f"groupBy must be one of {', '.join(GROUP_BYS)}")
    tz_name = str(params.get("timezone") or "UTC")
    if tz_name not in _zone_names():
        message = f"unknown time zone {tz_name[:64]!r} (expected an IANA name like Europe/Paris)"
        raise _fail("timezone", message)
    zone = ZoneInfo(tz_name)
    now = (now or datetime.now(UTC)).astimezone(UTC)
    start = _instant(params, "start", zone)
    end = _instant(params, "end", zone) or now
    interval = params.get("interval")
    needs_first = False
    if start is None:
        interval = str(interval or "24h")
        if interval not in INTERVALS:
            raise _fail("interval", f"interval must be one of {', '.join(INTERVALS)}")
        local_now = now.astimezone(zone)
        if interval in _SPANS:
            start = end - _SPANS[interval]
        elif interval == "mtd":
            start = local_now.replace(day=1, hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)
        elif interval == "ytd":
            start = local_now.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)
        else:
            start, needs_first = end, True
        start = max(start, MIN_INSTANT)
    elif interval:
        raise _fail("interval", "give either interval or start/end, not both")
    if start > end:
        raise _fail("start", "start must be before end")
    filters: dict[str, str] = {}
    for name, column in FILTERS.items():
        value = params.get(name)
        if value is not None and value != "":
            text = str(value)
            if len(text) > 2048:
                raise _fail(name, f"{name} is too long")
            filters[column] = text
    limit_raw = params.get("limit") or 100
    try:
        limit = int(limit_raw)
    except (TypeError, ValueError):
        raise _fail("limit", "limit must be a whole number") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise _fail("limit", f"limit must be from 1 to {MAX_LIMIT}")
    return AnalyticsQuery(
        group_by=group_by,
        start=start,
        end=end,
        timezone=tz_name,
        filters=filters,
        qr=_bool(params, "qr"),
        unique=bool(_bool(params, "unique")),
        include_bots=bool(_bool(params, "includeBots")),
        limit=limit,
        needs_first_click=needs_first,
    ).checked()


def _add_month(d: datetime) -> datetime:
    return d.replace(year=d.year + d.month // 12, month=d.month % 12 + 1)


def bucket_starts(start: datetime, end: datetime, unit: str, zone: ZoneInfo) -> Iterator[datetime]:
    """Bucket starts (in ``zone``) covering [start, end), as Postgres' date_trunc(unit, ts, zone) gives them."""
    local = start.astimezone(zone)
    if unit in ("minute", "hour"):
        # fixed length: step in UTC, so DST changes neither skip nor repeat a bucket
        floor = (
            local.replace(second=0, microsecond=0)
            if unit == "minute"
            else local.replace(minute=0, second=0, microsecond=0)
        )
        step = timedelta(minutes=1) if unit == "minute" else timedelta(hours=1)
        current = floor.astimezone(UTC)
        while current < end:
            yield current.astimezone(zone)
            current += step
        return
    # days and months: step the wall clock (a DST day is 23 or 25 hours long)
    wall = local.replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    if unit == "month":
        wall = wall.replace(day=1)
    while True:
        bucket = wall.replace(tzinfo=zone)
        if bucket >= end:
            return
        yield bucket
        wall = wall + timedelta(days=1) if unit == "day" else _add_month(wall)
