"""Destination URL safety and slug rules: what a short link may point to and be called.

A destination must be an absolute http(s) URL without credentials whose host is public.
"Public" is judged on the address a browser would actually connect to, in every spelling
a browser accepts (``127.1``, ``2130706433``, ``0x7f.1``, ``[::ffff:127.0.0.1]``, NAT64 and
6to4 wrappings), with ``ipaddress``'s ``is_global`` (``is_private`` misses 100.64.0.0/10).
Host names are not resolved: the edge never fetches the target, and DNS can change anyway.

Every check runs on the host's ASCII form (``redirect.hosts``: UTS #46 mapping, IDNA 2008), the
form browsers connect to and the edge sends, and that form is what ``check_destination`` returns
to be stored: ``http://１２７.０.０.１/`` is judged as ``127.0.0.1``, ``ｅｖｉｌ.com`` as ``evil.com``.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

import dns.asyncresolver

from h0p_settings import Settings
from redirect.hosts import ascii_host, ascii_url

MAX_URL_LENGTH = 2048
SLUG_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,190}$")
# The edge's own paths and the API's, refused case-insensitively so no link can shadow them.
RESERVED_SLUGS = frozenset(
    {
        "healthz", "readyz", "metrics", "api", "doc", "docs", "ui", "mcp", "_h0p", "admin",
        "dashboard", "login", "logout", "static", "favicon.ico", "robots.txt", "well-known",
        ".well-known", "links", "domains", "folders", "tags", "keys", "workspace", "qr", "files",
    }
)  # fmt: skip
_LABEL = re.compile(r"^(?!-)[a-z0-9_\-]{1,63}(?<!-)$")  # hosts are checked in their ASCII form
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa", ".lan")


class UnsafeUrl(ValueError):
    """The URL is refused; the message says why (shown to the client)."""


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    out = []
    if ip.ipv4_mapped is not None:
        out.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        out.append(ip.sixtofour)
    if ip.teredo is not None:
        out.extend(ip.teredo)
    if ip in _NAT64:
        out.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    # ::a.b.c.d (deprecated IPv4-compatible) is still routed to a.b.c.d by some stacks
    if int(ip) >> 32 == 0 and int(ip) > 1:
        out.append(ipaddress.IPv4Address(int(ip)))
    return out


def _address_is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if not ip.is_global:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        return all(inner.is_global for inner in _embedded_ipv4(ip))
    return True


def host_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address ``host`` denotes the way a browser parses it, or None for a host name.

    Raises UnsafeUrl for a host that looks numeric but is no valid address (``1.2.3.999``).
    """
    if ":" in host:  # urlsplit already removed the brackets of an IPv6 literal
        try:
            return ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise UnsafeUrl("the host is not a valid IPv6 address") from None
    last = host.rstrip(".").rsplit(".", 1)[-1]
    if not _NUMERIC_LABEL.match(last):
        return None
    # WHATWG URL: a host whose last label is numeric is an IPv4 address, in the legacy
    # inet_aton forms too (octal, hex, fewer than four parts); inet_aton parses exactly those.
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host.rstrip(".")))
    except (OSError, ValueError):
        raise UnsafeUrl("the host is not a valid IPv4 address") from None


def _host_is_blocked(host: str, blocked: tuple[str, ...]) -> bool:
    # the operator's list in the same ASCII form as the host ("bücher.de" blocks xn--bcher-kva.de)
    return any(host == b or host.endswith("." + b) for b in (ascii_host(b) or b for b in blocked))


def check_destination(url: str, settings: Settings) -> str:
    """``url`` as it is to be stored (host in ASCII form) if a short link may redirect there; else UnsafeUrl."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise UnsafeUrl("the URL contains spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise UnsafeUrl("the URL cannot be parsed") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise UnsafeUrl("only absolute http:// and https:// URLs are allowed")
    if not parts.netloc or not parts.hostname:
        raise UnsafeUrl("the URL has no host")
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        raise UnsafeUrl("credentials in the URL are not allowed")
    if "\\" in parts.netloc:
        raise UnsafeUrl("the URL host is malformed")
    check_host(parts.hostname, settings)
    stored = ascii_url(url)
    if stored is None:  # check_host accepted the host, so only a parse quirk gets here
        raise UnsafeUrl("the URL host has no valid ASCII (IDNA) form")
    return stored


def check_host(host: str, settings: Settings) -> str:
    """The host's ASCII form if a destination may use it; UnsafeUrl if it has none, is blocked or not public."""
    mapped = ascii_host(host)
    if mapped is None:
        raise UnsafeUrl("the URL host has no valid ASCII (IDNA) form")
    host = mapped
    address = host_address(host)
    name = host.rstrip(".")
    if address is None:
        labels = name.split(".")
        if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
            raise UnsafeUrl("the URL host is not a valid host name")
    if _host_is_blocked(str(address) if address is not None else name, settings.blocked_hosts):
        raise UnsafeUrl("the destination host is blocked on this server")
    if settings.allow_private_targets:
        return host
    if address is not None:
        if not _address_is_public(address):
            raise UnsafeUrl("the destination address is not a public internet address")
        return host
    if "." not in name or name == "localhost" or name.endswith(_LOCAL_SUFFIXES):
        raise UnsafeUrl("the destination host is not a public internet host")
    return host


def slug_problem(slug: str) -> str | None:
    """Why ``slug`` cannot be used as a custom slug, or None if it can."""
    if not SLUG_PATTERN.match(slug):
        return "a slug is 1 to 190 characters: letters, digits, '-' and '_'"
    if slug.lower() in RESERVED_SLUGS:
        return f"'{slug}' is reserved"
    return None


def normalise_domain(domain: str) -> str:
    """A host name as links and domains store it: lower case, no trailing dot."""
    return domain.strip().lower().rstrip(".")


def dns_resolver(settings: Settings, timeout_s: float) -> dns.asyncresolver.Resolver:
    """The resolver of ``settings.dns_resolver`` ("ip:port"; empty: the system's), bounded by ``timeout_s``."""
    if not settings.dns_resolver:
        resolver = dns.asyncresolver.Resolver()
    else:
        host, _, port = settings.dns_resolver.rpartition(":")
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [host.strip("[]")]
        resolver.port = int(port)
    resolver.timeout = timeout_s
    resolver.lifetime = timeout_s
    return resolver
