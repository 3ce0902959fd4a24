"""Figure 1: a full sync of one customer's invoices, from the command to durable results.

The clock starts when the RefreshInvoices command is acknowledged by Kafka and stops when the
worker has marked it succeeded, which it does only after every page is stored in MongoDB and
every InvoiceUpdated event is acknowledged (docs/design.md invariants 4 and 5). Both are then
checked independently: documents counted in the database, records counted on the topic.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from bench.kafka_counts import topic_record_count
from services.common.kafka import make_producer
from services.common.messages import Command, RefreshInvoices
from services.common.mongo import Document
from services.common.settings import Settings

TERMINAL = ("succeeded", "failed", "needs_reauth")
PAGE = 1000  # the sync's page size (Intuit's MAXRESULTS limit)


@dataclass(frozen=True)
class FullSync:
    started_at: datetime
    seconds: float
    stored: int
    events_on_topic: int
    result: dict[str, Any]

    @property
    def per_second(self) -> float:
        return self.stored / self.seconds


async def publish(settings: Settings, command: Command) -> None:
    producer = make_producer(settings.kafka_bootstrap_servers, client_id="qbo-sync-bench")
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.commands_topic, command.to_bytes(), key=command.kafka_key()
        )
    finally:
        await producer.stop()


async def wait_finished(
    db: AsyncDatabase[Document], command_id: str, within_s: float, poll_s: float = 0.05
) -> Document:
    deadline = time.monotonic() + within_s
    while True:
        doc = await db["commands"].find_one({"_id": command_id})
        if doc is not None and doc.get("status") in TERMINAL:
            return doc
        if time.monotonic() > deadline:
            raise TimeoutError(f"command {command_id} not finished in {within_s} s: {doc}")
        await asyncio.sleep(poll_s)


async def full_sync(
    settings: Settings,
    db: AsyncDatabase[Document],
    realm_id: str,
    local_customer_id: str,
    qbo_customer_id: str,
    within_s: float = 1800.0,
) -> FullSync:
    command = RefreshInvoices(
        realm_id=realm_id, issued_by="service:qbo-sync-bench", local_customer_id=local_customer_id
    )
    events_before = await topic_record_count(
        settings.kafka_bootstrap_servers, settings.invoice_events_topic
    )
    started_at = datetime.now(UTC)
    started = time.perf_counter()
    await publish(settings, command)
    doc = await wait_finished(db, command.command_id, within_s)
    seconds = time.perf_counter() - started
    if doc["status"] != "succeeded":
        raise RuntimeError(f"the full sync did not succeed: {doc}")
    stored = await db["invoices"].count_documents(
        {"realm_id": realm_id, "qbo_customer_id": qbo_customer_id}
    )
    events = await topic_record_count(
        settings.kafka_bootstrap_servers, settings.invoice_events_topic
    )
    result = dict(doc.get("result") or {})
    return FullSync(started_at, seconds, stored, events - events_before, result)


async def seconds_to_first(
    db: AsyncDatabase[Document], realm_id: str, qbo_customer_id: str, count: int, run: FullSync
) -> float:
    """About how long the full sync took for its first `count` invoices: until the page after
    the one holding the last of them started (every invoice of a page carries the `stored_at`
    of the moment its page began to be written). Rounds up to whole pages, so it never
    flatters the sync."""
    after = -(-count // PAGE) * PAGE
    if after >= run.stored:
        return run.seconds
    cursor = (
        db["invoices"]
        .find({"realm_id": realm_id, "qbo_customer_id": qbo_customer_id}, {"stored_at": 1})
        .sort("stored_at", 1)
        .skip(after)
        .limit(1)
    )
    found = await cursor.to_list()
    if not found:
        return run.seconds
    page_started: datetime = found[0]["stored_at"]
    return (page_started - run.started_at).total_seconds()
