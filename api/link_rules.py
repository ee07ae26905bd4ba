"""Meaning checks for a link's routing rules and A/B split, and their stored JSON.

The schema (``api.schemas.Rule``) checks shapes; this checks values (a country is an ISO
code, an ip is an address or CIDR, a device is one of the classifier's classes, a time parses)
and normalises them (country upper-case, a device as its class: "Phone" is stored "mobile",
times in UTC) so the edge compares like with like. The stored JSON is the API shape, read back
by ``redirect.record.link_record_from_row``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec

from api.schemas import RULES_MAX_BYTES, Rule, RuleCondition, SplitTarget
from api.urls import UnsafeUrl, check_destination
from h0p_settings import Settings
from redirect.device_classes import DEVICE_CLASSES, device_words, normalise_device
from redirect.hosts import ascii_host

DEVICE_TYPES = frozenset(DEVICE_CLASSES)
COUNTRY_CODES = frozenset(
    "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV"
    " BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES"
    " ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE"
    " IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY"
    " MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU"
    " NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM"
    " SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE"
    " VG VI VN VU WF WS YE YT ZA ZM ZW XK".split()
)
IP_PREFIX_LENGTHS_MAX = 16  # per IP version, over a link's ip conditions (see _check_prefix_lengths)
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_HOST = re.compile(r"^[a-z0-9_\-]+(\.[a-z0-9_\-]+)*$")


class Problem(ValueError):
    """A rule or split value is wrong; ``path`` is relative to the link (e.g. ``rules[0].url``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def _values(cond: RuleCondition) -> list[str]:
    if cond.value is None:
        return []
    return [cond.value] if isinstance(cond.value, str) else list(cond.value)


def _one_value(path: str, kind: str, value: str) -> str:
    """Check and normalise one value of a condition of type ``kind``."""
    if not value.strip():
        raise Problem(path, "must not be empty")
    if kind == "device":
        # a class the classifier never gives (device=laptop) is a rule that never matches: refused
        device = normalise_device(value)
        if device not in DEVICE_TYPES:
            raise Problem(path, f"device must be one of {device_words()}")
        return device
    if kind == "country":
        if value.upper() not in COUNTRY_CODES:
            raise Problem(path, "country must be an ISO 3166-1 alpha-2 code such as 'FR'")
        return value.upper()
    if kind == "language":
        if not _LANGUAGE.match(value):
            raise Problem(path, "language must be a language tag such as 'fr' or 'fr-CA'")
        return value
    if kind == "ip":
        try:
            return str(ipaddress.ip_network(value, strict=False)) if "/" in value else str(ipaddress.ip_address(value))
        except ValueError:
            raise Problem(path, "ip must be an IP address or a CIDR range") from None
    if kind == "referrer":
        # the ASCII form browsers put in a Referer (UTS #46 / IDNA 2008), as destinations are stored
        host = ascii_host(value.strip().rstrip("."))
        if host is None or not _HOST.match(host):
            raise Problem(path, "referrer must be a host name such as 'news.ycombinator.com'")
        return host
    if kind in ("before", "after"):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise Problem(path, f"{kind} must be an ISO 8601 time such as '2030-01-31T12:00:00Z'") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return value  # os, browser, city, query: free text, compared by the edge


def check_condition(path: str, cond: RuleCondition) -> RuleCondition:
    """A normalised copy of ``cond``; raise Problem if it cannot match anything sensible."""
    if cond.type == "query":
        if not cond.key:
            raise Problem(f"{path}.key", "a query condition needs the parameter name in 'key'")
    elif cond.key is not None:
        raise Problem(f"{path}.key", "'key' is only for query conditions")
    values = _values(cond)
    if not values:
        if cond.type != "query":
            raise Problem(f"{path}.value", f"a {cond.type} condition needs a value")
        return cond
    if cond.type in ("before", "after") and len(values) != 1:
        raise Problem(f"{path}.value", f"{cond.type} takes one time, not a list")
    if isinstance(cond.value, list):
        normalised: str | list[str] = [_one_value(f"{path}.value[{i}]", cond.type, v) for i, v in enumerate(values)]
    else:
        normalised = _one_value(f"{path}.value", cond.type, values[0])
    return RuleCondition(type=cond.type, value=normalised, key=cond.key, negate=cond.negate)


def _destination(path: str, url: str, settings: Settings) -> str:
    """The URL to store, its host in the ASCII form it was checked in (``api.urls.check_destination``)."""
    try:
        return check_destination(url, settings)
    except UnsafeUrl as exc:
        raise Problem(path, str(exc)) from None


def check_rules(rules: Sequence[Rule], settings: Settings) -> list[Rule]:
    """Normalised rules, every destination checked like the link's own URL, within ``RULES_MAX_BYTES``."""
    out = []
    for i, rule in enumerate(rules):
        conditions = [check_condition(f"rules[{i}].conditions[{j}]", c) for j, c in enumerate(rule.conditions)]
        out.append(Rule(conditions=conditions, url=_destination(f"rules[{i}].url", rule.url, settings)))
    size = len(rules_json(out).encode())
    if size > RULES_MAX_BYTES:
        raise Problem("rules", f"the rules take {size} bytes as JSON; at most {RULES_MAX_BYTES} are allowed")
    _check_prefix_lengths(out)
    return out


def _check_prefix_lengths(rules: Sequence[Rule]) -> None:
    """At most IP_PREFIX_LENGTHS_MAX prefix lengths per IP version in a link's ip conditions.

    The edge looks a visitor's address up once per prefix length in use (``redirect.rules``):
    /8, /16, /24, /32, /48, /56, /64 and /128 are the common ones; all 129 would cost a click
    more than the whole rest of the largest rule set.
    """
    seen: dict[int, set[int]] = {4: set(), 6: set()}
    for i, rule in enumerate(rules):
        for j, cond in enumerate(rule.conditions):
            if cond.type != "ip":
                continue
            for k, value in enumerate(_values(cond)):
                net = ipaddress.ip_network(value, strict=False)
                seen[net.version].add(net.prefixlen)
                if len(seen[net.version]) > IP_PREFIX_LENGTHS_MAX:
                    path = f"rules[{i}].conditions[{j}].value" + (f"[{k}]" if isinstance(cond.value, list) else "")
                    raise Problem(
                        path,
                        f"a link's ip conditions may use at most {IP_PREFIX_LENGTHS_MAX} different"
                        f" IPv{net.version} prefix lengths",
                    )


def check_split(split: Sequence[SplitTarget], settings: Settings) -> list[SplitTarget]:
    """A split is empty, or 2 to 4 destinations whose weights sum to 100."""
    if not split:
        return []
    if not 2 <= len(split) <= 4:
        raise Problem("split", "a split has 2 to 4 destinations")
    if sum(t.weight for t in split) != 100:
        raise Problem("split", "the weights of a split must sum to 100")
    return [
        SplitTarget(url=_destination(f"split[{i}].url", t.url, settings), weight=t.weight) for i, t in enumerate(split)
    ]


def rules_json(rules: Sequence[Rule]) -> str:
    """The JSON stored in ``links.rules`` (the API shape; ``not`` only when true)."""
    return msgspec.json.encode(rules).decode()


def split_json(split: Sequence[SplitTarget]) -> str:
    """The JSON stored in ``links.split``."""
    return msgspec.json.encode(split).decode()


def rules_from_json(raw: str | None) -> list[Rule]:
    """Rules as stored, back to the API shape."""
    return msgspec.json.decode(raw or "[]", type=list[Rule])


def split_from_json(raw: str | None) -> list[SplitTarget]:
    return msgspec.json.decode(raw or "[]", type=list[SplitTarget])
