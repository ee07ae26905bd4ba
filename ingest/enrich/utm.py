"""UTM parameters: from the landing query string, else from the link's own UTM fields."""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import parse_qsl


class Utm(NamedTuple):
    source: str
    medium: str
    campaign: str
    term: str
    content: str


NO_UTM = Utm("", "", "", "", "")
_KEYS = {"utm_source": 0, "utm_medium": 1, "utm_campaign": 2, "utm_term": 3, "utm_content": 4}
_MAX_LEN = 256  # a value is a label, not a payload: bound what one visitor can store


def utm_from_query(query: str) -> Utm:
    """The utm_* values of a query string ('' for the absent ones); the first value of a key wins."""
    if "utm_" not in query:
        return NO_UTM  # the common case: no parsing at all
    values = ["", "", "", "", ""]
    try:
        pairs = parse_qsl(query, keep_blank_values=False, max_num_fields=200)
    except ValueError:  # more fields than the bound: treat as no UTM rather than fail the event
        return NO_UTM
    for key, value in pairs:
        index = _KEYS.get(key.lower())
        if index is not None and not values[index]:
            values[index] = value[:_MAX_LEN]
    return Utm(*values)


def merge_utm(landing: Utm, link: Utm) -> Utm:
    """Field by field, the landing query wins over the link's own UTM fields.

    The edge forwards the visitor's query over the link's UTM when it builds the destination,
    so this is what the destination actually received.
    """
    if landing is NO_UTM or landing == NO_UTM:
        return link
    if link is NO_UTM or link == NO_UTM:
        return landing
    return Utm(
        landing.source or link.source,
        landing.medium or link.medium,
        landing.campaign or link.campaign,
        landing.term or link.term,
        landing.content or link.content,
    )
