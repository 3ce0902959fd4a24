"""An event id always means the same event: an InvoiceUpdated re-emitted from the outbox after a
crash is byte for byte the one emitted first, on real Kafka and a real MongoDB-protocol server."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from aiokafka import AIOKafkaProducer
from pymongo.asynchronous.database import AsyncDatabase

from services.common import jsoncodec
from services.common.kafka import make_producer
from services.common.mongo import Document
from services.common.settings import Settings
from services.sync.events import InvoiceEvents
from services.sync.quickbooks.mapping import invoice_record
from services.sync.store import InvoiceStore, Outbox
from tests.support import read_topic

pytestmark = pytest.mark.integration

REALM = "9130350000000888"
# Microseconds a BSON date cannot keep: the first emission sees them, the stored copy does not.
WRITTEN_AT = datetime(2026, 11, 2, 10, 30, 15, 123456, tzinfo=UTC)


@pytest.fixture
async def producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    p = make_producer(settings.kafka_bootstrap_servers)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


async def test_an_event_re_emitted_by_the_outbox_is_the_same_bytes(
    settings: Settings, mongo_db: AsyncDatabase[Document], producer: AIOKafkaProducer
) -> None:
    store = InvoiceStore(mongo_db, lambda: WRITTEN_AT)
    outbox = Outbox(mongo_db, lambda: WRITTEN_AT)
    events = InvoiceEvents(
        producer, settings.invoice_events_topic, store, outbox, lambda: WRITTEN_AT
    )
    records = [
        invoice_record(
            REALM,
            {
                "Id": str(n),
                "SyncToken": "3",
                "CustomerRef": {"value": "58"},
                "TotalAmt": Decimal("1234.56") + n,
                "Balance": Decimal("0.10"),
                "DueDate": "2026-12-31",
                "MetaData": {"LastUpdatedTime": "2026-11-01T09:00:00.5-07:00"},
            },
        )
        for n in range(1, 4)
    ]
    # The page as the handler writes it, and a crash after the events went out but before the
    # outbox entry was closed.
    await outbox.open("command-1", [r.key for r in records])
    applied = await store.apply(records, {"58": "cust-58"})
    assert await events.publish(applied.written) == 3
    # The redelivered command flushes its open entry: the same versions, emitted again.
    assert await events.flush(command_id="command-1") == 3

    emitted = await read_topic(settings.kafka_bootstrap_servers, settings.invoice_events_topic)
    by_id: dict[str, list[tuple[bytes | None, bytes]]] = defaultdict(list)
    for record in emitted:
        by_id[jsoncodec.loads(record.value)["id"]].append((record.key, record.value))
    assert len(by_id) == 3
    for deliveries in by_id.values():
        assert len(deliveries) == 2
        first, again = deliveries
        assert again == first  # key, attributes and data: the same bytes
    times = {jsoncodec.loads(value)["time"] for (_, value), _ in by_id.values()}
    assert times == {"2026-11-02T10:30:15.123Z"}
