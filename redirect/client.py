"""The client address of a request: the peer, or the first untrusted hop of X-Forwarded-For."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@lru_cache(maxsize=4096)
def parse_address(text: str) -> Address | None:
    """An IP address from a header value item (``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``); None if invalid."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # IPv4 with a port; a bare IPv6 address has several colons
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class ClientAddress:
    """Finds the client IP; trust in the proxies comes from ``H0P_TRUSTED_PROXIES``."""

    def __init__(self, trusted: Sequence[Network]) -> None:
        self.trusted = tuple(trusted)

    def is_trusted(self, address: Address | None) -> bool:
        return address is not None and any(address in net for net in self.trusted)

    def resolve(self, peer: str, forwarded_for: str | None) -> str:
        """The peer, unless it is a trusted proxy: then walk X-Forwarded-For from the right."""
        if not self.trusted or not forwarded_for or not self.is_trusted(parse_address(peer)):
            return peer
        client = peer
        # Right to left: each trusted hop vouches for the one before it; the first untrusted
        # (or unparseable) entry is where the chain stops being believable.
        for item in reversed(forwarded_for.split(",")[-32:]):
            address = parse_address(item)
            if address is None:
                break
            client = str(address)
            if not self.is_trusted(address):
                break
        return client


def client_group(ip: str) -> str:
    """Whom limits count for: an IPv4 address, or an IPv6 address's /64 (one host holds billions of addresses)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return ip
