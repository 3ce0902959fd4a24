"""QBO change notifications end to end: the emulator POSTs real-shaped, signed webhooks (both
formats) to the webhook route on a real port, which produces SyncChanges commands to the real
Kafka commands topic, keyed by realm; the test reads them back from that topic. The last test
runs the whole sync service with its worker: a delivery mixing a valid and a malformed event."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pymongo.asynchronous.database import AsyncDatabase
from starlette.applications import Starlette

from qbo_emulator.state import EmulatorState
from qbo_emulator.testing import RunningEmulator
from qbo_emulator.webhooks import Delivery, sign
from services.common import jsoncodec
from services.common.kafka import make_consumer, make_producer
from services.common.messages import Command, EntityChange, SyncChanges, parse_command
from services.common.mongo import Document
from services.common.settings import Settings
from services.sync.webhooks import WEBHOOK_PATH, webhook_routes
from tests.integration.conftest import SYNC_AUTH, SyncUnderTest
from tests.integration.test_sync_worker import connect_and_map
from tests.support import MovableClock, bound_socket, eventually, serve_asgi

pytestmark = pytest.mark.integration

REALM = "9130350000000001"
OTHER_REALM = "9130350000000002"


def at(second: int, millis: int) -> datetime:
    # Fractions of 1/8 s are exact in a float epoch, so both formats carry them unchanged.
    return datetime(2026, 11, 25, 8, 30, second, millis * 1000, UTC)


def publish_to(
    producer: AIOKafkaProducer, topic: str
) -> Callable[[Sequence[Command]], Awaitable[None]]:
    async def publish(commands: Sequence[Command]) -> None:
        sent = [await producer.send(topic, c.to_bytes(), key=c.kafka_key()) for c in commands]
        await asyncio.gather(*sent)  # acks=all: durable before Intuit hears 200

    return publish


@dataclass
class Receiver:
    url: str
    settings: Settings
    consumer: AIOKafkaConsumer

    async def enqueued(self) -> int:
        """Records on the commands topic. The route answered only after Kafka's acks, so this
        is exact once the delivery has been answered (no waiting for a consumer to join)."""
        topic = self.settings.commands_topic
        partitions = [TopicPartition(topic, p) for p in range(self.settings.commands_partitions)]
        return sum((await self.consumer.end_offsets(partitions)).values())

    async def commands(self, expected: int, within_s: float = 20.0) -> list[tuple[bytes, Command]]:
        assert await self.enqueued() == expected
        found: list[tuple[bytes, Command]] = []
        async with asyncio.timeout(within_s):
            while len(found) < expected:
                batches = await self.consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    found += [(r.key or b"", parse_command(r.value)) for r in records]
        return found


@asynccontextmanager
async def webhook_receiver(settings: Settings, verifier_token: str) -> AsyncIterator[Receiver]:
    producer = make_producer(settings.kafka_bootstrap_servers)
    consumer = make_consumer(
        settings.kafka_bootstrap_servers,
        f"{settings.sync_consumer_group}.webhook-test",
        settings.commands_topic,
    )
    await producer.start()
    await consumer.start()
    try:
        app = Starlette(
            routes=webhook_routes(verifier_token, publish_to(producer, settings.commands_topic))
        )
        async with serve_asgi(app, bound_socket()) as base_url:
            yield Receiver(base_url + WEBHOOK_PATH, settings, consumer)
    finally:
        await consumer.stop()
        await producer.stop()


def make_changes(state: EmulatorState) -> None:
    """Data first (webhooks still off), then the changes under test at known times."""
    for realm, invoices in ((REALM, 3), (OTHER_REALM, 1)):
        state.create_customer(realm, {"DisplayName": "O'Brien & Sons"})
        for _ in range(invoices):
            state.create_invoice(realm, {"CustomerRef": {"value": "1"}, "TotalAmt": "120.50"})


def mutate(state: EmulatorState) -> None:
    def when(moment: datetime) -> None:
        state.clock = lambda: moment.timestamp()

    when(at(1, 125))
    state.update_invoice(REALM, "1", {"PrivateNote": "reminder sent"})
    when(at(2, 250))
    state.void_invoice(REALM, "2")
    when(at(3, 500))
    state.delete_invoice(REALM, "3")
    when(at(4, 0))
    state.update_invoice(OTHER_REALM, "1", {"TotalAmt": "99.99"})
    when(at(5, 750))
    state.update_customer(REALM, "1", {"PrimaryEmailAddr": {"Address": "ap@obrien.example"}})
    when(at(6, 875))
    state.update_invoice(REALM, "1", {"PrivateNote": "second reminder"})


EXPECTED = {
    REALM: (
        # Invoice 1 changed twice in the batch: one change, with the latest time.
        EntityChange(
            entity="Invoice", id="1", operation="Update", last_updated="2026-11-25T08:30:06.875Z"
        ),
        EntityChange(
            entity="Invoice", id="2", operation="Void", last_updated="2026-11-25T08:30:02.250Z"
        ),
        EntityChange(
            entity="Invoice", id="3", operation="Delete", last_updated="2026-11-25T08:30:03.500Z"
        ),
        EntityChange(
            entity="Customer", id="1", operation="Update", last_updated="2026-11-25T08:30:05.750Z"
        ),
    ),
    OTHER_REALM: (
        EntityChange(
            entity="Invoice", id="1", operation="Update", last_updated="2026-11-25T08:30:04Z"
        ),
    ),
}


async def deliver(emulator: RunningEmulator, url: str, fmt: str) -> Delivery:
    state = emulator.state
    # The emulator never lets change times go backwards, so its clock is set for the whole test.
    state.clock = lambda: at(0, 0).timestamp()
    make_changes(state)
    state.configure_webhooks(url=url, format=fmt, enabled=True)
    mutate(state)
    await state.webhooks.wait_idle(within_s=10)
    [delivery] = state.webhooks.deliveries
    return delivery


@pytest.mark.parametrize("fmt", ["cloudevents", "legacy"])
async def test_webhook_changes_become_sync_commands_keyed_by_realm(
    settings: Settings, emulator: RunningEmulator, fmt: str
) -> None:
    async with webhook_receiver(settings, emulator.config.webhook_verifier_token) as receiver:
        delivery = await deliver(emulator, receiver.url, fmt)
        assert (delivery.format, delivery.events, delivery.status) == (fmt, 6, 200)

        found = await receiver.commands(expected=2)

    by_realm = {key.decode(): command for key, command in found}
    assert set(by_realm) == {REALM, OTHER_REALM}
    for realm, command in by_realm.items():
        assert isinstance(command, SyncChanges)
        assert (command.realm_id, command.issued_by) == (realm, "webhook")
        assert command.changes == EXPECTED[realm]
    assert by_realm[REALM].correlation_id == by_realm[OTHER_REALM].correlation_id


@pytest.mark.parametrize("fmt", ["cloudevents", "legacy"])
async def test_a_redelivered_notification_is_harmless(
    settings: Settings, emulator: RunningEmulator, fmt: str
) -> None:
    async with webhook_receiver(settings, emulator.config.webhook_verifier_token) as receiver:
        delivery = await deliver(emulator, receiver.url, fmt)
        # Intuit retries what it believes failed: the same signed bytes arrive again.
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                receiver.url,
                data=delivery.body,
                headers={"intuit-signature": delivery.signature},
            ) as response,
        ):
            assert response.status == 200
            assert await response.json() == {"accepted": 5, "commands": 2}

        found = await receiver.commands(expected=4)

    for realm in (REALM, OTHER_REALM):
        copies = [c for key, c in found if key == realm.encode()]
        assert len(copies) == 2
        first, second = copies
        assert isinstance(first, SyncChanges) and isinstance(second, SyncChanges)
        assert first.changes == second.changes == EXPECTED[realm]
        assert first.command_id != second.command_id  # two commands, the same work


async def test_a_delivery_signed_with_another_token_enqueues_nothing(
    settings: Settings, emulator: RunningEmulator
) -> None:
    ours = "our-app-verifier-token"  # the emulator signs with its own, different token
    async with webhook_receiver(settings, ours) as receiver:
        delivery = await deliver(emulator, receiver.url, "cloudevents")
        assert delivery.status == 401

        # A tampered body: its signature (even made with our token) belongs to other bytes.
        forged = delivery.body.replace(b'"intuitentityid":"2"', b'"intuitentityid":"20"')
        assert forged != delivery.body
        async with aiohttp.ClientSession() as http:
            for headers in (
                {"intuit-signature": sign(delivery.body, ours)},
                {"intuit-signature": sign(forged, emulator.config.webhook_verifier_token)},
                {"intuit-signature": "not base64"},
                {},
            ):
                async with http.post(receiver.url, data=forged, headers=headers) as response:
                    assert response.status == 401
                    assert (await response.json())["error"] == "invalid_signature"

        assert await receiver.commands(expected=0) == []


async def test_a_signed_delivery_with_a_malformed_event_syncs_the_valid_one_and_answers_200(
    worker: SyncUnderTest,
    emulator: RunningEmulator,
    clock: MovableClock,
    mongo_db: AsyncDatabase[Document],
) -> None:
    """The sync service itself, its worker running: the valid change of a delivery is synced,
    the malformed event beside it is counted in /stats, and Intuit hears 200, not a retry."""
    qbo_customer = await connect_and_map(worker, emulator, clock)
    invoice = emulator.state.create_invoice(
        REALM, {"CustomerRef": {"value": qbo_customer}, "TotalAmt": Decimal("120.50")}
    )
    event = {
        "specversion": "1.0",
        "id": "7f6c1d9e-0001",
        "source": "intuit.dsnbsvc",
        "type": "qbo.invoice.created.v1",
        "time": "2026-11-25T08:30:01.125Z",
        "intuitaccountid": REALM,
        "intuitentityid": invoice["Id"],
        "datacontenttype": "application/json",
        "data": {},
    }
    malformed = {**event, "id": "7f6c1d9e-0002", "intuitentityid": "1 OR 1=1"}
    body = jsoncodec.dumpb([malformed, event])
    token = worker.service.settings.qbo_webhook_verifier_token.get_secret_value()
    async with aiohttp.ClientSession() as http:
        async with http.post(
            worker.base_url + WEBHOOK_PATH,
            data=body,
            headers={"intuit-signature": sign(body, token), "content-type": "application/json"},
        ) as response:
            assert response.status == 200
            answer = await response.json()
        assert (answer["accepted"], answer["commands"], answer["rejected_count"]) == (1, 1, 1)
        assert answer["rejected"][0]["where"] == "[0]"

        stored = await eventually(
            lambda: mongo_db.invoices.find_one({"invoice_id": invoice["Id"]}),
            lambda doc: doc is not None,
        )
        assert stored is not None and stored["total_amt"] == "120.50"

        async with http.get(worker.base_url + "/stats", headers=SYNC_AUTH) as response:
            stats = jsoncodec.loads(await response.read())
    assert stats["webhook_events_rejected_by_reason"] == {"bad_id": 1}
