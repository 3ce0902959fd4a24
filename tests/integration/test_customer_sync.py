"""Customer sync metadata, merges and a refresh that reconciles, on real parts: Kafka, FerretDB,
the emulator over HTTP (docs/design.md invariant 12)."""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from qbo_emulator.testing import RunningEmulator
from services.common.messages import EntityChange, SyncChanges
from services.common.mongo import Document
from services.common.settings import Settings
from services.sync import handlers
from services.sync.quickbooks.mapping import CustomerFacts
from tests.api_support import running_api
from tests.integration.conftest import SyncUnderTest
from tests.integration.test_sync_worker import (
    REALM,
    add_invoices,
    connect_and_map,
    events,
    finished,
    refresh,
)
from tests.support import MovableClock, eventually

pytestmark = pytest.mark.integration

DEV_AUTH = {"Authorization": "Bearer dev-token"}  # the token a local api accepts


async def mapping(db: AsyncDatabase[Document], local_id: str = "cust-1") -> Document:
    doc = await db.customer_mappings.find_one({"_id": local_id})
    assert doc is not None
    return doc


async def customer_view(settings: Settings, local_id: str = "cust-1") -> dict[str, Any]:
    async with running_api(settings, run_projector=False) as api:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as client:
            response = await client.get(f"/api/customers/{local_id}", headers=DEV_AUTH)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()["customer"]
    return body


async def test_a_refresh_stores_the_customers_sync_token_active_and_name(
    worker: SyncUnderTest,
    emulator: RunningEmulator,
    clock: MovableClock,
    mongo_db: AsyncDatabase[Document],
) -> None:
    qbo_customer = await connect_and_map(worker, emulator, clock)
    mapped = await mapping(mongo_db)
    assert (mapped["qbo_sync_token"], mapped["active"]) == (0, True)
    emulator.state.update_customer(REALM, qbo_customer, {"DisplayName": "Acme Group"})
    emulator.state.update_customer(REALM, qbo_customer, {"Active": False})  # no webhook wired

    status = await finished(worker, await refresh(worker))

    assert status["status"] == "succeeded", status
    doc = await mapping(mongo_db)
    assert (doc["qbo_sync_token"], doc["active"], doc["display_name"]) == (2, False, "Acme Group")


async def test_customer_facts_never_move_backwards(
    sync: SyncUnderTest,
    emulator: RunningEmulator,
    clock: MovableClock,
    mongo_db: AsyncDatabase[Document],
) -> None:
    qbo_customer = await connect_and_map(sync, emulator, clock)
    mappings = sync.service.deps.mappings

    newer = CustomerFacts(qbo_customer, 5, active=False, display_name="Newest")
    older = CustomerFacts(qbo_customer, 4, active=True, display_name="Older")
    assert await mappings.observe(REALM, [newer]) == 1
    assert await mappings.observe(REALM, [older, newer]) == 0  # a late read, then a repeat

    doc = await mapping(mongo_db)
    assert (doc["qbo_sync_token"], doc["active"], doc["display_name"]) == (5, False, "Newest")
    stub = CustomerFacts(qbo_customer, -1, active=False, display_name=None, deleted=True)
    assert await mappings.observe(REALM, [stub]) == 1
    assert await mappings.observe(REALM, [stub]) == 0
    doc = await mapping(mongo_db)
    assert (doc["qbo_sync_token"], doc["qbo_deleted"], doc["display_name"]) == (5, True, "Newest")


@pytest.mark.parametrize("fmt", ["legacy", "cloudevents"])
async def test_a_merge_re_points_the_mapping_and_the_moved_invoices_follow_with_events(
    fmt: str,
    worker: SyncUnderTest,
    emulator: RunningEmulator,
    clock: MovableClock,
    settings: Settings,
    mongo_db: AsyncDatabase[Document],
) -> None:
    absorbed = await connect_and_map(worker, emulator, clock)
    add_invoices(emulator, absorbed, 2)
    survivor = emulator.state.create_customer(REALM, {"DisplayName": "Acme Limited"})["Id"]
    own = emulator.state.create_invoice(
        REALM, {"CustomerRef": {"value": survivor}, "TotalAmt": Decimal("7.00")}
    )["Id"]
    assert (await finished(worker, await refresh(worker)))["status"] == "succeeded"
    emulator.state.configure_webhooks(
        url=f"{worker.base_url}/webhooks/quickbooks", format=fmt, enabled=True
    )

    moved = emulator.state.merge_customers(REALM, absorbed, survivor)["moved_invoices"]

    async def repointed() -> Document | None:
        return await mongo_db.customer_mappings.find_one(
            {"_id": "cust-1", "qbo_customer_id": survivor}
        )

    await eventually(repointed, lambda d: d is not None, timeout_s=20)
    everything = await eventually(lambda: events(settings), lambda es: len(es) >= 4, timeout_s=20)
    doc = await mapping(mongo_db)
    assert doc["merged_from"] == absorbed
    assert (doc["active"], doc["display_name"]) == (True, "Acme Limited")
    stored = {d["invoice_id"]: d async for d in mongo_db.invoices.find({})}
    assert sorted(stored) == sorted([*moved, own])
    for invoice_id in moved:
        assert stored[invoice_id]["qbo_customer_id"] == survivor
        assert stored[invoice_id]["local_customer_id"] == "cust-1"
        assert stored[invoice_id]["version"] == 2
    # The survivor's own invoice is listed for the local customer that now follows it.
    assert stored[own]["local_customer_id"] == "cust-1"
    after = [e["data"] for e in everything if e["data"]["version"] == 2]
    assert sorted(d["invoice_id"] for d in after) == sorted(moved)
    assert {d["qbo_customer_id"] for d in after} == {survivor}
    assert len(everything) == 5  # 2 first versions, the survivor's own, 2 re-assignments
    view = await customer_view(settings)
    assert (view["qbo_customer_id"], view["merged_from"], view["active"]) == (
        survivor,
        absorbed,
        True,
    )

    # The same merge delivered again (Intuit retries; a new command): nothing new.
    again = SyncChanges(
        realm_id=REALM,
        issued_by="webhook",
        changes=(
            EntityChange(
                entity="Customer",
                id=survivor,
                operation="Merge",
                last_updated=None,
                deleted_id=absorbed,
            ),
        ),
    )
    await worker.service.publish([again])
    status = await finished(worker, again.command_id)
    assert status["status"] == "succeeded", status
    assert status["result"]["stored"] == 0 and status["result"]["events"] == 0
    assert len(await events(settings)) == 5


