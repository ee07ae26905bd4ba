"""``h0p migrate`` creates the Kafka topics, against the session's real broker (Tansu) on loopback.

Tansu keeps one copy of a partition whatever replication factor is asked for, so the factor
itself cannot be read back here; the partition count and ``min.insync.replicas`` can.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from h0p_settings import Settings
from tests.e2e.test_cli import env_for, h0p
from tests.redirect.conftest import unique
from tests.services import free_port


@pytest.fixture
async def admin(settings: Settings) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await client.start()
    try:
        yield client
    finally:
        await client.close()


async def _partitions(admin: AIOKafkaAdminClient, topic: str) -> int:
    (described,) = await admin.describe_topics([topic])
    assert described["error_code"] == 0
    return len(described["partitions"])


async def _min_insync(admin: AIOKafkaAdminClient, topic: str) -> str:
    (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    ((_, _, _, _, entries),) = response.resources
    return {entry[0]: entry[1] for entry in entries}["min.insync.replicas"]


async def test_migrate_creates_the_click_and_dead_letter_topics_with_the_configured_partitions(
    settings: Settings, admin: AIOKafkaAdminClient
) -> None:
    clicks, dead = unique("clicks-migrate-"), unique("dlq-migrate-")
    env = env_for(
        settings, H0P_KAFKA_TOPIC=clicks, H0P_KAFKA_DEAD_LETTER_TOPIC=dead,
        H0P_KAFKA_PARTITIONS="6", H0P_KAFKA_REPLICATION="3", H0P_KAFKA_MIN_INSYNC="2",
    )  # fmt: skip
    result = await h0p("migrate", env=env)

    assert result.code == 0, result.stderr
    assert f"created topic {clicks} (6 partitions, replication 3, min.insync.replicas 2)" in result.stderr
    assert f"created topic {dead} (6 partitions" in result.stderr
    assert result.stdout == ""
    assert await _partitions(admin, clicks) == 6
    assert await _partitions(admin, dead) == 6
    assert await _min_insync(admin, clicks) == "2"  # an acks=all write needs two copies in sync
    assert await _min_insync(admin, dead) == "2"


async def test_migrate_again_leaves_existing_topics_and_warns_when_their_partitions_differ(
    settings: Settings, admin: AIOKafkaAdminClient
) -> None:
    clicks, dead = unique("clicks-again-"), unique("dlq-again-")
    env = env_for(settings, H0P_KAFKA_TOPIC=clicks, H0P_KAFKA_DEAD_LETTER_TOPIC=dead, H0P_KAFKA_PARTITIONS="3")
    first = await h0p("migrate", env=env)
    same = await h0p("migrate", env=env)
    more = await h0p("migrate", env={**env, "H0P_KAFKA_PARTITIONS": "5"})

    assert (first.code, same.code, more.code) == (0, 0, 0), first.stderr + same.stderr + more.stderr
    assert f"topic {clicks} exists (3 partitions)" in same.stderr and "created" not in same.stderr
    assert f"topic '{clicks}' exists with 3 partitions, not 5 (H0P_KAFKA_PARTITIONS)" in more.stderr
    assert await _partitions(admin, clicks) == 3  # never changed by migrate: keys would move


async def test_min_insync_is_never_above_the_replication_factor(settings: Settings, admin: AIOKafkaAdminClient) -> None:
    clicks = unique("clicks-one-copy-")
    env = env_for(settings, H0P_KAFKA_TOPIC=clicks, H0P_KAFKA_REPLICATION="1", H0P_KAFKA_MIN_INSYNC="2")
    result = await h0p("migrate", env=env)

    assert result.code == 0, result.stderr
    assert await _min_insync(admin, clicks) == "1"  # 2 of 1 copy would refuse every acks=all write


async def test_an_unreachable_broker_fails_migrate_in_one_line_and_skip_topics_does_without(
    settings: Settings,
) -> None:
    env = env_for(settings, H0P_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}")
    failed = await h0p("migrate", env=env)
    skipped = await h0p("migrate", "--skip-topics", env=env)

    assert failed.code == 1
    lines = failed.stderr.strip().splitlines()
    assert lines[0] == "database schema is up to date" and len(lines) == 2, lines  # then one line on Kafka
    assert "cannot reach Kafka at 127.0.0.1:" in lines[1] and "--skip-topics" in lines[1]
    assert skipped.code == 0, skipped.stderr
    assert "topic" not in skipped.stderr
