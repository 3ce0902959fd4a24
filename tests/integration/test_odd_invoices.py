"""One invoice QuickBooks sends that cannot be stored must not hold back the others (docs/design.md
invariant 9), and amounts with more than six decimals are stored exactly (invariant 7).

Real parts: the emulator over HTTP, Kafka, FerretDB. Each test mixes good invoices, amounts
that micros could not hold (seven decimals, a three-decimal currency) and one invoice whose
amount is beyond what anything can store exactly (10^25), and checks that the good and the
exact ones are stored and announced, the bad one is recorded with its reason and JSON, and the
refresh, the webhook batch and the CDC poll all finish (the poll's checkpoint moves)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from qbo_emulator.testing import RunningEmulator
from services.common import jsoncodec
from services.common.messages import EntityChange, SyncChanges
from services.common.mongo import Document
from services.common.schemas import default_schemas
from services.common.settings import Settings
from services.sync import handlers
from services.sync.oauth.intuit import TokenGrant
from tests.integration.conftest import SYNC_AUTH, SyncUnderTest
from tests.integration.test_sync_worker import REALM, connect_and_map, finished, refresh
from tests.support import MovableClock, read_topic

pytestmark = pytest.mark.integration

EXACT_AMOUNTS = [Decimal("1.10"), Decimal("10.1234567"), Decimal("5.125"), Decimal("0.000000001")]
UNSTORABLE = Decimal("1E+25")


def add_mix(emulator: RunningEmulator, qbo_customer_id: str) -> tuple[list[str], str]:
    """Invoices with exact odd amounts, and one beyond range in the middle; returns the ids."""
    ids = []
    for amount in EXACT_AMOUNTS[:2]:
        ids.append(_invoice(emulator, qbo_customer_id, amount))
    bad = _invoice(emulator, qbo_customer_id, UNSTORABLE)
    for amount in EXACT_AMOUNTS[2:]:
        ids.append(_invoice(emulator, qbo_customer_id, amount))
    return ids, bad


def _invoice(emulator: RunningEmulator, qbo_customer_id: str, amount: Decimal) -> str:
    created = emulator.state.create_invoice(
        REALM,
        {"CustomerRef": {"value": qbo_customer_id}, "TotalAmt": amount, "Balance": amount},
    )
    return str(created["Id"])


async def events_by_invoice(settings: Settings) -> dict[str, dict[str, Any]]:
    records = await read_topic(settings.kafka_bootstrap_servers, settings.invoice_events_topic)
    found: dict[str, dict[str, Any]] = {}
    for record in records:
        event = jsoncodec.loads(record.value)
        default_schemas().validate("invoice-updated.v1", event)
        found[event["data"]["invoice_id"]] = event
        # The wire format keeps every digit: the amount text in the record is Intuit's.
        assert f'"total_amt":{event["data"]["total_amt"]:f}'.encode() in record.value
    return found


async def assert_good_stored_and_bad_recorded(
    mongo_db: AsyncDatabase[Document], good: list[str], bad: str
) -> None:
    stored = {d["invoice_id"]: d async for d in mongo_db.invoices.find({})}
    assert sorted(stored) == sorted(good)
    for invoice_id, amount in zip(good, EXACT_AMOUNTS, strict=True):
        assert Decimal(stored[invoice_id]["total_amt"]) == amount
    rejected = [d async for d in mongo_db.rejected_invoices.find({})]
    assert [(d["realm_id"], d["invoice_id"]) for d in rejected] == [(REALM, bad)]
    assert "more than 20 integer digits" in rejected[0]["reason"]
    raw = jsoncodec.loads(rejected[0]["raw_json"])
    assert (raw["Id"], raw["TotalAmt"]) == (bad, int(UNSTORABLE))


async def test_a_refresh_stores_the_good_and_exact_invoices_and_records_the_bad_one(
    worker: SyncUnderTest,
    emulator: RunningEmulator,
    clock: MovableClock,
    settings: Settings,
    mongo_db: AsyncDatabase[Document],
) -> None:
    qbo_customer = await connect_and_map(worker, emulator, clock)
    good, bad = add_mix(emulator, qbo_customer)

    status = await finished(worker, await refresh(worker))

    assert status["status"] == "succeeded", status
    assert status["result"] == {"fetched": 5, "stored": 4, "events": 4}
    await assert_good_stored_and_bad_recorded(mongo_db, good, bad)
    emitted = await events_by_invoice(settings)
    assert sorted(emitted) == sorted(good)
    assert [emitted[i]["data"]["total_amt"] for i in good] == EXACT_AMOUNTS

    # Operators see it: the listing endpoint and the per-realm count.
    async with aiohttp.ClientSession(headers=SYNC_AUTH) as http:
        async with http.get(f"{worker.base_url}/rejected-invoices?realm_id={REALM}") as r:
            assert r.status == 200
            listed = jsoncodec.loads(await r.read())["rejected_invoices"]
        async with http.get(f"{worker.base_url}/stats") as r:
            stats = jsoncodec.loads(await r.read())
    assert [(e["invoice_id"], e["source"], e["times_seen"]) for e in listed] == [
        (bad, "refresh", 1)
    ]
    assert stats["rejected_invoices_by_realm"] == {REALM: 1}

    # Fixed in QuickBooks: the next refresh stores it and its entry goes away.
    emulator.state.update_invoice(REALM, bad, {"TotalAmt": Decimal("7.00"), "Balance": 0})
    again = await finished(worker, await refresh(worker))
    assert again["result"] == {"fetched": 5, "stored": 1, "events": 1}
    assert await mongo_db.rejected_invoices.count_documents({}) == 0


async def test_a_webhook_batch_stores_the_good_invoices_and_records_the_bad_one(
    worker: SyncUnderTest,
    emulator: RunningEmulator,
    clock: MovableClock,
    settings: Settings,
    mongo_db: AsyncDatabase[Document],
) -> None:
    qbo_customer = await connect_and_map(worker, emulator, clock)
    good, bad = add_mix(emulator, qbo_customer)
    changes = tuple(
        EntityChange(entity="Invoice", id=i, operation="Create", last_updated=None)
        for i in [*good[:2], bad, *good[2:]]
    )
    command = SyncChanges(realm_id=REALM, issued_by="webhook", changes=changes)
    await worker.service.publish([command])

    status = await finished(worker, command.command_id)

    assert status["status"] == "succeeded", status
    assert status["result"]["stored"] == 4
    await assert_good_stored_and_bad_recorded(mongo_db, good, bad)
    assert sorted(await events_by_invoice(settings)) == sorted(good)


async def test_a_cdc_poll_stores_the_good_invoices_records_the_bad_one_and_moves_on(
    sync: SyncUnderTest,
    emulator: RunningEmulator,
    clock: MovableClock,
    settings: Settings,
    mongo_db: AsyncDatabase[Document],
) -> None:
    grant = TokenGrant.from_response(emulator.state.issue_tokens(REALM), clock())
    await sync.service.vault.connect(REALM, "alice", grant)
    deps = sync.service.deps
    start = clock() - timedelta(minutes=1)
    await deps.checkpoints.move(REALM, start)
    customer = emulator.state.create_customer(REALM, {"DisplayName": "Acme"})
    good, bad = add_mix(emulator, str(customer["Id"]))
    before_poll = clock()

    result = await handlers.poll_changes(REALM, deps)

    assert result["stored"] == 4
    await assert_good_stored_and_bad_recorded(mongo_db, good, bad)
    checkpoint = await deps.checkpoints.get(REALM)
    assert checkpoint is not None and checkpoint >= before_poll - timedelta(seconds=1)
    # The next poll re-reads the overlap and records the same invoice again, nothing more.
    await handlers.poll_changes(REALM, deps)
    entry = await mongo_db.rejected_invoices.find_one({"_id": f"{REALM}:{bad}"})
    assert entry is not None and entry["times_seen"] == 2 and entry["source"] == "cdc"
