"""Property-based fuzzing of money (services/common/money.py) and of QBO invoice payloads
(services/sync/quickbooks/mapping.py): exact for every amount accepted, refused with a reason
otherwise, and every invoice the mapping accepts can be stored and announced (its event is on
contract), so no invoice can fail its page after the mapping let it through."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from services.common import jsoncodec, money
from services.common.schemas import INVOICE_UPDATED, default_schemas
from services.sync.events import invoice_updated
from services.sync.quickbooks.mapping import InvoiceRecord, UnmappableInvoice, invoice_record
from services.sync.store import InvoiceStore
from tests.unit.fuzz import FUZZ, amounts, json_values

NOW = datetime(2030, 3, 15, tzinfo=UTC)


def _accepted(value: Any) -> Decimal | None:
    try:
        return money.amount(value)
    except money.InexactAmount as exc:
        assert str(exc)
        return None


@FUZZ
@given(st.one_of(amounts, json_values, st.text(max_size=120)))
def test_an_amount_is_accepted_exactly_or_refused(value: Any) -> None:
    accepted = _accepted(value)
    if accepted is None:
        return
    assert accepted == Decimal(value)
    text = money.to_text(accepted)
    assert money.from_text(text) == accepted
    assert Decimal(text) == accepted
    # The JSON the events and the api write carries the same digits back.
    assert jsoncodec.loads(jsoncodec.dumps({"a": money.shown(accepted)}))["a"] == accepted


@FUZZ
@given(amounts, amounts)
def test_sort_keys_order_amounts_as_numbers(left: Any, right: Any) -> None:
    a, b = _accepted(left), _accepted(right)
    assume(a is not None and b is not None)
    assert a is not None and b is not None
    ka, kb = money.sort_key(a), money.sort_key(b)
    assert money.SORT_KEY.fullmatch(ka) and money.SORT_KEY.fullmatch(kb)
    assert (ka < kb) == (a < b)
    assert (ka == kb) == (a == b)


@FUZZ
@given(st.lists(amounts, max_size=30))
def test_sums_are_exact(values: list[Any]) -> None:
    accepted = [a for v in values if (a := _accepted(v)) is not None]
    total = Decimal(0)
    for value in accepted:
        total = money.add(total, value)
    # Fractions summed exactly: scale everything by the finest exponent and add integers.
    places = max([-int(a.as_tuple().exponent) for a in accepted] + [0])
    assert total.scaleb(places, money.EXACT) == sum(
        int(a.scaleb(places, money.EXACT)) for a in accepted
    )


@FUZZ
@given(amounts)
def test_stored_fields_read_back_the_same_amount(value: Any) -> None:
    accepted = _accepted(value)
    assume(accepted is not None)
    assert accepted is not None
    fields = money.stored_fields("total_amt", accepted, sortable=True)
    assert money.stored_amount(fields, "total_amt") == accepted
    if "total_amt_micros" in fields:  # what an older reader sees is the same amount
        assert money.from_micros(fields["total_amt_micros"]) == accepted
    legacy = {"total_amt_micros": fields.get("total_amt_micros", 0)}
    assert money.stored_amount(legacy, "total_amt") == money.from_micros(legacy["total_amt_micros"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1234.5", "1234.50"),
        ("10.1234567", "10.1234567"),
        ("5.125", "5.125"),  # a three-decimal currency (KWD, BHD, JOD, OMR, TND)
        ("0.000000001", "0.000000001"),
        ("-0", "0.00"),
        ("99999999999999999999.99999999999999999999", "99999999999999999999.99999999999999999999"),
    ],
)
def test_amount_text_is_canonical(text: str, expected: str) -> None:
    assert money.to_text(Decimal(text)) == expected


@pytest.mark.parametrize("text", ["1E+20", "0.000000000000000000001", "NaN", "Infinity", "x"])
def test_amounts_outside_the_range_are_refused_never_rounded(text: str) -> None:
    with pytest.raises(money.InexactAmount):
        money.amount(text)


# ------------------------------------------------------------------------------ invoices

ids = st.one_of(
    st.from_regex(r"[0-9]{1,5}", fullmatch=True), json_values, st.just("\uff11\uff12")
)  # full-width digits: isdigit() says yes
timestamps = st.one_of(
    st.just("2030-01-01T10:00:00-08:00"),
    st.just("0001-01-01T00:00:00+05:00"),
    st.just("2030-01-01T10:00:00+05:00:30"),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    json_values,
)
invoices = st.fixed_dictionaries(
    {"Id": ids, "MetaData": st.fixed_dictionaries({"LastUpdatedTime": timestamps})},
    optional={
        "SyncToken": st.one_of(st.from_regex(r"[0-9]{1,14}", fullmatch=True), json_values),
        "TotalAmt": st.one_of(amounts, json_values),
        "Balance": st.one_of(amounts, json_values),
        # Multicurrency companies only (Intuit's Invoice reference).
        "ExchangeRate": st.one_of(amounts, json_values),
        "HomeTotalAmt": st.one_of(amounts, json_values),
        "HomeBalance": st.one_of(amounts, json_values),
        "CustomerRef": st.one_of(st.fixed_dictionaries({"value": ids}), json_values),
        "CurrencyRef": st.one_of(
            st.fixed_dictionaries({"value": st.sampled_from(["USD", "KWD", "usd", "€", ""])}),
            json_values,
        ),
        "DocNumber": st.one_of(st.text(max_size=80), json_values),
        "TxnDate": st.one_of(st.dates().map(str), json_values),
        "DueDate": st.one_of(st.dates().map(str), json_values),
        "PrivateNote": st.one_of(st.just("Voided"), json_values),
        "status": st.one_of(st.just("Deleted"), json_values),
        "Line": json_values,
    },
)


def _event_of(record: InvoiceRecord) -> dict[str, Any]:
    # The document InvoiceStore writes for a first version; _fields touches no database.
    fields = InvoiceStore._fields(None, record, "cust-1", 1, NOW)  # type: ignore[arg-type]
    return invoice_updated({"_id": record.key, **fields})


@FUZZ
@given(invoices)
def test_an_invoice_is_mapped_onto_the_contract_or_refused_with_a_reason(
    invoice: dict[str, Any],
) -> None:
    raw = jsoncodec.loads(jsoncodec.dumpb(invoice))  # as the QBO client hands it over
    try:
        record = invoice_record("9130350000000001", raw)
    except UnmappableInvoice as exc:
        assert str(exc)
        return
    event = _event_of(record)
    default_schemas().validate(INVOICE_UPDATED, event)
    raw_json = record.raw_json.encode("utf-8")  # storable as BSON text
    assert jsoncodec.loads(raw_json) == raw
    if not record.deleted:
        assert event["data"]["total_amt"] == money.amount(raw.get("TotalAmt") or 0)
        for field, name in _MULTICURRENCY.items():
            # Exactly what QBO sent, or absent from the event when QBO sent nothing.
            if raw.get(field) is None:
                assert name not in event["data"]
            else:
                assert event["data"][name] == money.amount(raw[field])
        # The event's bytes carry the same digits back to any consumer.
        again = jsoncodec.loads(jsoncodec.dumpb(event))
        assert again["data"] == event["data"]


_MULTICURRENCY = {
    "ExchangeRate": "exchange_rate",
    "HomeTotalAmt": "home_total_amt",
    "HomeBalance": "home_balance",
}


@FUZZ
@given(json_values)
def test_anything_else_qbo_might_put_in_a_page_is_refused_not_raised(value: Any) -> None:
    try:
        record = invoice_record("1", value if isinstance(value, dict) else {"Id": value})
    except UnmappableInvoice as refused:
        assert str(refused)  # refused with a reason
        return
    assert record.invoice_id == value["Id"]
