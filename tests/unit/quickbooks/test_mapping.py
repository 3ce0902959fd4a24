"""QBO Invoice JSON -> InvoiceRecord for the multicurrency fields, with real-shaped payloads.

The shapes follow Intuit's Invoice entity reference and "Manage multiple currencies" page
(docs/design.md, "QBO facts"): `ExchangeRate` is home-currency units per foreign unit; a company
without multicurrency sends none of the three fields; `HomeTotalAmt`/`HomeBalance` come with
invoices in a foreign currency.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from services.common import jsoncodec
from services.common.schemas import INVOICE_UPDATED, default_schemas
from services.common.statuses import InvoiceStatus
from services.sync.events import invoice_updated
from services.sync.quickbooks.mapping import (
    InvoiceRecord,
    UnmappableInvoice,
    invoice_record,
)
from services.sync.store import InvoiceStore

REALM = "9130350000000001"
NOW = datetime(2030, 3, 15, tzinfo=UTC)

# A home-currency invoice of a company without multicurrency, as a query answers it.
HOME = """{
  "AllowIPNPayment": false, "AllowOnlinePayment": false,
  "AllowOnlineCreditCardPayment": false, "AllowOnlineACHPayment": false,
  "domain": "QBO", "sparse": false, "Id": "130", "SyncToken": "0",
  "MetaData": {"CreateTime": "2030-03-01T09:00:00-08:00",
               "LastUpdatedTime": "2030-03-01T09:00:00-08:00"},
  "CustomField": [{"DefinitionId": "1", "Name": "Crew #", "Type": "StringType"}],
  "DocNumber": "1037", "TxnDate": "2030-03-01",
  "CurrencyRef": {"value": "USD", "name": "United States Dollar"},
  "LinkedTxn": [],
  "Line": [{"Id": "1", "LineNum": 1, "Amount": 150.00, "DetailType": "SalesItemLineDetail",
            "SalesItemLineDetail": {"ItemRef": {"value": "1", "name": "Services"},
                                    "TaxCodeRef": {"value": "NON"}}},
           {"Amount": 150.00, "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}}],
  "CustomerRef": {"value": "58", "name": "Amy's Bird Sanctuary"},
  "SalesTermRef": {"value": "3"}, "DueDate": "2030-03-31",
  "TotalAmt": 150.00, "Balance": 150.00
}"""

# The same company's invoice to a customer billed in euros, once a payment of 300 EUR applied.
FOREIGN = """{
  "domain": "QBO", "sparse": false, "Id": "145", "SyncToken": "1",
  "MetaData": {"CreateTime": "2030-03-02T09:00:00-08:00",
               "LastUpdatedTime": "2030-03-05T11:12:13-08:00"},
  "DocNumber": "1052", "TxnDate": "2030-03-02",
  "CurrencyRef": {"value": "EUR", "name": "Euro"},
  "ExchangeRate": 1.0842,
  "LinkedTxn": [{"TxnId": "160", "TxnType": "Payment"}],
  "Line": [{"Id": "1", "LineNum": 1, "Amount": 500.00, "DetailType": "SalesItemLineDetail",
            "SalesItemLineDetail": {"ItemRef": {"value": "1", "name": "Services"}}}],
  "CustomerRef": {"value": "61", "name": "Lumière SARL"},
  "DueDate": "2030-04-01",
  "TotalAmt": 500.00, "HomeTotalAmt": 542.10, "Balance": 200.00, "HomeBalance": 216.84
}"""


def parsed(text: str, **changes: Any) -> dict[str, Any]:
    invoice: dict[str, Any] = jsoncodec.loads(text.encode())  # Decimals, as the client reads
    invoice.update(changes)
    return invoice


def event_of(record: InvoiceRecord) -> dict[str, Any]:
    fields = InvoiceStore._fields(None, record, "cust-1", 1, NOW)  # type: ignore[arg-type]
    event = invoice_updated({"_id": record.key, **fields})
    default_schemas().validate(INVOICE_UPDATED, event)
    return event


def test_a_company_without_multicurrency_has_no_home_amounts() -> None:
    record = invoice_record(REALM, parsed(HOME))
    assert record.currency == "USD"
    assert (record.exchange_rate, record.home_total_amt, record.home_balance) == (None,) * 3
    data = event_of(record)["data"]
    # Absent, not null: the event is the same bytes an earlier version emitted (invariant 4).
    assert not {"exchange_rate", "home_total_amt", "home_balance"} & set(data)


def test_a_foreign_currency_invoice_carries_rate_and_home_amounts_exactly() -> None:
    record = invoice_record(REALM, parsed(FOREIGN))
    assert record.currency == "EUR"
    assert record.exchange_rate == Decimal("1.0842")
    assert (record.total_amt, record.balance) == (Decimal("500.00"), Decimal("200.00"))
    assert (record.home_total_amt, record.home_balance) == (Decimal("542.10"), Decimal("216.84"))
    assert record.status is InvoiceStatus.OPEN
    data = event_of(record)["data"]
    assert data["exchange_rate"] == Decimal("1.0842")
    assert (data["home_total_amt"], data["home_balance"]) == (Decimal("542.10"), Decimal("216.84"))
    assert b'"home_balance":216.84' in jsoncodec.dumpb(data)


def test_a_home_currency_invoice_of_a_multicurrency_company_keeps_its_rate_of_one() -> None:
    record = invoice_record(REALM, parsed(HOME, ExchangeRate=Decimal(1)))
    assert record.exchange_rate == Decimal(1)
    assert record.home_total_amt is None  # the amounts are already in the home currency
    assert event_of(record)["data"]["exchange_rate"] == Decimal("1.00")


def test_many_decimals_in_a_rate_are_kept_not_rounded() -> None:
    record = invoice_record(REALM, parsed(FOREIGN, ExchangeRate=Decimal("0.00712345678901")))
    assert event_of(record)["data"]["exchange_rate"] == Decimal("0.00712345678901")


def test_a_voided_foreign_invoice_keeps_zero_home_amounts() -> None:
    record = invoice_record(
        REALM,
        parsed(
            FOREIGN,
            TotalAmt=0,
            Balance=0,
            HomeTotalAmt=0,
            HomeBalance=0,
            PrivateNote="Voided",
        ),
    )
    assert record.status is InvoiceStatus.VOIDED
    assert record.home_total_amt == 0 and record.exchange_rate == Decimal("1.0842")


def test_a_deletion_stub_has_no_currency_fields() -> None:
    stub = {
        "Id": "145",
        "status": "Deleted",
        "MetaData": {"LastUpdatedTime": "2030-03-06T00:00:00Z"},
    }
    record = invoice_record(REALM, stub)
    assert (record.exchange_rate, record.home_total_amt, record.home_balance) == (None,) * 3


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("ExchangeRate", Decimal(0), "not positive"),
        ("ExchangeRate", Decimal("-1.2"), "not positive"),
        ("ExchangeRate", "lots", "ExchangeRate"),
        ("HomeTotalAmt", Decimal("1E+25"), "HomeTotalAmt"),
        ("HomeBalance", True, "HomeBalance"),
        ("HomeBalance", {"value": 1}, "HomeBalance"),
    ],
)
def test_unusable_multicurrency_fields_refuse_the_invoice_with_a_reason(
    field: str, value: Any, reason: str
) -> None:
    with pytest.raises(UnmappableInvoice, match=reason):
        invoice_record(REALM, parsed(FOREIGN, **{field: value}))


def test_null_multicurrency_fields_are_taken_as_absent() -> None:
    record = invoice_record(
        REALM, parsed(FOREIGN, ExchangeRate=None, HomeTotalAmt=None, HomeBalance=None)
    )
    assert (record.exchange_rate, record.home_total_amt, record.home_balance) == (None,) * 3
