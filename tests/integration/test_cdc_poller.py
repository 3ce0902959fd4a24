"""The CDC poll on its own: a full answer (Intuit's 1000-per-entity cap, of invoices or of
customers) narrows the window and asks again, deletions arrive as tombstones, and the checkpoint
moves only after the writes."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from qbo_emulator.testing import RunningEmulator
from services.common.mongo import Document
from services.sync import handlers
from services.sync.oauth.intuit import TokenGrant
from tests.integration.conftest import SyncUnderTest
from tests.integration.test_sync_worker import REALM, connect_and_map
from tests.support import MovableClock

pytestmark = pytest.mark.integration


async def test_full_cdc_answer_narrows_the_window_until_everything_is_stored(
    sync: SyncUnderTest,
    emulator: RunningEmulator,
    clock: MovableClock,
    mongo_db: AsyncDatabase[Document],
) -> None:
    grant = TokenGrant.from_response(emulator.state.issue_tokens(REALM), clock())
    await sync.service.vault.connect(REALM, "alice", grant)
    deps = sync.service.deps
    await deps.checkpoints.move(REALM, clock() - timedelta(minutes=1))
    customer = emulator.state.create_customer(REALM, {"DisplayName": "Acme"})
    ids = [
        emulator.state.create_invoice(
            REALM, {"CustomerRef": {"value": customer["Id"]}, "TotalAmt": Decimal("1.10")}
        )["Id"]
        for _ in range(1500)
    ]
    # CDC has second resolution: the deletion lands in a later second (the emulator's clock).
    later = emulator.state.clock() + 1.1
    emulator.state.clock = lambda: later
    emulator.state.delete_invoice(REALM, ids[0])
    before_poll = clock()

    result = await handlers.poll_changes(REALM, deps)

    assert result["stored"] == 1500
    assert sync.service.qbo.calls[REALM] >= 2  # the first answer was full
    assert await mongo_db.invoices.count_documents({}) == 1500
    tombstone = await mongo_db.invoices.find_one({"_id": f"{REALM}:{ids[0]}"})
    assert tombstone is not None and tombstone["status"] == "deleted"
    checkpoint = await deps.checkpoints.get(REALM)
    assert checkpoint is not None and checkpoint >= before_poll - timedelta(seconds=1)

    again = await handlers.poll_changes(REALM, deps)  # the overlap re-reads; nothing is new
    assert again["stored"] == 0


async def test_first_poll_of_a_new_connection_only_sets_the_checkpoint(
    sync: SyncUnderTest, emulator: RunningEmulator, clock: MovableClock
) -> None:
    grant = TokenGrant.from_response(emulator.state.issue_tokens(REALM), clock())
    await sync.service.vault.connect(REALM, "alice", grant)

    result = await handlers.poll_changes(REALM, sync.service.deps)

    assert result == {"fetched": 0, "stored": 0, "events": 0}
    assert sync.service.qbo.calls[REALM] == 0
    assert await sync.service.deps.checkpoints.get(REALM) is not None


@pytest.mark.parametrize("same_second", [False, True], ids=["later-second", "one-second"])
async def test_a_full_answer_of_customers_narrows_the_window_too(
    sync: SyncUnderTest,
    emulator: RunningEmulator,
    clock: MovableClock,
    mongo_db: AsyncDatabase[Document],
    same_second: bool,
) -> None:
    qbo_customer = await connect_and_map(sync, emulator, clock)
    deps = sync.service.deps
    await deps.checkpoints.move(REALM, clock() - timedelta(minutes=1))
    frozen = emulator.state.clock()
    emulator.state.clock = lambda: frozen  # CDC's resolution is the second
    for i in range(1200):  # more customer changes than one CDC answer holds, oldest first
        emulator.state.create_customer(REALM, {"DisplayName": f"Other {i}"})
    if not same_second:
        emulator.state.clock = lambda: frozen + 1.1
    # The mapped customer's change is the newest: beyond the first full answer.
    emulator.state.update_customer(REALM, qbo_customer, {"DisplayName": "Acme Renamed"})

    await handlers.poll_changes(REALM, deps)

    doc = await mongo_db.customer_mappings.find_one({"_id": "cust-1"})
    assert doc is not None
    assert (doc["display_name"], doc["qbo_sync_token"]) == ("Acme Renamed", 1)