async def test_an_inactive_customer_is_shown_as_such_by_the_api(
    worker: SyncUnderTest,
    emulator: RunningEmulator,
    clock: MovableClock,
    settings: Settings,
    mongo_db: AsyncDatabase[Document],
) -> None:
    qbo_customer = await connect_and_map(worker, emulator, clock)
    assert (await customer_view(settings))["active"] is True
    emulator.state.configure_webhooks(
        url=f"{worker.base_url}/webhooks/quickbooks", format="cloudevents", enabled=True
    )

    emulator.state.update_customer(REALM, qbo_customer, {"Active": False})

    async def inactive() -> Document | None:
        return await mongo_db.customer_mappings.find_one({"_id": "cust-1", "active": False})

    await eventually(inactive, lambda d: d is not None, timeout_s=20)
    view = await customer_view(settings)
    assert (view["active"], view["qbo_sync_token"], view["merged_from"]) == (False, "1", None)


async def test_cdc_keeps_the_customer_facts_in_step(
    sync: SyncUnderTest,
    emulator: RunningEmulator,
    clock: MovableClock,
    mongo_db: AsyncDatabase[Document],
) -> None:
    qbo_customer = await connect_and_map(sync, emulator, clock)
    await sync.service.deps.checkpoints.move(REALM, clock() - timedelta(minutes=1))
    emulator.state.update_customer(REALM, qbo_customer, {"Active": False})

    await handlers.poll_changes(REALM, sync.service.deps)

    doc = await mapping(mongo_db)
    assert (doc["active"], doc["qbo_sync_token"]) == (False, 1)


async def test_a_refresh_after_a_lost_webhook_and_30_days_tombstones_and_re_assigns(
    worker: SyncUnderTest,
    emulator: RunningEmulator,
    clock: MovableClock,
    settings: Settings,
    mongo_db: AsyncDatabase[Document],
) -> None:
    """The webhooks of a deletion and of a move to another customer were lost, and CDC's 30
    days have passed: only the refresh's reconciliation can still see them."""
    qbo_customer = await connect_and_map(worker, emulator, clock)
    add_invoices(emulator, qbo_customer, 3)
    other = emulator.state.create_customer(REALM, {"DisplayName": "Other Co"})["Id"]
    assert (await finished(worker, await refresh(worker)))["status"] == "succeeded"
    ids = sorted([d["invoice_id"] async for d in mongo_db.invoices.find({})], key=int)
    deps = worker.service.deps
    await deps.checkpoints.move(REALM, clock())
    emulator.state.delete_invoice(REALM, ids[0], notify=False)
    emulator.state.update_invoice(REALM, ids[1], {"CustomerRef": {"value": other}}, notify=False)
    # 31 days later, on both sides.
    clock.advance(days=31)
    emulator.state.clock = lambda: time.time() + 31 * 86400
    assert (await handlers.poll_changes(REALM, deps))["stored"] == 0  # CDC looks back 30 days
    reads = worker.service.qbo.calls[REALM]

    status = await finished(worker, await refresh(worker))

    assert status["status"] == "succeeded", status
    assert status["result"] == {"fetched": 1, "stored": 2, "events": 2, "reconciled": 2}
    assert worker.service.qbo.calls[REALM] - reads == 3  # the page, the Id IN re-read, the customer
    tombstone = await mongo_db.invoices.find_one({"_id": f"{REALM}:{ids[0]}"})
    assert tombstone is not None
    assert (tombstone["status"], tombstone["qbo_customer_id"], tombstone["version"]) == (
        "deleted",
        qbo_customer,
        2,
    )
    assert tombstone["local_customer_id"] == "cust-1"
    moved = await mongo_db.invoices.find_one({"_id": f"{REALM}:{ids[1]}"})
    assert moved is not None
    assert (moved["qbo_customer_id"], moved["local_customer_id"], moved["version"]) == (
        other,
        None,
        2,
    )
    emitted = [e["data"] for e in await events(settings) if e["data"]["version"] == 2]
    by_id = {d["invoice_id"]: d for d in emitted}
    assert set(by_id) == {ids[0], ids[1]}
    assert by_id[ids[0]]["deleted"] is True
    assert by_id[ids[1]]["qbo_customer_id"] == other

    # A refresh again (and the same one redelivered) finds nothing missing: no Id re-read.
    reads = worker.service.qbo.calls[REALM]
    second = await finished(worker, await refresh(worker))
    assert second["result"] == {"fetched": 1, "stored": 0, "events": 0}
    assert worker.service.qbo.calls[REALM] - reads == 2  # the page and the customer
    assert len(await events(settings)) == 5
