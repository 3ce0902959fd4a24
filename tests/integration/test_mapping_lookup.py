"""Which local customer owns a QBO customer's invoices in events (`CustomerMappings.local_ids`):
the same answer whether a page names one QBO customer (an equality query) or several (`$in`)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from services.common.mongo import Document
from services.sync.store import CustomerMapping, CustomerMappings

pytestmark = pytest.mark.integration

REALM = "9130350000000888"


async def test_the_first_local_id_owns_a_shared_qbo_customer_for_one_or_many_ids(
    mongo_db: AsyncDatabase[Document],
) -> None:
    mappings = CustomerMappings(mongo_db, lambda: datetime.now(UTC))
    # Saved in the "wrong" order: the answer must not depend on insertion order.
    for local_id, qbo_id in [("m-2", "58"), ("m-1", "58"), ("z-9", "59"), ("x-1", "60")]:
        await mappings.save(CustomerMapping(local_id, REALM, qbo_id, f"Customer {qbo_id}"))
    await mappings.save(CustomerMapping("a-0", "1111", "58", "Another realm's customer"))

    assert await mappings.local_ids(REALM, ["58"]) == {"58": "m-1"}
    assert await mappings.local_ids(REALM, ["58", "59", "61"]) == {
        "58": "m-1",
        "59": "z-9",
        "61": None,
    }
    assert await mappings.local_ids(REALM, ["61"]) == {"61": None}
    assert await mappings.local_ids(REALM, []) == {}
