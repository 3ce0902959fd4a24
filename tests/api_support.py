"""Helpers for testing the api against real Kafka and MongoDB.

Builds schema-valid InvoiceUpdated events, produces them the way the sync service does, seeds
the records the sync service would have written, and serves the api on a loopback socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer
from pymongo.asynchronous.database import AsyncDatabase

from services.api.app import ApiService, api_service
from services.common import jsoncodec
from services.common.clock import Clock, utc_now
from services.common.kafka import make_producer
from services.common.mongo import Document
from services.common.schemas import INVOICE_UPDATED, default_schemas
from services.common.settings import Settings
from tests.support import bound_socket, serve_asgi

T = TypeVar("T")
REALM = "9130350000000001"


def invoice_event(
    invoice_id: str,
    version: int,
    *,
    realm_id: str = REALM,
    qbo_customer_id: str = "58",
    local_customer_id: str | None = "cust-42",
    total_amt: Decimal | int | str = Decimal("100.00"),
    balance: Decimal | int | str | None = None,
    status: str | None = None,
    deleted: bool = False,
    due_date: str | None = "2030-01-31",
    txn_date: str | None = "2029-12-31",
    doc_number: str | None = None,
    currency: str | None = "USD",
) -> dict[str, Any]:
    """A schema-valid InvoiceUpdated CloudEvent (validated before it is returned)."""
    total = Decimal(str(total_amt))
    owed = total if balance is None else Decimal(str(balance))
    if status is None:
        status = "deleted" if deleted else ("open" if owed > 0 else "paid")
    event = {
        "specversion": "1.0",
        "id": f"invoice/{realm_id}/{invoice_id}/v{version}",
        "source": "qbo-sync/tests",
        "type": "dev.qbo-sync.invoice.updated.v1",
        "subject": f"realms/{realm_id}/invoices/{invoice_id}",
        "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": {
            "realm_id": realm_id,
            "invoice_id": invoice_id,
            "qbo_customer_id": qbo_customer_id,
            "local_customer_id": local_customer_id,
            "status": status,
            "deleted": deleted,
            "total_amt": total,
            "balance": owed,
            "currency": currency,
            "due_date": due_date,
            "txn_date": txn_date,
            "doc_number": doc_number if doc_number is not None else f"D-{invoice_id}",
            "sync_token": str(version),
            "last_updated_time": "2029-12-31T10:00:00-08:00",
            "version": version,
        },
    }
    default_schemas().validate(INVOICE_UPDATED, event)
    return event


def event_key(event: dict[str, Any]) -> bytes:
    data = event["data"]
    return f"{data['realm_id']}:{data['invoice_id']}".encode()


async def produce(
    settings: Settings, records: Iterable[tuple[bytes | None, bytes | None]], topic: str = ""
) -> None:
    """Produce (key, value) records in order and wait for every acknowledgement."""
    producer = make_producer(settings.kafka_bootstrap_servers, client_id="api-tests")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(
                topic or settings.invoice_events_topic, value=value, key=key
            )
    finally:
        await producer.stop()


async def produce_events(settings: Settings, *events: dict[str, Any]) -> None:
    await produce(settings, [(event_key(e), jsoncodec.dumpb(e)) for e in events])


async def seed_mapping(
    db: AsyncDatabase[Document],
    local_customer_id: str = "cust-42",
    *,
    realm_id: str = REALM,
    qbo_customer_id: str | None = "58",
    display_name: str = "Amy's Bird Sanctuary",
    last_synced_at: datetime | None = None,
) -> None:
    """The `customer_mappings` record the sync service writes when a customer is mapped."""
    await db["customer_mappings"].replace_one(
        {"_id": local_customer_id},
        {
            "_id": local_customer_id,
            "local_customer_id": local_customer_id,
            "realm_id": realm_id,
            "qbo_customer_id": qbo_customer_id,
            "display_name": display_name,
            "mapped_at": datetime.now(UTC),
            "last_synced_at": last_synced_at,
            "last_sync_command_id": None,
        },
        upsert=True,
    )


async def seed_connection(
    db: AsyncDatabase[Document],
    *,
    realm_id: str = REALM,
    status: str = "active",
    user_id: str = "alice",
    reauth_reason: str | None = None,
) -> None:
    """A `connections` record as the token vault writes it, sealed tokens included."""
    await db["connections"].replace_one(
        {"_id": realm_id},
        {
            "_id": realm_id,
            "realm_id": realm_id,
            "user_id": user_id,
            "status": status,
            "reauth_reason": reauth_reason,
            "access_token": "v1.local.c2VhbGVkLWFjY2Vzcy10b2tlbi1ieXRlcw",
            "refresh_token": "v1.local.c2VhbGVkLXJlZnJlc2gtdG9rZW4tYnl0ZXM",
            "access_token_expires_at": datetime.now(UTC),
            "refresh_token_expires_at": datetime.now(UTC),
            "refresh_token_hard_expires_at": datetime(2031, 1, 1, tzinfo=UTC),
            "connected_at": datetime.now(UTC),
            "updated_at": datetime.now(UTC),
            "version": 1,
        },
        upsert=True,
    )


async def consume_all(
    settings: Settings, topic: str, count: int, within_s: float = 20.0
) -> list[Any]:
    """Read `count` records of `topic` from the beginning (a throw-away consumer group)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        async with asyncio.timeout(within_s):
            while len(records) < count:
                batches = await consumer.getmany(timeout_ms=200)
                for batch in batches.values():
                    records.extend(batch)
    finally:
        await consumer.stop()
    return records


@dataclass
class RunningApi:
    base_url: str
    service: ApiService


@asynccontextmanager
async def running_api(
    settings: Settings, clock: Clock = utc_now, run_projector: bool = True
) -> AsyncIterator[RunningApi]:
    """The api (and, by default, its projector) served by uvicorn on a free loopback port."""
    async with api_service(settings, clock=clock, run_projector_task=run_projector) as service:
        sock = bound_socket()
        try:
            async with serve_asgi(service.web_app(), sock) as base_url:
                yield RunningApi(base_url, service)
        finally:
            sock.close()
