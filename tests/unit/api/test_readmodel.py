from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from services.api.models import iso_timestamp
from services.api.readmodel import (
    Totals,
    UnprojectableEvent,
    is_overdue,
    read_invoice,
    render_invoice,
)
from services.common import jsoncodec
from services.common.schemas import SCHEMAS_DIR

EXAMPLES = SCHEMAS_DIR / "examples" / "invoice-updated.v1"
NOW = datetime(2030, 3, 15, 12, 0, tzinfo=UTC)
TODAY = NOW.date()


def example(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = jsoncodec.loads(Path(EXAMPLES / name).read_text())
    return loaded


def test_an_open_invoice_event_becomes_a_read_model_document() -> None:
    doc = read_invoice(example("valid-open.json"), NOW)
    assert doc == {
        "_id": "9130350000000001:130",
        "local_customer_id": "cust-42",
        "realm_id": "9130350000000001",
        "invoice_id": "130",
        "qbo_customer_id": "58",
        "doc_number": "1037",
        "txn_date": "2026-11-25",
        "due_date": "2026-12-25",
        "currency": "USD",
        "total_amt": "1234.56",
        "total_amt_key": "p00000000000000001234.56",
        "total_amt_micros": 1_234_560_000,
        "balance": "1000.01",
        "balance_key": "p00000000000000001000.01",
        "balance_micros": 1_000_010_000,
        # An event of a company without multicurrency (or from before these fields).
        "exchange_rate": None,
        "home_total_amt": None,
        "home_balance": None,
        "status": "open",
        "partially_paid": True,  # 1000.01 of 1234.56 still owed
        "deleted": False,
        "version": 3,
        "last_updated_time": "2026-11-25T00:32:09-08:00",
        "projected_at": NOW,
    }


def test_a_foreign_currency_invoice_keeps_its_home_amounts_exactly() -> None:
    doc = read_invoice(example("valid-foreign-currency.json"), NOW)
    assert (doc["currency"], doc["exchange_rate"]) == ("EUR", "1.0842")
    assert (doc["home_total_amt"], doc["home_balance"]) == ("542.10", "216.84")
    shown = render_invoice(doc, TODAY).wire()
    assert shown["exchange_rate"] == Decimal("1.0842")
    assert shown["home_total_amt"] == Decimal("542.10")
    assert shown["home_balance"] == Decimal("216.84")
    assert (shown["total_amt"], shown["balance"]) == (Decimal("500.00"), Decimal("200.00"))
    assert jsoncodec.dumps({"r": shown["exchange_rate"]}) == '{"r":1.0842}'


def test_an_event_without_the_multicurrency_fields_is_projected_with_nulls() -> None:
    event = example("valid-foreign-currency.json")
    for name in ("exchange_rate", "home_total_amt", "home_balance"):
        del event["data"][name]  # as an event emitted before they existed
    shown = render_invoice(read_invoice(event, NOW), TODAY).wire()
    assert (shown["exchange_rate"], shown["home_total_amt"], shown["home_balance"]) == (
        None,
        None,
        None,
    )


def test_a_read_model_document_from_before_the_fields_is_still_rendered() -> None:
    doc = read_invoice(example("valid-open.json"), NOW)
    for name in ("exchange_rate", "home_total_amt", "home_balance", "partially_paid"):
        del doc[name]
    shown = render_invoice(doc, TODAY).wire()
    assert shown["home_balance"] is None
    assert shown["partially_paid"] is True  # computed from the amounts it does have


@pytest.mark.parametrize(
    ("status", "total", "balance", "partially_paid"),
    [
        ("open", "100.00", "40.00", True),
        ("open", "100.00", "100.00", False),  # nothing paid yet
        ("open", "100.00", "0.01", True),
        ("paid", "100.00", "0.00", False),
        ("voided", "0", "0", False),
        ("deleted", "100.00", "40.00", False),
        ("open", "100.00", "150.00", False),  # owes more than the total: not a payment
    ],
)
def test_partially_paid_is_open_with_a_payment_applied(
    status: str, total: str, balance: str, partially_paid: bool
) -> None:
    event = example("valid-open.json")
    event["data"].update(
        status=status,
        deleted=status == "deleted",
        total_amt=Decimal(total),
        balance=Decimal(balance),
    )
    doc = read_invoice(event, NOW)
    assert doc["partially_paid"] is partially_paid
    assert render_invoice(doc, TODAY).wire()["partially_paid"] is partially_paid


def test_partially_paid_and_overdue_are_independent() -> None:
    event = example("valid-open.json")  # due 2026-12-25, long before TODAY
    shown = render_invoice(read_invoice(event, NOW), TODAY).wire()
    assert shown["status"] == "open"
    assert shown["overdue"] is True and shown["partially_paid"] is True


def test_a_deleted_invoice_is_kept_as_deleted() -> None:
    doc = read_invoice(example("valid-deleted.json"), NOW)
    assert doc["status"] == "deleted"
    assert doc["deleted"] is True
    assert doc["txn_date"] is None


def test_the_deleted_flag_wins_over_the_status() -> None:
    event = example("valid-open.json")
    event["data"]["deleted"] = True
    assert read_invoice(event, NOW)["status"] == "deleted"


def test_more_than_six_decimals_are_stored_exactly_without_micros() -> None:
    event = example("valid-open.json")
    event["data"]["balance"] = Decimal("1.0000001")
    doc = read_invoice(event, NOW)
    assert doc["balance"] == "1.0000001"
    assert "balance_micros" not in doc  # micros would have to round it
    assert render_invoice(doc, TODAY).wire()["balance"] == Decimal("1.0000001")


def test_an_amount_beyond_int64_micros_is_stored_exactly() -> None:
    event = example("valid-open.json")
    event["data"]["total_amt"] = 10**13
    doc = read_invoice(event, NOW)
    assert (doc["total_amt"], "total_amt_micros" in doc) == ("10000000000000.00", False)


def test_an_amount_outside_the_supported_range_is_refused() -> None:
    event = example("valid-open.json")
    event["data"]["total_amt"] = 10**20
    with pytest.raises(UnprojectableEvent, match="total_amt: amount has more than 20 integer"):
        read_invoice(event, NOW)


def test_a_subject_that_names_another_invoice_is_refused() -> None:
    event = example("valid-open.json")
    event["subject"] = "realms/9130350000000001/invoices/999"
    with pytest.raises(UnprojectableEvent, match="subject"):
        read_invoice(event, NOW)


def test_rendered_amounts_are_exact_json_numbers() -> None:
    event = example("valid-open.json")
    event["data"]["total_amt"], event["data"]["balance"] = Decimal("0.1"), Decimal("0.300")
    doc = read_invoice(event, NOW)
    text = jsoncodec.dumps(render_invoice(doc, TODAY).wire())
    assert '"total_amt":0.10' in text
    assert '"balance":0.30' in text
    assert json.loads(text, parse_float=Decimal)["balance"] == Decimal("0.30")


def test_render_shows_overdue_and_no_internal_fields() -> None:
    doc = read_invoice(example("valid-open.json"), NOW)
    rendered = render_invoice(doc, date(2027, 1, 1)).wire()
    assert rendered["overdue"] is True
    assert rendered["status"] == "open"
    assert "projected_at" not in rendered
    assert "_id" not in rendered


@pytest.mark.parametrize(
    ("status", "due", "overdue"),
    [
        ("open", "2030-03-14", True),
        ("open", "2030-03-15", False),  # due today is not overdue yet
        ("open", None, False),
        ("paid", "2020-01-01", False),
        ("voided", "2020-01-01", False),
    ],
)
def test_overdue_means_open_with_a_due_date_before_today(
    status: str, due: str | None, overdue: bool
) -> None:
    assert is_overdue({"status": status, "due_date": due}, TODAY) is overdue


def row(status: str, total: int, balance: int, due: str | None = "2030-04-01", **kw: Any) -> Any:
    return {
        "status": status,
        "deleted": status == "deleted",
        "total_amt_micros": total,
        "balance_micros": balance,
        "due_date": due,
        "currency": "USD",
        **kw,
    }


def test_totals_are_exact_sums() -> None:
    totals = Totals.of([row("open", 100_000, 100_000), row("open", 200_000, 200_000)], TODAY)
    rendered = totals.render().wire()
    assert rendered["total_amt"] == Decimal("0.30")
    assert rendered["balance"] == Decimal("0.30")
    assert '"balance":0.30' in jsoncodec.dumps(rendered)


def test_totals_count_everything_but_sum_only_invoices_that_ask_for_money() -> None:
    rows = [
        row("open", 10_000_000, 4_000_000, due="2030-03-01"),  # overdue
        row("open", 5_000_000, 5_000_000, due="2030-04-01"),
        row("paid", 7_000_000, 0),
        row("voided", 0, 0),
        row("deleted", 9_000_000, 9_000_000),
    ]
    assert Totals.of(rows, TODAY).render().wire() == {
        "count": 5,
        "total_amt": Decimal("22.00"),
        "balance": Decimal("9.00"),
        "overdue_balance": Decimal("4.00"),
        "currency": "USD",
    }


def test_totals_currency_is_null_when_invoices_disagree() -> None:
    rows = [row("open", 1, 1), row("open", 1, 1, currency="EUR")]
    assert Totals.of(rows, TODAY).currency is None
    assert Totals.of([], TODAY).render().wire()["balance"] == Decimal("0.00")


def test_timestamps_are_rendered_in_utc_with_z() -> None:
    assert iso_timestamp(datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2030-01-02T03:04:05Z"
    assert iso_timestamp(datetime(2030, 1, 2, 3, 4, 5)) == "2030-01-02T03:04:05Z"
    assert iso_timestamp("2030-01-02T03:04:05-08:00") == "2030-01-02T03:04:05-08:00"
    assert iso_timestamp(None) is None
    assert iso_timestamp(12) is None


def test_examples_are_not_modified_by_reading() -> None:
    event = example("valid-open.json")
    before = copy.deepcopy(event)
    read_invoice(event, NOW)
    assert event == before
