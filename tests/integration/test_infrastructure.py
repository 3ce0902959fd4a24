"""The foundation against real parts: a command travels through a real Kafka broker, is consumed
in a consumer group, written through a real MongoDB-protocol server and read back."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pymongo.asynchronous.database import AsyncDatabase

from services.common.kafka import (
    TopicSpec,
    TopicsRefused,
    ensure_topics,
    make_consumer,
    make_producer,
    topics_for,
)
from services.common.messages import RefreshInvoices, parse_command
from services.common.mongo import Document, IndexSpec, ensure_indexes
from services.common.settings import Settings

pytestmark = pytest.mark.integration


async def _poll_one(consumer: AIOKafkaConsumer, timeout_s: float = 30.0) -> Any:
    async with asyncio.timeout(timeout_s):
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=1)
            for records in batches.values():
                if records:
                    return records[0]


async def test_command_round_trip_through_kafka_and_mongo(
    settings: Settings, mongo_db: AsyncDatabase[Document]
) -> None:
    command = RefreshInvoices(realm_id="9130350000000001", issued_by="api", local_customer_id="c-1")

    producer = make_producer(settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        sent = await producer.send_and_wait(
            settings.commands_topic, command.to_bytes(), key=command.kafka_key()
        )
    finally:
        await producer.stop()

    consumer = make_consumer(
        settings.kafka_bootstrap_servers, settings.sync_consumer_group, settings.commands_topic
    )
    await consumer.start()
    try:
        record = await _poll_one(consumer)
        received = parse_command(record.value)
        assert received == command
        assert record.key == b"9130350000000001"
        assert (record.partition, record.offset) == (sent.partition, sent.offset)

        await mongo_db.command_status.insert_one(
            {
                "_id": received.command_id,
                "type": received.type,
                "realm_id": received.realm_id,
                "status": "received",
                "partition": record.partition,
                "offset": record.offset,
            }
        )
        # Commit only after the write is durable (docs/design.md invariant 5).
        tp = TopicPartition(record.topic, record.partition)
        await consumer.commit({tp: record.offset + 1})
        assert await consumer.committed(tp) == record.offset + 1
    finally:
        await consumer.stop()

    stored = await mongo_db.command_status.find_one({"_id": command.command_id})
    assert stored == {
        "_id": command.command_id,
        "type": "RefreshInvoices",
        "realm_id": "9130350000000001",
        "status": "received",
        "partition": sent.partition,
        "offset": sent.offset,
    }

    # A new member of the same group starts after the committed offset: nothing is redelivered.
    again = make_consumer(
        settings.kafka_bootstrap_servers, settings.sync_consumer_group, settings.commands_topic
    )
    await again.start()
    try:
        batches = await again.getmany(timeout_ms=2_000)
        assert sum(len(r) for r in batches.values()) == 0
    finally:
        await again.stop()


async def test_uncommitted_command_is_redelivered_to_the_group(settings: Settings) -> None:
    command = RefreshInvoices(realm_id="42", issued_by="api", local_customer_id="c-2")
    producer = make_producer(settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(settings.commands_topic, command.to_bytes(), key=b"42")
    finally:
        await producer.stop()

    for _ in range(2):  # the first reader "crashes" before committing
        consumer = make_consumer(
            settings.kafka_bootstrap_servers, settings.sync_consumer_group, settings.commands_topic
        )
        await consumer.start()
        try:
            record = await _poll_one(consumer)
            assert parse_command(record.value).command_id == command.command_id
        finally:
            await consumer.stop()


async def test_ensure_topics_is_idempotent(settings: Settings) -> None:
    await ensure_topics(settings.kafka_bootstrap_servers, topics_for(settings))
    await ensure_topics(settings.kafka_bootstrap_servers, topics_for(settings))
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_topics([settings.commands_topic])
    finally:
        await admin.close()
    assert len(described[0]["partitions"]) == settings.commands_partitions


async def test_a_topic_the_broker_refuses_is_an_error_not_a_success(
    settings: Settings, test_id: str
) -> None:
    # A single broker cannot hold three replicas: the broker answers with a per-topic error.
    name = f"test-{test_id}.refused"
    with pytest.raises(TopicsRefused) as refused:
        await ensure_topics(
            settings.kafka_bootstrap_servers, [TopicSpec(name, partitions=1, replication_factor=3)]
        )
    assert set(refused.value.reasons) == {name}
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        assert name not in await admin.list_topics()
    finally:
        await admin.close()


async def test_indexes_are_created_once_and_enforced(mongo_db: AsyncDatabase[Document]) -> None:
    spec = IndexSpec("invoices", [("realm_id", 1), ("invoice_id", 1)], "realm_invoice", unique=True)
    await ensure_indexes(mongo_db, [spec])
    await ensure_indexes(mongo_db, [spec])
    names = [ix["name"] async for ix in await mongo_db.invoices.list_indexes()]
    assert names.count("realm_invoice") == 1

    await mongo_db.invoices.insert_one({"realm_id": "1", "invoice_id": "7"})
    with pytest.raises(Exception, match="duplicate key"):
        await mongo_db.invoices.insert_one({"realm_id": "1", "invoice_id": "7"})
