"""Multicurrency invoices and partial payments end to end: an invoice in euros of a company
with multicurrency (the emulator adds `ExchangeRate`, `HomeTotalAmt` and `HomeBalance` as QBO
does) is fetched by the sync worker, stored with its home amounts, announced with them (the
event checked against schemas/), projected and returned by the api, and, once a payment is
applied, found by the api's partially_paid filter.

Real parts: the emulator over HTTP, Kafka, FerretDB, both services over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from pymongo.asynchronous.database import AsyncDatabase

from qbo_emulator.testing import RunningEmulator
from services.common import jsoncodec
from services.common.mongo import Document
from services.common.schemas import INVOICE_UPDATED, default_schemas
from services.common.settings import Settings
from tests.api_support import RunningApi, running_api
from tests.integration.conftest import SyncUnderTest
from tests.integration.test_sync_worker import REALM, connect_and_map, finished, refresh
from tests.support import MovableClock, eventually, read_topic

pytestmark = pytest.mark.integration

TOKEN = "multicurrency-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RATE = Decimal("1.0842")


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[RunningApi]:
    wired = settings.model_copy(update={"api_tokens": SecretStr(TOKEN)})
    async with running_api(wired) as running:
        yield running


def euro_invoice(emulator: RunningEmulator, qbo_customer_id: str, total: str) -> str:
    created = emulator.state.create_invoice(
        REALM,
        {
            "CustomerRef": {"value": qbo_customer_id},
            "TotalAmt": Decimal(total),
            "CurrencyRef": {"value": "EUR", "name": "Euro"},
            "ExchangeRate": RATE,
        },
    )
    return str(created["Id"])


async def listed(api: RunningApi, status: str = "all") -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=api.base_url, headers=AUTH) as http:
        response = await http.get("/api/customers/cust-1/invoices", params={"status": status})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = jsoncodec.loads(response.content)
    return body


async def test_a_partly_paid_euro_invoice_is_stored_announced_and_listed_with_home_amounts(
    worker: SyncUnderTest,
    api: RunningApi,
    emulator: RunningEmulator,
    clock: MovableClock,
    settings: Settings,
    mongo_db: AsyncDatabase[Document],
) -> None:
    qbo_customer = await connect_and_map(worker, emulator, clock, name="Lumière SARL")
    part_paid = euro_invoice(emulator, qbo_customer, "500.00")
    unpaid = euro_invoice(emulator, qbo_customer, "120.00")
    emulator.state.create_payment(
        REALM,
        {
            "CustomerRef": {"value": qbo_customer},
            "TotalAmt": Decimal("300.00"),
            "Line": [
                {
                    "Amount": Decimal("300.00"),
                    "LinkedTxn": [{"TxnId": part_paid, "TxnType": "Invoice"}],
                }
            ],
        },
    )
    sent = emulator.state.get_invoice(REALM, part_paid)
    assert (sent["HomeTotalAmt"], sent["HomeBalance"]) == (Decimal("542.10"), Decimal("216.84"))

    status = await finished(worker, await refresh(worker))
    assert status["status"] == "succeeded", status

    # Stored: the exact text of what QBO sent.
    stored = {d["invoice_id"]: d async for d in mongo_db.invoices.find({})}
    assert {k: stored[part_paid][k] for k in ("currency", "exchange_rate")} == {
        "currency": "EUR",
        "exchange_rate": "1.0842",
    }
    assert (stored[part_paid]["home_total_amt"], stored[part_paid]["home_balance"]) == (
        "542.10",
        "216.84",
    )
    assert (stored[unpaid]["home_total_amt"], stored[unpaid]["home_balance"]) == (
        "130.10",
        "130.10",
    )

    # Announced: on contract, with the digits QBO sent.
    records = await read_topic(settings.kafka_bootstrap_servers, settings.invoice_events_topic)
    events = {}
    for record in records:
        event = jsoncodec.loads(record.value)
        default_schemas().validate(INVOICE_UPDATED, event)
        events[event["data"]["invoice_id"]] = (event["data"], record.value)
    data, raw = events[part_paid]
    assert (data["exchange_rate"], data["home_total_amt"], data["home_balance"]) == (
        RATE,
        Decimal("542.10"),
        Decimal("216.84"),
    )
    assert b'"exchange_rate":1.0842' in raw and b'"home_balance":216.84' in raw
    assert (data["status"], data["balance"]) == ("open", Decimal("200.00"))

    # Listed by the api, once projected.
    body = await eventually(lambda: listed(api), lambda b: len(b["invoices"]) == 2)
    shown = {i["invoice_id"]: i for i in body["invoices"]}
    assert shown[part_paid]["exchange_rate"] == RATE
    assert (shown[part_paid]["home_total_amt"], shown[part_paid]["home_balance"]) == (
        Decimal("542.10"),
        Decimal("216.84"),
    )
    assert (shown[part_paid]["status"], shown[part_paid]["partially_paid"]) == ("open", True)
    assert (shown[unpaid]["status"], shown[unpaid]["partially_paid"]) == ("open", False)
    # Totals stay in the customer's currency.
    assert (body["totals"]["currency"], body["totals"]["balance"]) == ("EUR", Decimal("320.00"))

    partial = await listed(api, "partially_paid")
    assert [i["invoice_id"] for i in partial["invoices"]] == [part_paid]
    assert partial["totals"]["count"] == 1
    opened = await listed(api, "open")  # open keeps its meaning: both are still open
    assert sorted(i["invoice_id"] for i in opened["invoices"]) == sorted([part_paid, unpaid])
