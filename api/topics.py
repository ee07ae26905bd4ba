"""The Kafka topics H0p uses, created by ``h0p migrate`` with the partitions and copies of the settings.

A broker's auto-creation would make them with its own defaults (often one partition, one copy):
ingest and the dead-letter path scale by partitions (a consumer group splits them), and a click
acknowledged with ``acks=all`` is safe only if the topic keeps ``H0P_KAFKA_REPLICATION`` copies and
refuses writes below ``H0P_KAFKA_MIN_INSYNC`` of them. Creating is idempotent: a topic that exists
is left as it is, with a warning when its partition count differs (adding partitions moves keys
to other partitions, so that stays the operator's decision).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from h0p_settings import Settings

CONNECT_TIMEOUT_S = 15.0
REQUEST_TIMEOUT_MS = 15_000


class TopicsFailed(Exception):
    """The broker could not be reached, or refused a topic; the message says which and why."""


@dataclass(frozen=True, slots=True)
class TopicResult:
    topic: str
    created: bool
    partitions: int  # what the topic has now
    warning: str = ""


def topic_names(settings: Settings) -> list[str]:
    """Every topic H0p produces to or consumes from."""
    return [settings.kafka_topic, settings.kafka_dead_letter_topic]


def _new_topic(settings: Settings, name: str) -> NewTopic:
    # min.insync.replicas above the replication factor would refuse every acks=all write.
    insync = min(settings.kafka_min_insync, settings.kafka_replication)
    return NewTopic(
        name, settings.kafka_partitions, settings.kafka_replication, topic_configs={"min.insync.replicas": str(insync)}
    )


async def ensure_topics(settings: Settings) -> list[TopicResult]:
    """Create the missing topics; raise ``TopicsFailed``."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=REQUEST_TIMEOUT_MS, client_id="h0p-migrate"
    )
    try:
        await asyncio.wait_for(admin.start(), CONNECT_TIMEOUT_S)
    except (KafkaError, OSError, TimeoutError) as exc:
        await _close(admin)
        raise TopicsFailed(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc or type(exc).__name__}") from None
    try:
        return await _ensure(admin, settings)
    except (KafkaError, OSError, TimeoutError) as exc:
        raise TopicsFailed(f"Kafka at {settings.kafka_bootstrap} failed: {exc or type(exc).__name__}") from None
    finally:
        await _close(admin)


async def _ensure(admin: AIOKafkaAdminClient, settings: Settings) -> list[TopicResult]:
    names = topic_names(settings)
    response = await admin.create_topics([_new_topic(settings, n) for n in names], timeout_ms=REQUEST_TIMEOUT_MS)
    errors = {error[0]: (error[1], error[2] if len(error) > 2 else None) for error in response.topic_errors}
    existing = [n for n in names if errors.get(n, (0, None))[0] == TopicAlreadyExistsError.errno]
    for name in names:
        code, message = errors.get(name, (0, None))
        if code not in (0, TopicAlreadyExistsError.errno):
            reason = message or for_code(code).__name__
            raise TopicsFailed(
                f"Kafka refused to create topic {name!r} ({settings.kafka_partitions} partitions, replication"
                f" {settings.kafka_replication}): {reason}; see H0P_KAFKA_PARTITIONS, H0P_KAFKA_REPLICATION"
            )
    # Describe only topics that exist: asking a broker that auto-creates about a missing one creates it.
    partitions = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(existing)} if existing else {}
    results = []
    for name in names:
        if name not in existing:
            results.append(TopicResult(name, True, settings.kafka_partitions))
            continue
        have = partitions.get(name, 0)
        warning = ""
        if have != settings.kafka_partitions:
            warning = (
                f"topic {name!r} exists with {have} partitions, not {settings.kafka_partitions}"
                " (H0P_KAFKA_PARTITIONS); left as it is: adding partitions moves keys, do it with kafka-topics --alter"
            )
        results.append(TopicResult(name, False, have, warning))
    return results


async def _close(admin: AIOKafkaAdminClient) -> None:
    try:
        await asyncio.wait_for(admin.close(), 5.0)
    except (KafkaError, OSError, TimeoutError):
        pass
