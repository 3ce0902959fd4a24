"""The query builder: escaping, identifier validation and paging clauses."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from services.sync.quickbooks.query import Select


def test_plain_select() -> None:
    assert Select("Invoice").render() == "SELECT * FROM Invoice"


def test_apostrophe_is_backslash_escaped() -> None:
    rendered = Select("Customer").where("DisplayName", "=", "O'Brien").render()
    assert rendered == "SELECT * FROM Customer WHERE DisplayName = 'O\\'Brien'"


def test_backslashes_are_escaped_before_quotes() -> None:
    rendered = Select("Customer").where("DisplayName", "=", "a\\b\\'c").render()
    # a\b\'c  ->  'a\\b\\\'c'
    assert rendered == "SELECT * FROM Customer WHERE DisplayName = 'a\\\\b\\\\\\'c'"


def test_injection_attempt_stays_inside_the_literal() -> None:
    rendered = Select("Customer").where("DisplayName", "=", "x' OR Id > '0").render()
    assert rendered == "SELECT * FROM Customer WHERE DisplayName = 'x\\' OR Id > \\'0'"


def test_in_with_sequence() -> None:
    rendered = Select("Invoice").where("Id", "IN", ["1", "2", "O'3"]).render()
    assert rendered == "SELECT * FROM Invoice WHERE Id IN ('1', '2', 'O\\'3')"


def test_in_requires_non_empty_sequence() -> None:
    with pytest.raises(TypeError):
        Select("Invoice").where("Id", "IN", "123")
    with pytest.raises(ValueError, match="at least one"):
        Select("Invoice").where("Id", "IN", [])


def test_scalar_ops_reject_sequences() -> None:
    with pytest.raises(TypeError):
        Select("Invoice").where("Id", "=", ["1", "2"])


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        (5, "5"),
        (Decimal("100.50"), "100.50"),
        (Decimal("1E+2"), "100"),
        (2.5, "2.5"),
        (True, "true"),
        (False, "false"),
        (date(2024, 5, 1), "'2024-05-01'"),
        (datetime(2024, 5, 1, 8, 30, 0, 999, tzinfo=UTC), "'2024-05-01T08:30:00+00:00'"),
    ],
)
def test_literals(value: Any, literal: str) -> None:
    prefix = "SELECT * FROM Invoice WHERE X = "
    rendered = Select("Invoice").where("X", "=", value).render()
    assert rendered.startswith(prefix)
    assert rendered.removeprefix(prefix) == literal


@pytest.mark.parametrize(
    "value", [datetime(2024, 5, 1), Decimal("NaN"), float("inf"), None, b"bytes", object()]
)
def test_unsupported_literals_rejected(value: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        Select("Invoice").where("X", "=", value)


def test_all_comparison_ops_and_and_chaining() -> None:
    q = (
        Select("Invoice")
        .where("TotalAmt", ">", 1)
        .where("TotalAmt", "<", 9)
        .where("Balance", ">=", 0)
        .where("Balance", "<=", 5)
        .where("DocNumber", "LIKE", "10%")
    )
    assert q.render() == (
        "SELECT * FROM Invoice WHERE TotalAmt > 1 AND TotalAmt < 9 AND Balance >= 0"
        " AND Balance <= 5 AND DocNumber LIKE '10%'"
    )


@pytest.mark.parametrize(
    "field",
    ["1Id", "Id; DELETE", "Display Name", "Name'--", "", "Meta_Data", "Id)", "Ünïcode", "a-b"],
)
def test_bad_field_names_rejected(field: str) -> None:
    with pytest.raises(ValueError, match="field name"):
        Select("Invoice").where(field, "=", "x")
    with pytest.raises(ValueError, match="field name"):
        Select("Invoice").order_by(field)


@pytest.mark.parametrize("entity", ["Invoice; x", "1Invoice", "", "Meta.Data"])
def test_bad_entity_rejected(entity: str) -> None:
    with pytest.raises(ValueError, match="entity"):
        Select(entity)


def test_operator_case_is_normalised() -> None:
    q = Select("Invoice").where("DocNumber", "like", "1%")  # type: ignore[arg-type]
    assert q.render() == "SELECT * FROM Invoice WHERE DocNumber LIKE '1%'"


def test_unsupported_operator_rejected() -> None:
    with pytest.raises(ValueError, match="operator"):
        Select("Invoice").where("Id", "!=", "1")  # type: ignore[arg-type]


def test_dotted_field_and_order_by() -> None:
    q = (
        Select("Invoice")
        .where("MetaData.LastUpdatedTime", ">", datetime(2024, 1, 1, tzinfo=UTC))
        .order_by("MetaData.LastUpdatedTime", descending=True)
        .order_by("Id")
    )
    assert q.render(start_position=1, max_results=1000) == (
        "SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime > '2024-01-01T00:00:00+00:00'"
        " ORDERBY MetaData.LastUpdatedTime DESC, Id STARTPOSITION 1 MAXRESULTS 1000"
    )


def test_builder_is_immutable() -> None:
    base = Select("Invoice")
    filtered = base.where("Id", "=", "1")
    ordered = filtered.order_by("Id")
    assert base.render() == "SELECT * FROM Invoice"
    assert filtered.render() == "SELECT * FROM Invoice WHERE Id = '1'"
    assert not filtered.is_ordered
    assert ordered.is_ordered
    with pytest.raises(AttributeError):
        base.entity = "Customer"  # type: ignore[misc]


@pytest.mark.parametrize("max_results", [0, 1001, 5000])
def test_max_results_out_of_range_rejected(max_results: int) -> None:
    with pytest.raises(ValueError, match="MAXRESULTS"):
        Select("Invoice").render(max_results=max_results)


def test_start_position_is_one_based() -> None:
    with pytest.raises(ValueError, match="STARTPOSITION"):
        Select("Invoice").render(start_position=0)


def test_count_ignores_ordering() -> None:
    q = Select("Invoice").where("Balance", ">", 0).order_by("Id")
    assert q.count() == "SELECT COUNT(*) FROM Invoice WHERE Balance > 0"
