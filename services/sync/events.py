"""InvoiceUpdated events: built from stored invoice versions and published to Kafka.

Emission follows an outbox (docs/design.md invariant 4, `store.Outbox`): an entry naming the
invoices is written before them and deleted only after Kafka acknowledged their events. A crash
in between leaves the entry open; the redelivered command (same command id) or the periodic
sweep emits the invoices' current versions. The event id is deterministic per version, so a
consumer sees a repeat, never a different event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from opentelemetry.trace import SpanKind

from services.common import jsoncodec, tracing
from services.common.money import stored_amount, stored_optional
from services.common.mongo import Document
from services.common.schemas import INVOICE_UPDATED, SchemaSet, default_schemas
from services.sync.store import InvoiceStore, Outbox
from services.sync.turns import SLICE, run_steps, small_step

EVENT_TYPE = "dev.qbo-sync.invoice.updated.v1"
EVENT_SOURCE = "qbo-sync/sync"
_MULTICURRENCY_FIELDS = ("exchange_rate", "home_total_amt", "home_balance")

log = structlog.get_logger(__name__)


def _iso(value: datetime) -> str:
    # Milliseconds, what a BSON date holds: an event built from a version just written and the
    # same event built again from the stored document (an outbox flush) must be the same bytes.
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def invoice_updated(doc: Document) -> dict[str, Any]:
    """The CloudEvent for one stored invoice version (schemas/events/invoice-updated.v1)."""
    realm_id, invoice_id, version = doc["realm_id"], doc["invoice_id"], int(doc["version"])
    sync_token = int(doc["sync_token"])
    data: dict[str, Any] = {
        "realm_id": realm_id,
        "invoice_id": invoice_id,
        "qbo_customer_id": doc.get("qbo_customer_id") or "0",
        "local_customer_id": doc.get("local_customer_id"),
        "status": doc["status"],
        "deleted": bool(doc["deleted"]),
        "total_amt": stored_amount(doc, "total_amt"),
        "balance": stored_amount(doc, "balance"),
        "currency": doc.get("currency"),
        "due_date": doc.get("due_date"),
        "txn_date": doc.get("txn_date"),
        "doc_number": doc.get("doc_number"),
        "last_updated_time": doc.get("last_updated_text") or _iso(doc["last_updated_time"]),
        "version": version,
    }
    if sync_token >= 0:
        data["sync_token"] = str(sync_token)
    for name in _MULTICURRENCY_FIELDS:
        # Only when QBO sent it: a document stored before these fields existed (or of a company
        # without multicurrency) gives the same bytes it gave then (invariant 4).
        value = stored_optional(doc, name)
        if value is not None:
            data[name] = value
    return {
        "specversion": "1.0",
        "id": f"invoice/{realm_id}/{invoice_id}/v{version}",
        "source": EVENT_SOURCE,
        "type": EVENT_TYPE,
        "subject": f"realms/{realm_id}/invoices/{invoice_id}",
        "time": _iso(doc["stored_at"]),
        "datacontenttype": "application/json",
        **tracing.event_extension(doc),  # CloudEvents distributed tracing: `traceparent`
        "data": data,
    }


def _append(batch: BatchBuilder, key: bytes, value: bytes, headers: tracing.KafkaHeaders) -> bool:
    """Add one event to `batch`; False when the batch is full."""
    return batch.append(key=key, value=value, timestamp=None, headers=headers) is not None


class InvoiceEvents:
    """Publishes InvoiceUpdated events for stored versions, closing outbox entries once acked."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        store: InvoiceStore,
        outbox: Outbox,
        clock: Callable[[], datetime],
        schemas: SchemaSet | None = None,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._store = store
        self._outbox = outbox
        self._clock = clock
        self._schemas = schemas or default_schemas()
        self._partitioner = DefaultPartitioner()
        self._partition_locks: dict[int, asyncio.Lock] = {}
        self.emitted = 0

    async def publish(self, docs: Sequence[Document]) -> int:
        """Produce one event per stored version and wait for every acknowledgement (acks=all).

        Events are handed to the producer a batch per partition rather than one `send` each,
        which costs twice the CPU per event. Each event goes to the partition its key hashes to
        (the producer's own partitioner), in the order of `docs`, as `send` would put it.
        """
        if not docs:
            return 0
        partitions = sorted(await self._producer.partitions_for(self._topic))
        with tracing.span("send events", SpanKind.PRODUCER, {"events": len(docs)}):
            headers = tracing.kafka_headers() or []
            small = small_step(len(docs))
            # The page's events: CPU only, a slice at a time in its turn (services/sync/turns.py).
            ready = await run_steps(self._batches(docs, partitions, headers), small)
            deliveries = [await self._send(batch, partition, small) for partition, batch in ready]
            await asyncio.gather(*deliveries)
        self.emitted += len(docs)
        return len(docs)

    def _batches(
        self, docs: Sequence[Document], partitions: list[int], headers: tracing.KafkaHeaders
    ) -> Generator[None, None, list[tuple[int, BatchBuilder]]]:
        """The events of `docs` in producer batches, in the order to send them: a partition's
        batches in the order of `docs`. Pauses (yields) every `SLICE` events."""
        ready: list[tuple[int, BatchBuilder]] = []
        batches: dict[int, BatchBuilder] = {}
        for n, doc in enumerate(docs):
            if n and n % SLICE == 0:
                yield
            event = invoice_updated(doc)
            self._schemas.validate(INVOICE_UPDATED, event)
            key = f"{doc['realm_id']}:{doc['invoice_id']}".encode()
            value = jsoncodec.dumpb(event)
            partition = self._partitioner(key, partitions, partitions)
            batch = batches.get(partition)
            if batch is None or not _append(batch, key, value, headers):
                if batch is not None:  # full: to be sent first, start the partition's next one
                    ready.append((partition, batch))
                batch = batches[partition] = self._producer.create_batch()
                if not _append(batch, key, value, headers):
                    raise ValueError(f"event {event['id']} does not fit in a producer batch")
        ready.extend(batches.items())
        return ready

    async def _send(self, batch: BatchBuilder, partition: int, small: bool) -> asyncio.Future[Any]:
        # One page's batch waits for a partition at a time, the others queue here in order:
        # aiokafka's producer holds one unsent batch per partition, and every sender waiting
        # for that slot wakes when it frees and takes from its own time-out each time, so with
        # dozens of realms' pages at once (docs/design.md invariant 8) they timed out in turns.
        # A small command's batch (a webhook's) does not queue behind the pages: it waits for
        # the slot beside at most the one page batch waiting, so for two sends, not fifty. Only
        # other realms' events can be in that queue (a realm's commands run one at a time), and
        # a key's order is the order of its versions, which no overtaking across realms changes.
        if small:
            return await self._send_now(batch, partition)
        lock = self._partition_locks.setdefault(partition, asyncio.Lock())
        async with lock:
            return await self._send_now(batch, partition)

    async def _send_now(self, batch: BatchBuilder, partition: int) -> asyncio.Future[Any]:
        delivery: asyncio.Future[Any] = await self._producer.send_batch(
            batch, self._topic, partition=partition
        )
        return delivery

    async def flush(
        self, command_id: str | None = None, older_than: timedelta | None = None
    ) -> int:
        """Emit the current versions behind open outbox entries (of one command, or stale ones)."""
        cutoff = self._clock() - older_than if older_than is not None else None
        emitted = 0
        while entries := await self._outbox.entries(command_id, cutoff):
            for entry in entries:
                emitted += await self.publish(await self._store.get_many(entry["keys"]))
                await self._outbox.close(entry["_id"])
        if emitted:
            log.info("outbox.flushed", events=emitted, command_id=command_id)
        return emitted
