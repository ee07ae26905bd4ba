"""Outbound requests to customers' endpoints that can only reach public addresses.

A name is resolved when a connection is opened (aiohttp's resolver hook, DNS cache off),
*every* address it resolves to is checked (``api.urls.check_host``, the same rule as link
destinations), and aiohttp connects to the addresses the resolver returned, the checked ones:
a DNS answer that changes between the check and the connect (DNS rebinding) cannot steer it to
an internal one. TLS still verifies the certificate and sends SNI for the host name. An address
literal in the URL never reaches a resolver, so ``check_url_host`` checks it before the request.
``H0P_ALLOW_PRIVATE_TARGETS=true`` allows private addresses (intranets, tests).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket

import aiohttp
import dns.asyncresolver
import dns.exception
import dns.resolver
from aiohttp.abc import AbstractResolver, ResolveResult

from api.urls import UnsafeUrl, check_host, dns_resolver, host_address
from h0p_settings import Settings

MAX_RESPONSE_BYTES = 64 * 1024
DNS_TIMEOUT_S = 3.0


class RefusedTarget(OSError):
    """The endpoint's host is (or resolves to) an address deliveries may not reach."""

    def __init__(self, message: str) -> None:
        # errno + strerror: aiohttp shows an OSError's strerror in its connection errors
        super().__init__(errno.EACCES, message)


class Unresolvable(OSError):
    """The endpoint's host name does not resolve (now)."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EHOSTUNREACH, message)


async def resolve(host: str, port: int, settings: Settings) -> list[str]:
    """Every address of ``host`` (itself if it is an address); through H0P_DNS_RESOLVER when set."""
    try:
        literal = host_address(host)
    except UnsafeUrl as exc:
        raise RefusedTarget(str(exc)) from None
    if literal is not None:
        return [str(literal)]
    if settings.dns_resolver:
        found: list[str] = []
        resolver = dns_resolver(settings, DNS_TIMEOUT_S)
        for rdtype in ("A", "AAAA"):
            try:
                answer = await resolver.resolve(host, rdtype)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
                raise Unresolvable(f"DNS lookup of {host} failed ({type(exc).__name__})") from None
            found.extend(r.address for r in answer)
        if not found:
            raise Unresolvable(f"{host} does not resolve")
        return found
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise Unresolvable(f"{host} does not resolve ({exc.strerror})") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def check_addresses(host: str, addresses: list[str], settings: Settings) -> None:
    """RefusedTarget unless every address may be reached (all, not any: the client may pick any)."""
    for address in addresses:
        try:
            check_host(str(ipaddress.ip_address(address.split("%", 1)[0])), settings)
        except (UnsafeUrl, ValueError) as exc:
            raise RefusedTarget(f"{host} resolves to {address}: {exc}") from None


def check_url_host(host: str, settings: Settings) -> None:
    """RefusedTarget for an address literal that may not be reached (names are checked at connect)."""
    try:
        literal = host_address(host)
    except UnsafeUrl as exc:
        raise RefusedTarget(str(exc)) from None
    if literal is not None:
        check_addresses(host, [str(literal)], settings)


class PublicOnlyResolver(AbstractResolver):
    """aiohttp's resolver hook: a name's addresses, all checked, or RefusedTarget."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await resolve(host, port, self._settings)
        check_addresses(host, addresses, self._settings)
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        return None


def delivery_session(settings: Settings, max_connections: int = 100) -> aiohttp.ClientSession:
    """The session deliveries are sent with: public targets only, no proxies from the environment, no DNS cache."""
    connector = aiohttp.TCPConnector(
        resolver=PublicOnlyResolver(settings),
        use_dns_cache=False,  # every new connection resolves and checks again
        limit=max_connections,
        limit_per_host=0,  # the dispatcher bounds each endpoint's concurrency itself
    )
    return aiohttp.ClientSession(
        connector=connector,
        trust_env=False,
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=settings.webhook_timeout_s),
        headers={"user-agent": "h0p-webhooks/1"},
    )
