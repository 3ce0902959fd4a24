"""`ReadInvoices.apply_many` replaces an older stored version by compare-and-set on the version
it read. When that read is already out of date (another projector wrote meanwhile), the write
must still end with the newest version stored, never an older one."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from services.api.readmodel import invoice_key, read_invoice
from services.api.store import Applied, ReadInvoices
from services.common.mongo import CommandCounter, Document, make_client
from services.common.settings import Settings
from tests.api_support import REALM, invoice_event

pytestmark = pytest.mark.integration


class OutdatedReads(ReadInvoices):
    """Reads every stored version as 1, as if another writer moved them on just after."""

    async def held(self, keys: Sequence[str]) -> list[Document]:
        return [{"_id": key, "version": 1} for key in keys]


def doc(invoice_id: str, version: int) -> Document:
    return read_invoice(invoice_event(invoice_id, version), datetime.now(UTC))


async def stored_version(db: AsyncDatabase[Document], invoice_id: str) -> int:
    found = await db["read_invoices"].find_one({"_id": invoice_key(REALM, invoice_id)})
    assert found is not None
    return int(found["version"])


async def test_an_outdated_read_never_stores_an_older_version(
    mongo_db: AsyncDatabase[Document],
) -> None:
    await mongo_db["read_invoices"].insert_many([doc("1", 5), doc("2", 2)])
    applied = await OutdatedReads(mongo_db).apply_many([doc("1", 3), doc("2", 3)])
    # "1": stored 5 is newer than 3, whatever the read said. "2": stored 2 is older: replaced.
    assert applied == [Applied.STALE, Applied.STORED]
    assert await stored_version(mongo_db, "1") == 5
    assert await stored_version(mongo_db, "2") == 3


async def test_an_up_to_date_read_replaces_by_compare_and_set(
    mongo_db: AsyncDatabase[Document],
) -> None:
    await mongo_db["read_invoices"].insert_one(doc("1", 1))
    applied = await ReadInvoices(mongo_db).apply_many([doc("1", 2), doc("1", 4), doc("1", 3)])
    assert applied == [Applied.STALE, Applied.STORED, Applied.STALE]
    assert await stored_version(mongo_db, "1") == 4


async def test_a_later_version_is_written_over_its_predecessor_in_one_command(
    settings: Settings,
) -> None:
    counter = CommandCounter()
    client = make_client(settings.mongodb_uri, counter=counter)
    db = client[settings.mongodb_database]
    try:
        store = ReadInvoices(db)
        await db["read_invoices"].insert_many([doc("1", 1), doc("2", 4)])
        counter.counts.clear()
        # "1" follows its stored predecessor, under another customer now; "2" does not.
        moved = read_invoice(invoice_event("1", 2, qbo_customer_id="77"), datetime.now(UTC))
        applied = await store.apply_many([moved])
        written = dict(counter.counts)
        repeated = await store.apply_many([moved, doc("2", 3)])
        revisions = {c["_id"] async for c in db["read_customers"].find({})}
    finally:
        await client.close()

    assert applied == [Applied.STORED] and repeated == [Applied.STALE, Applied.STALE]
    # One compare-and-set, no read first; then the revisions of both customers, the one it
    # left included, in one bulk write.
    assert written == {
        ("service", "findAndModify", "read_invoices"): 1,
        ("service", "update", "read_customers"): 1,
    }
    assert revisions == {f"{REALM}:58", f"{REALM}:77"}
