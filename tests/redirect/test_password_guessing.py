"""Password guessing against the edge over real HTTP: per client (IPv6 by /64), per link, and per process."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
from pathlib import Path

import httpx
import redis.asyncio as aioredis
from argon2 import PasswordHasher
from hypothesis import given
from hypothesis import strategies as st

from h0p_settings import Settings
from redirect.client import client_group
from tests.redirect.conftest import LinkMaker, edge_settings, served, unique
from tests.redirect.test_resolution import eventually

HASH = PasswordHasher().hash("open sesame")
LOOPBACK = (ipaddress.ip_network("127.0.0.1/32"),)  # the test client is the trusted proxy: X-Forwarded-For counts


def guessing(settings: Settings, tmp_path: Path, **changes: object) -> Settings:
    return edge_settings(settings, tmp_path, trusted_proxies=LOOPBACK, **changes)


async def guess(client: httpx.AsyncClient, slug: str, ip: str, password: str = "wrong") -> httpx.Response:
    return await client.post(f"/{slug}", data={"password": password}, headers={"x-forwarded-for": ip})


async def test_rotating_ipv6_addresses_within_one_64_share_one_attempt_budget(
    settings: Settings, tmp_path: Path, make_link: LinkMaker
) -> None:
    slug = unique("pw6")
    await make_link(slug=slug, password_hash=HASH)
    async with served(guessing(settings, tmp_path, password_attempts=3)) as (_, base):
        async with httpx.AsyncClient(base_url=base) as client:
            codes = [(await guess(client, slug, f"2001:db8:7:42::{i:x}")).status_code for i in range(1, 7)]
            last = await guess(client, slug, "2001:db8:7:42:ffff:1:2:3", "open sesame")
            # another /64 (a different client) still has its own attempts
            other = await guess(client, slug, "2001:db8:7:43::1", "open sesame")
    assert codes == [403, 403, 403, 429, 429, 429]
    assert last.status_code == 429 and int(last.headers["retry-after"]) > 0
    assert other.status_code == 303


async def test_guesses_from_many_addresses_hit_a_per_link_budget_that_backs_off(
    settings: Settings, tmp_path: Path, make_link: LinkMaker, redis: aioredis.Redis
) -> None:
    slug, other_slug = unique("pwl"), unique("pwl")
    record = await make_link(slug=slug, password_hash=HASH)
    await make_link(slug=other_slug, password_hash=HASH)
    local = guessing(settings, tmp_path, password_attempts=100, password_link_attempts=4)
    async with served(local) as (app, base), httpx.AsyncClient(base_url=base) as client:
        codes = [(await guess(client, slug, f"198.51.100.{i}")).status_code for i in range(1, 6)]
        first_lock = await guess(client, slug, "198.51.100.77", "open sesame")  # even the right password waits
        untouched = await guess(client, other_slug, "198.51.100.78", "open sesame")  # other links are not locked
        assert codes == [403, 403, 403, 403, 429]
        assert first_lock.status_code == 429 and untouched.status_code == 303
        first_wait = int(first_lock.headers["retry-after"])
        assert first_wait > 0

        # The lock runs out (its key expires): the next round of guesses locks the link twice as long.
        assert await redis.delete(app.handler.gate.lock_key(record)) == 1
        again = [(await guess(client, slug, f"203.0.113.{i}")).status_code for i in range(1, 6)]
        assert again == [403, 403, 403, 403, 429]
        second_wait = int((await guess(client, slug, "203.0.113.99")).headers["retry-after"])
        assert second_wait >= 2 * first_wait - 1


async def test_password_checks_beyond_the_process_bound_answer_429_and_never_block_the_loop(
    settings: Settings, tmp_path: Path, make_link: LinkMaker
) -> None:
    slow_hash = PasswordHasher(time_cost=300, memory_cost=8192).hash("open sesame")  # about a second per check
    slug, plain = unique("pwb"), unique("plain")
    await make_link(slug=slug, password_hash=slow_hash)
    await make_link("https://example.com/plain", slug=plain)
    local = guessing(settings, tmp_path, password_checks=1)
    async with served(local) as (app, base), httpx.AsyncClient(base_url=base, timeout=30) as client:
        gate = app.handler.gate
        first = asyncio.create_task(guess(client, slug, "192.0.2.1"))
        await eventually(lambda: asyncio.sleep(0, gate.checks_in_flight == 1), 10)
        # the loop answers other requests while argon2 runs, and a second check is refused at once
        redirect = await client.get(f"/{plain}")
        busy = await guess(client, slug, "192.0.2.2", "open sesame")
        assert not first.done() and gate.checks_in_flight == 1
        assert redirect.status_code == 302
        assert busy.status_code == 429 and busy.headers["retry-after"] == "1" and "busy" in busy.text
        assert (await first).status_code == 403
        # once the check is done the same password from the refused client is checked (it was not counted)
        assert (await guess(client, slug, "192.0.2.2", "open sesame")).status_code == 303


def test_password_settings_are_read_from_the_environment() -> None:
    from h0p_settings import load_settings

    loaded = load_settings({"H0P_PASSWORD_LINK_ATTEMPTS": "40", "H0P_PASSWORD_CHECKS": "3"})
    assert dataclasses.astuple(loaded)  # builds
    assert (loaded.password_link_attempts, loaded.password_checks) == (40, 3)


@given(st.ip_addresses(v=6), st.integers(min_value=0, max_value=2**64 - 1))
def test_every_address_of_an_ipv6_64_is_one_client(address: ipaddress.IPv6Address, host_bits: int) -> None:
    sibling = ipaddress.IPv6Address((int(address) >> 64 << 64) | host_bits)
    if address.ipv4_mapped is None and sibling.ipv4_mapped is None:  # ::ffff:0:0/96 is IPv4
        assert client_group(str(address)) == client_group(str(sibling))
        assert ipaddress.ip_network(client_group(str(address))).prefixlen == 64
        assert sibling in ipaddress.ip_network(client_group(str(address)))


@given(st.ip_addresses(v=4))
def test_an_ipv4_client_is_its_address_also_when_mapped_into_ipv6(address: ipaddress.IPv4Address) -> None:
    assert client_group(str(address)) == str(address)
    assert client_group(f"::ffff:{address}") == str(address)


@given(st.text(max_size=60))
def test_a_client_that_is_not_an_address_is_kept_as_given(text: str) -> None:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        assert client_group(text) == text
