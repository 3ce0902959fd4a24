"""InvoiceUpdated events are produced a batch per partition: each lands exactly once, on the
partition its key hashes to (as a keyed `send` would put it), an invoice's versions in order."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

import pytest
from aiokafka.partitioner import DefaultPartitioner
from pymongo.asynchronous.database import AsyncDatabase

from services.common import jsoncodec
from services.common.kafka import make_producer
from services.common.mongo import Document
from services.common.settings import Settings
from services.sync.events import InvoiceEvents
from services.sync.store import InvoiceStore, Outbox
from tests.api_support import consume_all

pytestmark = pytest.mark.integration

REALM = "9130350000000001"
NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


def stored(invoice_id: int, version: int) -> Document:
    """An invoice version as the store hands it back after writing it."""
    return {
        "_id": f"{REALM}:{invoice_id}",
        "realm_id": REALM,
        "invoice_id": str(invoice_id),
        "qbo_customer_id": "58",
        "local_customer_id": "cust-58",
        "doc_number": f"D-{invoice_id}",
        "txn_date": "2026-11-01",
        "due_date": "2026-12-01",
        "currency": "USD",
        "total_amt_micros": 1_234_560_000 + invoice_id,
        "balance_micros": 1_000_010_000,
        "status": "open",
        "deleted": False,
        "sync_token": version - 1,
        "last_updated_time": NOW,
        "last_updated_text": "2026-12-02T02:00:00-08:00",
        "version": version,
        "stored_at": NOW,
    }


async def test_each_event_lands_once_on_its_keys_partition_in_version_order(
    settings: Settings, mongo_db: AsyncDatabase[Document]
) -> None:
    producer = make_producer(settings.kafka_bootstrap_servers)
    await producer.start()
    clock = lambda: NOW  # noqa: E731
    try:
        events = InvoiceEvents(
            producer,
            settings.invoice_events_topic,
            InvoiceStore(mongo_db, clock),
            Outbox(mongo_db, clock),
            clock,
        )
        # Enough events to fill several producer batches per partition; versions interleaved.
        docs = [stored(i, v) for v in (1, 2, 3) for i in range(300)]
        assert await events.publish(docs) == 900
        assert await events.publish([]) == 0
        partitions = sorted(await producer.partitions_for(settings.invoice_events_topic))
    finally:
        await producer.stop()

    records = await consume_all(settings, settings.invoice_events_topic, 900)
    assert len(records) == 900
    partitioner = DefaultPartitioner()
    versions: dict[bytes, list[tuple[int, int]]] = defaultdict(list)
    for record in records:
        assert record.partition == partitioner(record.key, partitions, partitions)
        event = jsoncodec.loads(record.value)
        assert record.key == f"{REALM}:{event['data']['invoice_id']}".encode()
        versions[record.key].append((record.offset, event["data"]["version"]))
    assert len(versions) == 300
    for seen in versions.values():
        assert [v for _, v in sorted(seen)] == [1, 2, 3]
