"""The handlers over in-memory fakes and the real QBO client talking to the emulator: refresh
with paging, redelivery, webhook changes, CDC windows, one bad invoice among good ones. No
Kafka, no MongoDB (those adapters are covered in tests/integration)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from structlog.testing import capture_logs

from services.common.messages import EntityChange, SyncChanges
from services.sync import handlers
from tests.unit.sync.fakes import (
    AMOUNTS,
    REALM,
    Sync,
    add_invoices,
    keys,
    mapped_customer,
    refresh_command,
)


def change(invoice_id: str, operation: str, when: str | None = None) -> EntityChange:
    return EntityChange(entity="Invoice", id=invoice_id, operation=operation, last_updated=when)


async def test_a_refresh_reads_every_page_and_stores_and_emits_each_invoice_once(
    sync: Sync, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handlers, "PAGE_SIZE", 2)
    ids = add_invoices(sync, mapped_customer(sync), *AMOUNTS)
    command = refresh_command()

    result = await handlers.refresh_invoices(command, sync.deps)

    assert result == {"fetched": 5, "stored": 5, "events": 5}
    assert sync.calls(REALM, "query") == 3 + 1  # pages of 2, 2 and 1; the customer's facts
    stored = sync.invoices.of_realm(REALM)
    assert [stored[i]["total_amt"] for i in ids] == AMOUNTS  # exact, never a float
    assert sorted(sync.events.keys()) == keys(*ids)
    assert sync.outbox.open_entries == {}
    assert sync.mappings.synced_by == {"cust-1": command.command_id}
    assert sync.mappings.by_local["cust-1"].qbo_sync_token == 0  # read at every refresh


async def test_a_redelivered_refresh_stores_and_emits_nothing_twice(sync: Sync) -> None:
    ids = add_invoices(sync, mapped_customer(sync), *AMOUNTS)
    command = refresh_command()
    await handlers.refresh_invoices(command, sync.deps)

    again = await handlers.refresh_invoices(command, sync.deps)

    assert again == {"fetched": 5, "stored": 0, "events": 0}
    assert sorted(sync.events.keys()) == keys(*ids)
    assert sync.invoices.writes == 5


async def test_a_refresh_tombstones_an_invoice_qbo_no_longer_lists(sync: Sync) -> None:
    ids = add_invoices(sync, mapped_customer(sync), *AMOUNTS[:3])
    await handlers.refresh_invoices(refresh_command(), sync.deps)
    sync.books.delete_invoice(REALM, ids[1], notify=False)  # the webhook was lost

    result = await handlers.refresh_invoices(refresh_command(), sync.deps)

    assert result["reconciled"] == 1 and result["stored"] == 1
    assert sync.invoices.of_realm(REALM)[ids[1]]["deleted"] is True
    assert sync.events.emitted[-1].key == f"{REALM}:{ids[1]}"
    assert sync.events.emitted[-1].version == 2


async def test_a_bad_invoice_is_rejected_while_the_rest_of_its_page_is_stored(sync: Sync) -> None:
    qbo_id = mapped_customer(sync)
    good = add_invoices(sync, qbo_id, *AMOUNTS[:2])
    (bad,) = add_invoices(sync, qbo_id, Decimal("1E+25"))  # beyond what is stored exactly
    good += add_invoices(sync, qbo_id, *AMOUNTS[2:])

    result = await handlers.refresh_invoices(refresh_command(), sync.deps)

    assert result == {"fetched": 6, "stored": 5, "events": 5}
    assert sorted(sync.invoices.of_realm(REALM)) == sorted(good)
    entry = sync.rejected.entries[f"{REALM}:{bad}"]
    assert entry["source"] == "refresh" and "more than 20 integer digits" in entry["reason"]

    sync.books.update_invoice(REALM, bad, {"TotalAmt": Decimal("25"), "Balance": Decimal("25")})
    await handlers.refresh_invoices(refresh_command(), sync.deps)
    assert bad in sync.invoices.of_realm(REALM)
    assert sync.rejected.entries == {}  # stored now: the entry is gone


async def test_webhook_changes_fetch_only_the_named_invoices_in_one_query(sync: Sync) -> None:
    ids = add_invoices(sync, mapped_customer(sync), *AMOUNTS)
    sync.books.delete_invoice(REALM, ids[2], notify=False)
    changes = (
        change(ids[0], "Update"),
        change(ids[1], "Create"),
        change(ids[2], "Delete", "2026-01-01T00:00:05Z"),
    )
    command = SyncChanges(realm_id=REALM, issued_by="webhook", changes=changes)

    result = await handlers.sync_changes(command, sync.deps)

    assert result == {"fetched": 3, "stored": 3, "events": 3, "rejected": 0}
    assert sync.calls(REALM, "query") == 1  # `Id IN (…)`; a deletion needs no read
    stored = sync.invoices.of_realm(REALM)
    assert sorted(stored) == sorted(ids[:3])
    assert stored[ids[2]]["deleted"] is True
    again = await handlers.sync_changes(command, sync.deps)
    assert again["stored"] == again["events"] == 0


async def test_the_first_cdc_poll_starts_from_now_without_reading_qbo(sync: Sync) -> None:
    result = await handlers.poll_changes(REALM, sync.deps)

    assert result == {"fetched": 0, "stored": 0, "events": 0}
    assert sync.checkpoints.moves[REALM] == [sync.clock.now]
    assert sync.calls(REALM) == 0


async def test_the_cdc_checkpoint_moves_only_after_the_page_is_stored_and_emitted(
    sync: Sync,
) -> None:
    await handlers.poll_changes(REALM, sync.deps)
    start = sync.clock.now
    ids = add_invoices(sync, mapped_customer(sync), *AMOUNTS[:2])
    sync.clock.now += timedelta(minutes=5)
    sync.events.down = 1  # Kafka does not take the page's events

    with pytest.raises(Exception, match="brokers are away"):
        await handlers.poll_changes(REALM, sync.deps)
    assert await sync.checkpoints.get(REALM) == start  # the next poll reads the window again
    assert len(sync.outbox.open_entries) == 1  # the events are owed

    result = await handlers.poll_changes(REALM, sync.deps)
    assert result == {"fetched": 2, "stored": 0, "events": 0}  # stored by the failed poll
    assert await sync.checkpoints.get(REALM) == sync.clock.now
    sync.clock.now += timedelta(minutes=3)
    assert await sync.events.flush(older_than=timedelta(minutes=2)) == 2  # the outbox sweep
    assert sorted(sync.events.keys()) == keys(*ids)


async def test_a_cdc_checkpoint_older_than_30_days_is_clamped_to_what_intuit_allows(
    sync: Sync,
) -> None:
    await sync.checkpoints.move(REALM, sync.clock.now - timedelta(days=40))
    (invoice,) = add_invoices(sync, mapped_customer(sync), Decimal("3"))

    with capture_logs() as logs:
        result = await handlers.poll_changes(REALM, sync.deps)

    assert result == {"fetched": 1, "stored": 1, "events": 1}  # Intuit refuses > 30 days
    assert [e["event"] for e in logs].count("cdc.window_clamped") == 1
    assert list(sync.invoices.of_realm(REALM)) == [invoice]
    assert await sync.checkpoints.get(REALM) == sync.clock.now


async def test_a_full_cdc_answer_narrows_the_window_and_asks_again(
    sync: Sync, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handlers, "CDC_FULL", 2)  # as if 2 were Intuit's 1,000
    await handlers.poll_changes(REALM, sync.deps)
    qbo_id = mapped_customer(sync)
    first = add_invoices(sync, qbo_id, *AMOUNTS[:2])
    sync.clock.now += timedelta(seconds=2)
    later = add_invoices(sync, qbo_id, Decimal("9"))
    sync.clock.now += timedelta(minutes=5)

    result = await handlers.poll_changes(REALM, sync.deps)

    assert result["stored"] == 3
    assert sorted(sync.invoices.of_realm(REALM)) == sorted(first + later)
    moves = sync.checkpoints.moves[REALM]
    assert moves[-1] == sync.clock.now
    assert moves[-2] < moves[-1]  # moved to the newest change of the full answer first
    assert sync.calls(REALM, "cdc") == 2
