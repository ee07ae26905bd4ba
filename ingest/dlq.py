"""Dead letters: events that cannot be stored go, untouched, to their own topic with the reason."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from h0p_settings import Settings

log = logging.getLogger("h0p.ingest")


class DeadLetters:
    """Producer for ``settings.kafka_dead_letter_topic``; a send is awaited before offsets are committed."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.kafka_dead_letter_topic
        self.count = 0
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            enable_idempotence=settings.kafka_idempotence,
            acks="all",
            request_timeout_ms=10_000,
            client_id="h0p-ingest-dlq",
        )

    async def start(self) -> None:
        await self._producer.start()

    async def send(self, value: bytes | None, key: bytes | None, reason: str, source: str) -> None:
        """Publish one dead letter, retrying until the broker has it (we must not commit past it)."""
        headers = [("h0p-error", reason[:500].encode()), ("h0p-source", source.encode())]
        delay = 0.2
        while True:
            try:
                await asyncio.wait_for(
                    self._producer.send_and_wait(self.topic, value=value, key=key, headers=headers), timeout=15.0
                )
                break
            except (KafkaError, TimeoutError) as exc:
                log.warning("dead-letter topic unreachable (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self.count += 1
        log.warning("dead-lettered %s: %s", source, reason)

    async def stop(self) -> None:
        await self._producer.stop()
