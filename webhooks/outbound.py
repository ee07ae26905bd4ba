"""Outbound requests to customers' endpoints that can only reach public addresses.

A name is resolved when a connection is opened, *every* address it resolves to is checked
(``api.urls.check_host``, the same rule as link destinations), and the socket connects to the
address that was checked: a DNS answer that changes between the check and the connect (DNS
rebinding) cannot steer it to an internal one. TLS still verifies the certificate and sends
SNI for the host name (httpcore starts TLS with the URL's host, not the address connected to).
``H0P_ALLOW_PRIVATE_TARGETS=true`` allows private addresses (intranets, tests).

This module is the one door to httpcore's network backend (a private hook of httpx's
transport); ``_check_httpx`` fails at start-up with one line if an upgrade moves it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import typing

import dns.asyncresolver
import dns.exception
import dns.resolver
import httpcore
import httpx

from api.urls import UnsafeUrl, check_host, host_address
from h0p_settings import Settings

MAX_RESPONSE_BYTES = 64 * 1024
DNS_TIMEOUT_S = 3.0


class RefusedTarget(httpcore.ConnectError):
    """The endpoint's host is (or resolves to) an address deliveries may not reach."""


def _check_httpx() -> None:
    transport = httpx.AsyncHTTPTransport()
    if not isinstance(getattr(transport, "_pool", None), httpcore.AsyncConnectionPool):
        raise RuntimeError(
            f"httpx {httpx.__version__} no longer keeps an httpcore AsyncConnectionPool in AsyncHTTPTransport._pool;"
            " webhooks/outbound.py must be adapted"
        )


_check_httpx()


def _resolver(settings: Settings) -> dns.asyncresolver.Resolver:
    if not settings.dns_resolver:
        resolver = dns.asyncresolver.Resolver()
    else:
        host, _, port = settings.dns_resolver.rpartition(":")
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [host.strip("[]")]
        resolver.port = int(port)
    resolver.timeout = DNS_TIMEOUT_S
    resolver.lifetime = DNS_TIMEOUT_S
    return resolver


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
        resolver = _resolver(settings)
        for rdtype in ("A", "AAAA"):
            try:
                answer = await resolver.resolve(host, rdtype)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
                raise httpcore.ConnectError(f"DNS lookup of {host} failed ({type(exc).__name__})") from None
            found.extend(r.address for r in answer)
        if not found:
            raise httpcore.ConnectError(f"{host} does not resolve")
        return found
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise httpcore.ConnectError(f"{host} does not resolve ({exc.strerror})") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def check_addresses(host: str, addresses: list[str], settings: Settings) -> None:
    """RefusedTarget unless every address may be reached (all, not any: the client may pick any)."""
    for address in addresses:
        try:
            check_host(str(ipaddress.ip_address(address.split("%", 1)[0])), settings)
        except (UnsafeUrl, ValueError) as exc:
            raise RefusedTarget(f"{host} resolves to {address}: {exc}") from None


class PublicOnlyBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, but a TCP connect goes only to a checked address."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await resolve(host, port, self._settings)
        check_addresses(host, addresses, self._settings)
        return await self._inner.connect_tcp(
            addresses[0], port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise RefusedTarget("unix sockets are not webhook targets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def delivery_client(settings: Settings, max_connections: int = 100) -> httpx.AsyncClient:
    """The client deliveries are sent with: public targets only, no redirects, no proxies from the environment."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    transport = httpx.AsyncHTTPTransport(limits=limits, trust_env=False)
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=False),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=PublicOnlyBackend(settings),
    )
    return httpx.AsyncClient(
        transport=transport,
        follow_redirects=False,
        trust_env=False,
        timeout=httpx.Timeout(settings.webhook_timeout_s),
        headers={"user-agent": "h0p-webhooks/1"},
    )
