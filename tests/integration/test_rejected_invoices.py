"""`rejected_invoices` entries are cleared when their invoice is stored, without a delete per
page for the realms that have none (services/sync/store.py `RejectedInvoices.resolve`)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from services.common.mongo import Document
from services.sync.store import InvoiceRejection, RejectedInvoices

pytestmark = pytest.mark.integration

REALM = "9130350000000001"
OTHER = "9130350000000002"


async def keys(db: AsyncDatabase[Document]) -> list[str]:
    return sorted([d["_id"] async for d in db["rejected_invoices"].find({}, {"_id": 1})])


async def test_an_entry_is_cleared_when_its_invoice_is_stored_and_clean_realms_are_remembered(
    mongo_db: AsyncDatabase[Document],
) -> None:
    seconds = [0.0]
    rejected = RejectedInvoices(
        mongo_db, lambda: datetime.now(UTC), clean_for=60.0, monotonic=lambda: seconds[0]
    )
    await rejected.record([InvoiceRejection(REALM, "7", "bad amount", "{}")], "refresh", None)
    await rejected.resolve([f"{REALM}:7", f"{OTHER}:1"])  # REALM's entry goes; OTHER has none
    assert await keys(mongo_db) == []

    # OTHER was just found clean: an entry written behind this process's back (another worker
    # during a partition move) is left alone for the period, then cleared like any other.
    await mongo_db["rejected_invoices"].insert_one({"_id": f"{OTHER}:1", "realm_id": OTHER})
    await rejected.resolve([f"{OTHER}:1"])
    assert await keys(mongo_db) == [f"{OTHER}:1"]
    seconds[0] = 61.0
    await rejected.resolve([f"{OTHER}:1"])
    assert await keys(mongo_db) == []

    # Recording an entry forgets the realm's clean state at once.
    await rejected.record([InvoiceRejection(OTHER, "2", "bad date", "{}")], "cdc", None)
    await rejected.resolve([f"{OTHER}:2"])
    assert await keys(mongo_db) == []
