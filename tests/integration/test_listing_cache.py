"""Cached invoice listings are never served after the projector changed the customer's invoices.

The api keeps rendered listings per customer revision (services/api/listing_cache.py); the
projector's write path (`ReadInvoices.apply_many`) gives every customer of a batch a new
revision, including the customer an invoice moved away from.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from services.api.listing_cache import ListingCache
from services.api.readmodel import read_invoice
from services.api.store import ReadInvoices
from services.common import jsoncodec
from services.common.mongo import Document
from services.common.settings import Settings
from tests.api_support import REALM, invoice_event, running_api, seed_mapping

pytestmark = pytest.mark.integration

AUTH = {"Authorization": "Bearer dev-token"}  # the token a local api accepts
PATH = "/api/customers/cust-42/invoices"


def projected(invoice_id: str, version: int, **fields: Any) -> Document:
    return read_invoice(invoice_event(invoice_id, version, **fields), datetime.now(UTC))


def listing_hits(metrics: str) -> float:
    for line in metrics.splitlines():
        if line.startswith('qbo_api_listing_cache_total{result="hit"}'):
            return float(line.split()[-1])
    return 0.0


def balances(body: dict[str, Any]) -> dict[str, Decimal]:
    return {i["invoice_id"]: Decimal(str(i["balance"])) for i in body["invoices"]}


async def listing(client: httpx.AsyncClient) -> dict[str, Any]:
    answer = await client.get(PATH)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = jsoncodec.loads(answer.content)  # amounts as exact decimals
    return body


async def test_a_cached_listing_follows_every_projected_change(
    settings: Settings, mongo_db: AsyncDatabase[Document]
) -> None:
    await seed_mapping(mongo_db, "cust-42", qbo_customer_id="58")
    read_model = ReadInvoices(mongo_db)
    await read_model.apply_many([projected("1", 1), projected("2", 1)])
    async with running_api(settings, run_projector=False) as api:
        async with httpx.AsyncClient(base_url=api.base_url, headers=AUTH, timeout=30) as client:
            first = await listing(client)
            assert await listing(client) == first
            assert listing_hits((await client.get("/metrics")).text) == 1  # the second GET

            # A new version of one invoice: the next listing shows it, not the cached one.
            await read_model.apply_many([projected("1", 2, balance="40.00")])
            changed = await listing(client)
            assert balances(changed) == {"1": Decimal("40.00"), "2": Decimal("100.00")}
            assert changed["totals"] != first["totals"]

            # An invoice moved to another customer leaves this customer's listing.
            await read_model.apply_many([projected("2", 2, qbo_customer_id="59")])
            moved = await listing(client)
            assert balances(moved) == {"1": Decimal("40.00")}

            # A redelivered batch (already stored: stale) still renews the revision, so a
            # listing cached in between cannot outlive a crash before the stamp.
            customer = {"realm_id": REALM, "qbo_customer_id": "58"}
            before = await read_model.revision(customer)
            await read_model.apply_many([projected("1", 2, balance="40.00")])
            after = await read_model.revision(customer)
            assert before is not None and after is not None and before != after


def test_the_cache_keeps_a_body_only_for_its_revision_its_age_and_its_size() -> None:
    now = [0.0]
    cache = ListingCache(max_entries=2, max_age_s=30.0, clock=lambda: now[0])
    cache.put(("a",), "r1", b"A")
    assert cache.get(("a",), "r1") == b"A"
    assert cache.get(("a",), "r2") is None  # the customer changed since
    cache.put(("b",), None, b"B")  # never stamped: not kept
    assert cache.get(("b",), None) is None
    cache.put(("b",), "r1", b"B")
    cache.put(("c",), "r1", b"C")  # over two entries: the least recently used goes
    assert cache.get(("a",), "r1") is None
    assert cache.get(("c",), "r1") == b"C"
    now[0] = 31.0
    assert cache.get(("c",), "r1") is None  # too old, whatever the revision
    cache.put(("big",), "r1", b"x" * (1024 * 1024 + 1))
    assert cache.get(("big",), "r1") is None
