"""The invoice write model on a real MongoDB-protocol server: a refresh compares its pages
against one read of the customer's stored versions (`StoredVersions`), and that read may be
out of date by the time a page is written. These tests make it out of date on purpose and
check that nothing older overwrites anything newer and that every stored version is handed
back for its event."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from services.common.mongo import PARALLEL_KEY_LOOKUPS, Document
from services.sync.quickbooks.mapping import InvoiceRecord, invoice_record
from services.sync.store import InvoiceStore

pytestmark = pytest.mark.integration

REALM = "9130350000000777"
CUSTOMER = "58"
LOCAL_IDS: dict[str, str | None] = {CUSTOMER: "cust-58"}
T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def invoice(
    invoice_id: int, sync_token: int, amount: str, customer: str = CUSTOMER
) -> InvoiceRecord:
    changed = T0 + timedelta(minutes=sync_token)
    obj: dict[str, Any] = {
        "Id": str(invoice_id),
        "SyncToken": str(sync_token),
        "CustomerRef": {"value": customer},
        "TotalAmt": Decimal(amount),
        "Balance": Decimal(amount),
        "DueDate": "2026-12-31",
        "MetaData": {"LastUpdatedTime": changed.isoformat()},
    }
    return invoice_record(REALM, obj)


def clock() -> datetime:
    return T0


@pytest.fixture
def store(mongo_db: AsyncDatabase[Document]) -> InvoiceStore:
    return InvoiceStore(mongo_db, clock)


async def stored(store: InvoiceStore, invoice_id: int) -> Document:
    (doc,) = await store.get_many([f"{REALM}:{invoice_id}"])
    return doc


async def test_a_snapshot_behind_a_newer_write_never_overwrites_it(store: InvoiceStore) -> None:
    await store.apply([invoice(1, 0, "10.00")], LOCAL_IDS)
    known = await store.customer_versions(REALM, CUSTOMER)
    assert len(known) == 1
    # Another writer (a worker that held the partition before a rebalance) stores SyncToken 2.
    await store.apply([invoice(1, 2, "30.00")], LOCAL_IDS)

    # This refresh read SyncToken 1 from QBO before that change; its snapshot says 0 is stored.
    result = await store.apply([invoice(1, 1, "20.00")], LOCAL_IDS, known)

    doc = await stored(store, 1)
    assert (doc["sync_token"], doc["version"], doc["total_amt_micros"]) == (2, 2, 30_000_000)
    # What is stored is handed back, so its event goes out again rather than never.
    assert [(d["_id"], d["version"]) for d in result.written] == [(f"{REALM}:1", 2)]
    held = known.get(f"{REALM}:1")
    assert held is not None and held.sync_token == 2


async def test_a_snapshot_missing_an_invoice_someone_inserted_updates_it_in_order(
    store: InvoiceStore,
) -> None:
    known = await store.customer_versions(REALM, CUSTOMER)
    assert len(known) == 0
    await store.apply([invoice(7, 0, "5.00")], LOCAL_IDS)  # inserted after the snapshot

    result = await store.apply([invoice(7, 1, "6.00"), invoice(8, 0, "1.00")], LOCAL_IDS, known)

    seven, eight = await stored(store, 7), await stored(store, 8)
    assert (seven["sync_token"], seven["version"], seven["total_amt_micros"]) == (1, 2, 6_000_000)
    assert (eight["sync_token"], eight["version"]) == (0, 1)
    assert sorted((d["_id"], d["version"]) for d in result.written) == [
        (f"{REALM}:7", 2),
        (f"{REALM}:8", 1),
    ]


async def test_a_snapshot_learns_its_writes_so_a_repeated_page_stores_nothing(
    store: InvoiceStore,
) -> None:
    page = [invoice(i, 0, f"{i}.25") for i in range(1, 2 * PARALLEL_KEY_LOOKUPS + 3)]
    known = await store.customer_versions(REALM, CUSTOMER)

    first = await store.apply(page, LOCAL_IDS, known)
    again = await store.apply(page, LOCAL_IDS, known)
    fresh = await store.apply(page, LOCAL_IDS)  # compared against the database itself

    assert first.stored == len(page)
    assert again.stored == 0 and fresh.stored == 0
    assert len(known) == len(page)
    stored_keys = await store.customer_versions(REALM, CUSTOMER)
    assert all(stored_keys.get(r.key) is not None for r in page) and len(stored_keys) == len(page)


@pytest.mark.parametrize("count", [1, PARALLEL_KEY_LOOKUPS, PARALLEL_KEY_LOOKUPS + 1, 40])
async def test_stored_versions_are_read_alike_for_few_and_many_keys(
    store: InvoiceStore, count: int
) -> None:
    await store.apply([invoice(i, 3, "2.00") for i in range(count)], LOCAL_IDS)
    keys = [f"{REALM}:{i}" for i in range(count)] + [f"{REALM}:404"]

    docs = await store.get_many(keys)

    assert sorted(d["_id"] for d in docs) == sorted(keys[:-1])
    assert all("raw_json" not in d and d["sync_token"] == 3 for d in docs)
