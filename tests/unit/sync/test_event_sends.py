"""Events of a small command are not queued behind other realms' pages (services/sync/events.py,
docs/design.md invariant 8): with pages waiting for a partition's one slot in aiokafka's
producer, a webhook's event goes out beside them, and each page's events keep their order."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aiokafka.producer.message_accumulator import BatchBuilder

from services.sync.events import InvoiceEvents
from services.sync.quickbooks.mapping import invoice_record
from services.sync.store import InvoiceStore

NOW = datetime(2030, 3, 15, tzinfo=UTC)


def stored(realm_id: str, invoice_id: int) -> dict[str, Any]:
    obj = {
        "Id": str(invoice_id),
        "SyncToken": "0",
        "MetaData": {"LastUpdatedTime": "2030-03-01T09:00:00-08:00"},
        "CustomerRef": {"value": "1"},
        "TotalAmt": Decimal("10.00"),
        "Balance": Decimal("10.00"),
    }
    record = invoice_record(realm_id, obj)
    fields = InvoiceStore._fields(None, record, "cust-1", 1, NOW)  # type: ignore[arg-type]
    return {"_id": record.key, **fields, "stored_at": NOW}


class KeyedBatch(BatchBuilder):  # type: ignore[misc]
    """A producer batch that remembers the keys appended to it."""

    def __init__(self) -> None:
        super().__init__(16384, 0)
        self.keys: list[bytes] = []

    def append(self, *, timestamp: Any, key: Any, value: Any, headers: Any = ()) -> Any:
        metadata = super().append(timestamp=timestamp, key=key, value=value, headers=headers)
        if metadata is not None:
            self.keys.append(key)
        return metadata


class OneSlotProducer:
    """A partition's slot is taken until `free` is set (a busy broker), as aiokafka holds one
    unsent batch per partition; every batch handed over is recorded in order."""

    def __init__(self) -> None:
        self.free = asyncio.Event()
        self.sent: list[tuple[str, int]] = []  # (realm of its first event, events)
        self.keys: list[bytes] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> KeyedBatch:
        return KeyedBatch()

    async def send_batch(self, batch: KeyedBatch, topic: str, *, partition: int) -> Any:
        count = batch.record_count()
        realm = batch.keys[0].decode()[4:8]
        if count > 1:
            await self.free.wait()
        self.sent.append((realm, count))
        self.keys += batch.keys
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


async def test_a_webhooks_event_is_sent_while_pages_wait_for_the_partition() -> None:
    producer = OneSlotProducer()
    events = InvoiceEvents(producer, "events", None, None, lambda: NOW)  # type: ignore[arg-type]
    pages = [
        asyncio.create_task(events.publish([stored(f"9130{n}000", i) for i in range(300)]))
        for n in (1, 2)
    ]
    await asyncio.sleep(0.05)
    assert not producer.sent  # the first page holds the slot, the second waits behind it

    webhook = await asyncio.wait_for(events.publish([stored("91309999", 7)]), timeout=1)

    assert webhook == 1 and producer.sent == [("9999", 1)]
    producer.free.set()
    assert await asyncio.gather(*pages) == [300, 300]
    assert sum(n for _, n in producer.sent) == 601
    for n in (1, 2):  # each page's events in the order of its invoices
        realm = f"9130{n}000"
        assert [k for k in producer.keys if k.startswith(realm.encode())] == [
            f"{realm}:{i}".encode() for i in range(300)
        ]
