"""Click events: what they carry, and that none is lost when the broker is away or the edge stops."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from h0p_settings import Settings
from redirect.app import EdgeApp, create_app
from tests.redirect.conftest import LinkMaker, edge_client, edge_settings, read_events, started, unique
from tests.services import Broker, free_port

pytestmark = pytest.mark.slow


async def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.05)


def spool_files(directory: str) -> list[Path]:
    return sorted(Path(directory).glob("*.jsonl"))


def spooled_lines(directory: str) -> int:
    return sum(p.read_bytes().count(b"\n") for p in spool_files(directory))


def counter(app: EdgeApp, state: str) -> float:
    child = {
        "sent": app.metrics.events_sent, "spooled": app.metrics.events_spooled,
        "replayed": app.metrics.events_replayed, "dropped": app.metrics.events_dropped,
    }[state]  # fmt: skip
    return float(child._value.get())


async def test_each_hit_becomes_one_event_with_what_analytics_needs(
    settings: Settings, tmp_path: Path, make_link: LinkMaker
) -> None:
    s = edge_settings(settings, tmp_path)
    slug = unique("ev")
    link = await make_link("https://example.com/e", slug=slug)
    async with edge_client(s) as (_, client):
        await client.get(
            f"/{slug}?qr=1&utm_source=poster",
            headers={"user-agent": "UA/1", "referer": "https://ref.example/", "accept-language": "fr"},
        )
        await client.head(f"/{slug}")
        await client.get("/missing-slug-xyz")
    found = await read_events(settings.kafka_bootstrap, s.kafka_topic, expect=3)
    assert len(found) == 3
    qr, head, orphan = sorted(found, key=lambda e: e.id)
    assert qr.link_id == link.link_id and qr.workspace_id == link.workspace_id
    assert qr.qr is True and qr.query == "utm_source=poster"
    assert qr.url == "https://example.com/e?utm_source=poster"
    assert (qr.ua, qr.referer, qr.lang, qr.ip, qr.status) == ("UA/1", "https://ref.example/", "fr", "203.0.113.7", 302)
    assert head.method == "HEAD" and head.qr is False
    assert orphan.link_id is None and orphan.slug == "missing-slug-xyz" and orphan.status == 404


@pytest.mark.chaos
async def test_paused_broker_spools_events_and_replays_each_exactly_once(
    settings: Settings, tmp_path: Path, broker: Broker, make_link: LinkMaker
) -> None:
    s = edge_settings(settings, tmp_path)
    slug = unique("ch")
    await make_link(slug=slug)
    async with edge_client(s) as (app, client):
        for _ in range(5):
            assert (await client.get(f"/{slug}")).status_code == 302
        await wait_until(lambda: counter(app, "sent") == 5)
        broker.pause()
        try:
            started_at = time.monotonic()
            codes = [(await client.get(f"/{slug}")).status_code for _ in range(30)]
            elapsed = time.monotonic() - started_at
            assert codes == [302] * 30 and elapsed < 2.0  # redirects never wait for the broker
            await wait_until(lambda: counter(app, "spooled") == 30)
            assert spool_files(s.spool_dir)
        finally:
            broker.resume()
        await wait_until(lambda: counter(app, "replayed") == 30, timeout=30)
        for _ in range(5):  # new events flow again, after the spooled ones
            await client.get(f"/{slug}")
        await wait_until(lambda: counter(app, "sent") == 10)
        assert not spool_files(s.spool_dir)
    found = await read_events(settings.kafka_bootstrap, s.kafka_topic, expect=40)
    assert len(found) == 40 and len({e.id for e in found}) == 40
    assert counter(app, "dropped") == 0


@pytest.mark.chaos
async def test_edge_starts_without_a_broker_and_a_later_edge_replays_the_spool(
    settings: Settings, tmp_path: Path, make_link: LinkMaker
) -> None:
    slug = unique("nb")
    await make_link(slug=slug)
    down = edge_settings(settings, tmp_path, kafka_bootstrap=f"127.0.0.1:{free_port()}")
    async with edge_client(down) as (app, client):
        codes = [(await client.get(f"/{slug}")).status_code for _ in range(12)]
        ready = await client.get("/readyz")  # redirects work: the edge stays in its load balancer
        assert ready.status_code == 200 and "broker unreachable" in ready.text
    assert codes == [302] * 12
    assert counter(app, "spooled") == 12  # the shutdown drained the queue into the spool
    lines = spooled_lines(down.spool_dir)
    assert lines == 12
    up = edge_settings(settings, tmp_path, kafka_topic=down.kafka_topic)  # same spool dir, broker reachable
    async with started(create_app(up)) as later:
        await wait_until(lambda: counter(later, "replayed") == 12)
    found = await read_events(settings.kafka_bootstrap, up.kafka_topic, expect=12)
    assert len(found) == 12 and len({e.id for e in found}) == 12
    assert not spool_files(up.spool_dir)


async def test_shutdown_sends_every_queued_event_before_exit(
    settings: Settings, tmp_path: Path, make_link: LinkMaker
) -> None:
    # a linger far longer than the test: only the shutdown drain can deliver these
    s = edge_settings(settings, tmp_path, event_linger_ms=60_000, event_batch_size=100_000)
    slug = unique("sd")
    await make_link(slug=slug)
    async with edge_client(s) as (app, client):
        for _ in range(25):
            await client.get(f"/{slug}")
        assert counter(app, "sent") == 0
    assert counter(app, "sent") == 25
    found = await read_events(settings.kafka_bootstrap, s.kafka_topic, expect=25)
    assert len(found) == 25


async def test_full_queue_overflows_to_the_spool_instead_of_dropping(
    settings: Settings, tmp_path: Path, make_link: LinkMaker
) -> None:
    s = edge_settings(settings, tmp_path, event_queue_size=2, event_linger_ms=60_000, event_batch_size=100_000)
    slug = unique("of")
    await make_link(slug=slug)
    async with edge_client(s) as (app, client):
        for _ in range(10):
            await client.get(f"/{slug}")
        assert counter(app, "spooled") == 8
    # the last cycle at shutdown replays the spool, then sends the 2 queued ones (order kept)
    assert (counter(app, "replayed"), counter(app, "sent"), counter(app, "dropped")) == (8, 2, 0)
    found = await read_events(settings.kafka_bootstrap, s.kafka_topic, expect=10)
    assert len(found) == 10 and len({e.id for e in found}) == 10
