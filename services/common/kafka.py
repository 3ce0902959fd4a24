"""Kafka wiring shared by both services: producer and consumer factories and topic set-up.

Delivery guarantees are decided here, once:
- producers use acks=all and idempotence, so a retried send cannot duplicate a record;
- consumers never auto-commit: a handler commits an offset only after its work is durable
  (docs/design.md invariant 5), so a crash means redelivery, never loss.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from services.common.settings import Settings

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int = 1
    # Topic-level configs, e.g. {"retention.ms": "604800000"}.
    config: dict[str, str] | None = None


def topics_for(settings: Settings) -> list[TopicSpec]:
    """The topics the system needs, sized from settings."""
    rf = settings.kafka_replication_factor
    return [
        TopicSpec(settings.commands_topic, settings.commands_partitions, rf),
        TopicSpec(settings.invoice_events_topic, settings.events_partitions, rf),
        TopicSpec(settings.dead_letter_topic, 1, rf),
    ]


def make_producer(bootstrap_servers: str, client_id: str = "qbo-sync") -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        # A page of events in a few batches rather than dozens of 16 KiB ones (aiokafka's
        # default): each batch of a partition waits for the one before it, so their number is
        # the number of round trips. Below the broker's default limit of 1 MiB per batch.
        max_batch_size=512 * 1024,
        request_timeout_ms=30_000,
    )


def make_consumer(
    bootstrap_servers: str,
    group_id: str,
    *topics: str,
    client_id: str = "qbo-sync",
    auto_offset_reset: str = "earliest",
    max_poll_records: int = 100,
) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap_servers,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset=auto_offset_reset,
        max_poll_records=max_poll_records,
        # Only read records whose producing transaction (if any) committed.
        isolation_level="read_committed",
    )


class TopicsRefused(KafkaError):  # type: ignore[misc]  # aiokafka ships no type hints
    """The broker refused to create some topics; `reasons` maps each topic to why."""

    def __init__(self, reasons: dict[str, str]) -> None:
        self.reasons = reasons
        super().__init__("; ".join(f"{name}: {why}" for name, why in sorted(reasons.items())))


def _refused_topics(response: object) -> dict[str, str]:
    """Per-topic errors of a CreateTopics answer. aiokafka returns them instead of raising, so
    a refused topic (bad replication factor, bad config, no authorization) would otherwise pass
    for created. "Already exists" is not a refusal: another process won the race."""
    refused: dict[str, str] = {}
    for entry in getattr(response, "topic_errors", None) or ():
        name, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 else None
        if code == 0 or code == TopicAlreadyExistsError.errno:
            continue
        refused[name] = message or for_code(code).__name__
    return refused


async def ensure_topics(bootstrap_servers: str, specs: Iterable[TopicSpec]) -> None:
    """Create missing topics; existing ones are left as they are (idempotent)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(
                s.name,
                num_partitions=s.partitions,
                replication_factor=s.replication_factor,
                topic_configs=s.config or {},
            )
            for s in specs
            if s.name not in existing
        ]
        if new:
            try:
                response = await admin.create_topics(new)
            except TopicAlreadyExistsError:
                response = None  # another process won the race; the topic exists
            refused = _refused_topics(response)
            if refused:
                raise TopicsRefused(refused)
            log.info("kafka.topics_created", topics=[t.name for t in new])
    finally:
        await admin.close()


async def delete_topics(bootstrap_servers: str, names: Iterable[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        await admin.delete_topics(list(names))
    finally:
        await admin.close()


class RevokeFirst(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka has no hints
    """A rebalance listener that lets its consumer finish with the partitions taken away
    (`on_revoked`: commit what is done, forget the rest) before another member gets them."""

    def __init__(
        self,
        on_revoked: Callable[[Collection[TopicPartition]], Awaitable[None]],
        name: str,
    ) -> None:
        self._on_revoked = on_revoked
        self._name = name

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        await self._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        log.info(
            f"{self._name}.partitions_assigned", partitions=sorted(tp.partition for tp in assigned)
        )
