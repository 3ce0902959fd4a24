"""The sync worker end to end on real parts: Kafka commands in, QBO (the emulator over HTTP)
read, FerretDB written, InvoiceUpdated events out."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from qbo_emulator.testing import RunningEmulator
from services.common import jsoncodec
from services.common.messages import RefreshInvoices
from services.common.money import to_micros
from services.common.mongo import Document
from services.common.schemas import default_schemas
from services.common.settings import Settings
from services.sync.oauth.intuit import TokenGrant
from tests.integration.conftest import SYNC_AUTH, SyncUnderTest
from tests.support import MovableClock, eventually, read_topic

pytestmark = pytest.mark.integration

REALM = "9130350000000001"


async def connect_and_map(
    sync: SyncUnderTest, emulator: RunningEmulator, clock: MovableClock, name: str = "Acme Ltd"
) -> str:
    """Connect REALM and map local customer `cust-1` to a new QBO customer; returns its QBO id."""
    grant = TokenGrant.from_response(emulator.state.issue_tokens(REALM), clock())
    await sync.service.vault.connect(REALM, "alice", grant)
    customer = emulator.state.create_customer(REALM, {"DisplayName": name})
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{sync.base_url}/customers/cust-1/mapping",
            json={"realm_id": REALM, "display_name": name},
            headers=SYNC_AUTH,
        ) as r:
            assert r.status == 200, await r.text()
            body = await r.json()
    assert body["mapping"]["qbo_customer_id"] == customer["Id"]
    return str(customer["Id"])


def add_invoices(emulator: RunningEmulator, qbo_customer_id: str, count: int) -> Decimal:
    """Create invoices with cent-exact amounts; returns their total."""
    total = Decimal("0")
    for i in range(count):
        amount = Decimal(i % 997) + Decimal("0.01") * (i % 100) + Decimal("0.10")
        emulator.state.create_invoice(
            REALM,
            {
                "CustomerRef": {"value": qbo_customer_id},
                "TotalAmt": amount,
                "Balance": amount,
                "DueDate": "2026-12-31",
            },
        )
        total += amount
    return total


async def refresh(sync: SyncUnderTest) -> str:
    command = RefreshInvoices(realm_id=REALM, issued_by="api", local_customer_id="cust-1")
    await sync.service.publish([command])
    return command.command_id


async def finished(sync: SyncUnderTest, command_id: str, timeout_s: float = 60) -> Document:
    async def status() -> Document | None:
        return await sync.service.commands.get(command_id)

    doc = await eventually(
        status,
        lambda d: d is not None and d["status"] not in ("queued", "running", "throttled"),
        timeout_s=timeout_s,
    )
    assert doc is not None
    return doc


async def events(settings: Settings) -> list[dict[str, Any]]:
    records = await read_topic(settings.kafka_bootstrap_servers, settings.invoice_events_topic)
    return [jsoncodec.loads(r.value) for r in records]


async def test_refresh_of_2500_invoices_stores_all_exactly_and_emits_2500_events(
    worker: SyncUnderTest,
    emulator: RunningEmulator,
    clock: MovableClock,
    settings: Settings,
    mongo_db: AsyncDatabase[Document],
) -> None:
    qbo_customer = await connect_and_map(worker, emulator, clock)
    expected_total = add_invoices(emulator, qbo_customer, 2500)

    status = await finished(worker, await refresh(worker))

    assert status["status"] == "succeeded", status
    assert status["result"] == {"fetched": 2500, "stored": 2500, "events": 2500}
    # The mapping query, 3 pages, then the customer's own read (its SyncToken and Active).
    assert worker.service.qbo.calls[REALM] == 1 + 3 + 1
    stored = [d async for d in mongo_db.invoices.find({}, {"total_amt_micros": 1, "version": 1})]
    assert len(stored) == 2500
    assert sum(d["total_amt_micros"] for d in stored) == to_micros(expected_total)
    assert {d["version"] for d in stored} == {1}

    emitted = await events(settings)
    assert len(emitted) == 2500
    assert len({e["id"] for e in emitted}) == 2500
    for event in emitted[:50]:
        default_schemas().validate("invoice-updated.v1", event)
    assert sum(e["data"]["total_amt"] for e in emitted) == expected_total
    assert {e["data"]["local_customer_id"] for e in emitted} == {"cust-1"}

    second = await finished(worker, await refresh(worker))
    assert second["status"] == "succeeded"
    assert second["result"] == {"fetched": 2500, "stored": 0, "events": 0}
    assert len(await events(settings)) == 2500


async def test_webhook_update_becomes_one_stored_change_and_one_event(
    worker: SyncUnderTest,
    emulator: RunningEmulator,
    clock: MovableClock,
    settings: Settings,
    mongo_db: AsyncDatabase[Document],
) -> None:
    qbo_customer = await connect_and_map(worker, emulator, clock)
    add_invoices(emulator, qbo_customer, 3)
    assert (await finished(worker, await refresh(worker)))["status"] == "succeeded"
    invoice = await mongo_db.invoices.find_one({"doc_number": {"$ne": None}}, sort=[("_id", 1)])
    assert invoice is not None
    emulator.state.configure_webhooks(
        url=f"{worker.base_url}/webhooks/quickbooks", format="cloudevents", enabled=True
    )

    emulator.state.update_invoice(REALM, invoice["invoice_id"], {"Balance": Decimal("0.30")})

    async def updated() -> Document | None:
        return await mongo_db.invoices.find_one({"_id": invoice["_id"], "version": 2})

    doc = await eventually(updated, lambda d: d is not None)
    assert doc is not None
    assert doc["balance_micros"] == to_micros(Decimal("0.30"))
    later = await eventually(lambda: events(settings), lambda es: len(es) >= 4, timeout_s=15)
    mine = [e for e in later if e["data"]["invoice_id"] == invoice["invoice_id"]]
    assert [e["data"]["version"] for e in mine] == [1, 2]
    assert mine[1]["data"]["balance"] == Decimal("0.30")
    assert len(later) == 4


@pytest.mark.cdc_poll(0.5)
async def test_change_with_a_lost_webhook_is_caught_by_the_cdc_poller(
    worker: SyncUnderTest,
    emulator: RunningEmulator,
    clock: MovableClock,
    settings: Settings,
    mongo_db: AsyncDatabase[Document],
) -> None:
    qbo_customer = await connect_and_map(worker, emulator, clock)
    add_invoices(emulator, qbo_customer, 2)
    assert (await finished(worker, await refresh(worker)))["status"] == "succeeded"
    emulator.state.configure_webhooks(enabled=False)  # every webhook is lost

    async def checkpoint() -> Document | None:
        return await mongo_db.cdc_checkpoints.find_one({"_id": REALM})

    await eventually(checkpoint, lambda d: d is not None)
    target = await mongo_db.invoices.find_one({}, sort=[("_id", 1)])
    assert target is not None
    emulator.state.update_invoice(REALM, target["invoice_id"], {"Balance": Decimal("1.23")})
    emulator.state.void_invoice(
        REALM, (await mongo_db.invoices.find_one({}, sort=[("_id", -1)]) or {})["invoice_id"]
    )

    async def caught() -> list[Document]:
        return [d async for d in mongo_db.invoices.find({"version": 2})]

    changed = await eventually(caught, lambda ds: len(ds) == 2, timeout_s=20)
    by_status = {d["status"]: d for d in changed}
    assert by_status["open"]["balance_micros"] == to_micros(Decimal("1.23"))
    assert by_status["voided"]["total_amt_micros"] == 0
    emitted = await eventually(lambda: events(settings), lambda es: len(es) == 4)
    assert sorted(e["data"]["status"] for e in emitted if e["data"]["version"] == 2) == [
        "open",
        "voided",
    ]


async def test_deleted_invoice_is_kept_as_a_tombstone_with_an_event(
    worker: SyncUnderTest,
    emulator: RunningEmulator,
    clock: MovableClock,
    settings: Settings,
    mongo_db: AsyncDatabase[Document],
) -> None:
    qbo_customer = await connect_and_map(worker, emulator, clock)
    add_invoices(emulator, qbo_customer, 1)
    assert (await finished(worker, await refresh(worker)))["status"] == "succeeded"
    emulator.state.configure_webhooks(
        url=f"{worker.base_url}/webhooks/quickbooks", format="legacy", enabled=True
    )
    stored = await mongo_db.invoices.find_one({})
    assert stored is not None

    emulator.state.delete_invoice(REALM, stored["invoice_id"])

    async def tombstone() -> Document | None:
        return await mongo_db.invoices.find_one({"_id": stored["_id"], "deleted": True})

    doc = await eventually(tombstone, lambda d: d is not None)
    assert doc is not None and doc["status"] == "deleted" and doc["version"] == 2
    # A deletion stub names no customer; the tombstone stays with the invoice's customer.
    assert (doc["qbo_customer_id"], doc["local_customer_id"]) == (qbo_customer, "cust-1")
    emitted = await eventually(lambda: events(settings), lambda es: len(es) == 2)
    assert emitted[-1]["data"]["status"] == "deleted"
    assert emitted[-1]["data"]["deleted"] is True
    assert emitted[-1]["data"]["local_customer_id"] == "cust-1"
    # A later full refresh does not resurrect it (QBO no longer lists it anyway).
    assert (await finished(worker, await refresh(worker)))["status"] == "succeeded"
    again = await mongo_db.invoices.find_one({"_id": stored["_id"]})
    assert again is not None and again["deleted"] is True


async def test_401_mid_sync_refreshes_once_and_succeeds(
    worker: SyncUnderTest, emulator: RunningEmulator, clock: MovableClock
) -> None:
    qbo_customer = await connect_and_map(worker, emulator, clock)
    add_invoices(emulator, qbo_customer, 1500)
    emulator.state.set_faults([{"kind": "401", "path_contains": "/query", "times": 1}])
    before = emulator.state.stats.token_call_count(REALM, "refresh_token")

    status = await finished(worker, await refresh(worker))

    assert status["status"] == "succeeded", status
    assert status["result"]["stored"] == 1500
    assert emulator.state.stats.token_call_count(REALM, "refresh_token") == before + 1


async def test_burst_of_429s_ends_in_success(
    worker: SyncUnderTest, emulator: RunningEmulator, clock: MovableClock
) -> None:
    qbo_customer = await connect_and_map(worker, emulator, clock)
    add_invoices(emulator, qbo_customer, 10)
    emulator.state.set_faults([{"kind": "429", "path_contains": "/query", "times": 3}])

    status = await finished(worker, await refresh(worker))

    assert status["status"] == "succeeded", status
    assert status["result"]["stored"] == 10


async def test_revoked_refresh_token_ends_as_needs_reauth(
    worker: SyncUnderTest,
    emulator: RunningEmulator,
    clock: MovableClock,
    mongo_db: AsyncDatabase[Document],
) -> None:
    qbo_customer = await connect_and_map(worker, emulator, clock)
    add_invoices(emulator, qbo_customer, 5)
    emulator.state.expire_refresh_tokens(REALM)
    emulator.state.expire_access_tokens(REALM)

    status = await finished(worker, await refresh(worker))

    assert status["status"] == "needs_reauth", status
    connection = await mongo_db.connections.find_one({"_id": REALM})
    assert connection is not None and connection["status"] == "needs_reauth"
    assert await mongo_db.invoices.count_documents({}) == 0


async def test_unknown_customer_fails_with_a_clear_reason(worker: SyncUnderTest) -> None:
    command = RefreshInvoices(realm_id=REALM, issued_by="api", local_customer_id="nobody")
    await worker.service.publish([command])
    status = await finished(worker, command.command_id)
    assert status["status"] == "failed"
    assert status["reason"] == "customer nobody is not mapped to QBO"


async def test_poison_command_is_dead_lettered_and_the_next_one_runs(
    worker: SyncUnderTest, emulator: RunningEmulator, clock: MovableClock, settings: Settings
) -> None:
    qbo_customer = await connect_and_map(worker, emulator, clock)
    add_invoices(emulator, qbo_customer, 2)
    producer = worker.service.producer
    await producer.send_and_wait(settings.commands_topic, b"{not json", key=REALM.encode())
    await producer.send_and_wait(
        settings.commands_topic, b'{"type": "RefreshInvoices"}', key=REALM.encode()
    )

    status = await finished(worker, await refresh(worker))

    assert status["status"] == "succeeded"
    dead = await read_topic(settings.kafka_bootstrap_servers, settings.dead_letter_topic)
    assert [r.value for r in dead] == [b"{not json", b'{"type": "RefreshInvoices"}']
    reasons = [dict(r.headers)["dlq.reason"].decode() for r in dead]
    assert "not JSON" in reasons[0]
    assert "required property" in reasons[1]
    assert all(dict(r.headers)["dlq.topic"].decode() == settings.commands_topic for r in dead)


async def test_a_failing_page_costs_at_most_four_intuit_calls_then_is_dead_lettered(
    worker: SyncUnderTest, emulator: RunningEmulator, clock: MovableClock, settings: Settings
) -> None:
    """docs/design.md invariant 13: only the QBO client retries a QBO request (1 + 3 retries);
    the worker, which retries its own infrastructure's failures, does not multiply them."""
    qbo_customer = await connect_and_map(worker, emulator, clock)
    add_invoices(emulator, qbo_customer, 2)
    emulator.state.set_faults([{"kind": "503", "path_contains": "/query", "times": 100}])
    before = emulator.state.stats.request_count(REALM, "query")

    status = await finished(worker, await refresh(worker), timeout_s=90)

    assert status["status"] == "failed"
    assert "QboUnavailable" in status["reason"]
    assert status["attempts"] == 1
    assert emulator.state.stats.request_count(REALM, "query") - before == 4  # was 2 x 4 here
    dead = await read_topic(settings.kafka_bootstrap_servers, settings.dead_letter_topic)
    assert len(dead) == 1
    assert dict(dead[0].headers)["dlq.error_type"] == b"QboUnavailable"
