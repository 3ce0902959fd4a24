from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from services.api.listing import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Cursor,
    InvalidParameter,
    Sort,
    combine,
    customer_filter,
    parse_invoice_query,
    status_filter,
)
from services.common.money import sort_key

TODAY = date(2030, 3, 15)


def test_defaults() -> None:
    query = parse_invoice_query({})
    assert query.status == "all"
    assert query.sort == Sort("due_date", descending=False)
    assert query.limit == DEFAULT_LIMIT
    assert query.offset == 0
    assert query.cursor is None


@pytest.mark.parametrize("limit", ["1", "200"])
def test_limit_within_bounds(limit: str) -> None:
    assert parse_invoice_query({"limit": limit}).limit == int(limit)


@pytest.mark.parametrize("limit", ["0", "201", "-1", "ten", "1.5", "", " 5", "\u0665"])
def test_limit_out_of_bounds_or_not_a_number_is_refused(limit: str) -> None:
    with pytest.raises(InvalidParameter) as raised:
        parse_invoice_query({"limit": limit})
    assert raised.value.param == "limit"


def test_max_limit_is_200() -> None:
    assert MAX_LIMIT == 200


@pytest.mark.parametrize(
    ("text", "field", "descending"),
    [
        ("due_date", "due_date", False),
        ("-due_date", "due_date", True),
        ("total", "total_amt_key", False),
        ("balance", "balance_key", False),
        ("doc_number", "doc_number", False),
        ("-balance", "balance_key", True),
    ],
)
def test_sort_keys_map_to_read_model_fields(text: str, field: str, descending: bool) -> None:
    sort = parse_invoice_query({"sort": text}).sort
    assert sort.field == field
    assert sort.descending is descending
    assert sort.token == text
    assert sort.mongo() == [(field, -1 if descending else 1), ("_id", 1)]


@pytest.mark.parametrize("params", [{"sort": "amount"}, {"sort": "--total"}, {"status": "late"}])
def test_unknown_sort_or_status_is_refused(params: dict[str, str]) -> None:
    with pytest.raises(InvalidParameter):
        parse_invoice_query(params)


def test_status_filters() -> None:
    assert status_filter("all", TODAY) == {}
    assert status_filter("open", TODAY) == {"status": "open"}
    assert status_filter("paid", TODAY) == {"status": "paid"}
    assert status_filter("voided", TODAY) == {"status": "voided"}
    assert status_filter("deleted", TODAY) == {"status": "deleted"}
    assert status_filter("overdue", TODAY) == {"status": "open", "due_date": {"$lt": "2030-03-15"}}
    # Equalities only, overdue or not: a subset of open, as overdue is.
    assert status_filter("partially_paid", TODAY) == {"status": "open", "partially_paid": True}
    assert parse_invoice_query({"status": "partially_paid"}).status == "partially_paid"


def test_offset_is_parsed_and_bounded() -> None:
    assert parse_invoice_query({"offset": "40"}).offset == 40
    with pytest.raises(InvalidParameter, match="at most"):
        parse_invoice_query({"offset": "100001"})


def test_cursor_round_trips_and_is_bound_to_its_sort() -> None:
    cursor = Cursor("-total", sort_key(Decimal("1234.56")), "9130350000000001:130")
    query = parse_invoice_query({"sort": "-total", "cursor": cursor.encode()})
    assert query.cursor == cursor
    with pytest.raises(InvalidParameter, match="sort=-total"):
        parse_invoice_query({"sort": "total", "cursor": cursor.encode()})


def test_cursor_with_a_null_value_round_trips() -> None:
    cursor = Cursor("due_date", None, "r:1")
    assert Cursor.decode(cursor.encode()) == cursor


def test_cursor_and_offset_together_are_refused() -> None:
    cursor = Cursor("due_date", "2030-01-01", "r:1").encode()
    with pytest.raises(InvalidParameter, match="not both"):
        parse_invoice_query({"cursor": cursor, "offset": "10"})


@pytest.mark.parametrize(
    "text",
    [
        "not base64 !",
        "e30",  # {}
        Cursor("due_date", "x", "r:1").encode()[:-3],
        # a money sort with a value that is not an amount's sort key
        "WyJ0b3RhbCIsIngiLCJyOjEiXQ",
        Cursor("total", 5, "r:1").encode(),  # type: ignore[arg-type]
        "x" * 2000,
    ],
)
def test_malformed_cursors_are_refused(text: str) -> None:
    with pytest.raises(InvalidParameter) as raised:
        parse_invoice_query({"cursor": text})
    assert raised.value.param == "cursor"


def test_keyset_after_a_value_ascending() -> None:
    key = sort_key(Decimal("5"))
    assert Sort("total").after(key, "r:2") == {
        "$or": [
            {"total_amt_key": {"$gt": key}},
            {"total_amt_key": key, "_id": {"$gt": "r:2"}},
        ]
    }


def test_keyset_after_a_value_descending_keeps_the_nulls_that_sort_last() -> None:
    assert Sort("due_date", descending=True).after("2030-01-01", "r:2") == {
        "$or": [
            {"due_date": {"$lt": "2030-01-01"}},
            {"due_date": None},
            {"due_date": "2030-01-01", "_id": {"$gt": "r:2"}},
        ]
    }


def test_keyset_after_a_null() -> None:
    # Ascending: the remaining nulls, then every non-null value.
    assert Sort("due_date").after(None, "r:2") == {
        "$or": [{"due_date": None, "_id": {"$gt": "r:2"}}, {"due_date": {"$ne": None}}]
    }
    # Descending: nulls are last, so only the remaining nulls.
    assert Sort("due_date", descending=True).after(None, "r:2") == {
        "due_date": None,
        "_id": {"$gt": "r:2"},
    }


def test_customer_filter_follows_the_mapping() -> None:
    mapped = {"_id": "cust-42", "realm_id": "1", "qbo_customer_id": "58"}
    assert customer_filter(mapped) == {"realm_id": "1", "qbo_customer_id": "58"}
    pending = {"_id": "cust-43", "realm_id": "1", "qbo_customer_id": None}
    assert customer_filter(pending) == {"local_customer_id": "cust-43"}


def test_combine_drops_empty_filters() -> None:
    assert combine({}, {}) == {}
    assert combine({"a": 1}, {}) == {"a": 1}
    assert combine({"a": 1}, {"b": 2}) == {"a": 1, "b": 2}


def test_combine_keeps_equalities_top_level_and_clashing_fields_in_and() -> None:
    customer = {"realm_id": "1", "qbo_customer_id": "58"}
    overdue = {"status": "open", "due_date": {"$lt": "2030-03-15"}}
    keyset = {"due_date": None, "_id": {"$gt": "1:9"}}
    assert combine(customer, overdue, keyset) == {
        "realm_id": "1",
        "qbo_customer_id": "58",
        "status": "open",
        "due_date": {"$lt": "2030-03-15"},
        "_id": {"$gt": "1:9"},
        "$and": [{"due_date": None}],
    }
    ors = {"$or": [{"a": 1}, {"b": 2}]}
    assert combine(customer, ors, {"$or": [{"c": 3}]}) == {
        **customer,
        "$or": [{"a": 1}, {"b": 2}],
        "$and": [{"$or": [{"c": 3}]}],
    }
