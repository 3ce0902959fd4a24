"""Unit tests of the QBO query parser."""

from __future__ import annotations

from decimal import Decimal

import pytest

from qbo_emulator.query import (
    DEFAULT_MAX_RESULTS,
    Condition,
    OrderBy,
    QueryParseError,
    QueryValidationError,
    like_to_regex,
    parse_query,
)


def test_select_star_defaults() -> None:
    q = parse_query("select * from Invoice")
    assert q.entity == "Invoice"
    assert not q.count
    assert q.fields is None
    assert q.where == ()
    assert q.start_position == 1
    assert q.max_results == DEFAULT_MAX_RESULTS == 100


def test_keywords_and_entity_are_case_insensitive() -> None:
    q = parse_query("SeLeCt * FROM invoice WHERE Id = '5' ORDERBY DocNumber DESC MAXRESULTS 3")
    assert q.entity == "Invoice"
    assert q.where == (Condition("Id", "=", ("5",)),)
    assert q.order_by == (OrderBy("DocNumber", descending=True),)
    assert q.max_results == 3


def test_backslash_escaped_quote() -> None:
    q = parse_query(r"select * from Customer where DisplayName = 'O\'Brien'")
    assert q.where[0].value == "O'Brien"


def test_escaped_backslash_and_quote_together() -> None:
    q = parse_query(r"select * from Customer where DisplayName = 'a\\b\'c'")
    assert q.where[0].value == "a\\b'c"


def test_like_in_and_multiple_conditions() -> None:
    q = parse_query(
        "select * from Invoice where DocNumber LIKE '10%' and CustomerRef IN ('1', '2','3') "
        "and TotalAmt >= '10.50' and MetaData.LastUpdatedTime > '2026-11-01T00:00:00-08:00'"
    )
    assert q.where == (
        Condition("DocNumber", "LIKE", ("10%",)),
        Condition("CustomerRef", "IN", ("1", "2", "3")),
        Condition("TotalAmt", ">=", ("10.50",)),
        Condition("MetaData.LastUpdatedTime", ">", ("2026-11-01T00:00:00-08:00",)),
    )


def test_unquoted_numbers_and_booleans() -> None:
    q = parse_query("select * from Customer where Active = false and Balance > 10.25 and Id < 7")
    assert q.where[0].values == (False,)
    assert q.where[1].values == (Decimal("10.25"),)
    assert q.where[2].values == (7,)


def test_count() -> None:
    q = parse_query("select count(*) from Customer where Active = true")
    assert q.count
    assert q.entity == "Customer"


def test_field_list() -> None:
    q = parse_query("select Id, DocNumber from Invoice")
    assert q.fields == ("Id", "DocNumber")


def test_paging_in_either_order() -> None:
    a = parse_query("select * from Invoice startposition 11 maxresults 10")
    b = parse_query("select * from Invoice MAXRESULTS 10 STARTPOSITION 11")
    assert (a.start_position, a.max_results) == (b.start_position, b.max_results) == (11, 10)


def test_maxresults_bounds() -> None:
    assert parse_query("select * from Invoice maxresults 1000").max_results == 1000
    with pytest.raises(QueryValidationError, match="MAXRESULTS"):
        parse_query("select * from Invoice maxresults 1001")
    with pytest.raises(QueryValidationError):
        parse_query("select * from Invoice maxresults 0")
    with pytest.raises(QueryValidationError, match="STARTPOSITION"):
        parse_query("select * from Invoice startposition 0")


def test_multi_column_orderby() -> None:
    q = parse_query("select * from Invoice orderby CustomerRef, TotalAmt desc")
    assert q.order_by == (OrderBy("CustomerRef"), OrderBy("TotalAmt", descending=True))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "select from Invoice",
        "select * Invoice",
        "select * from Invoice where",
        "select * from Invoice where Id = '1' or Id = '2'",
        "select * from Invoice where Id == '1'",
        "select * from Invoice where Id != '1'",
        "select * from Invoice where DisplayName = 'unterminated",
        "select * from Invoice where Id IN ('1', )",
        "select * from Invoice where DocNumber LIKE 5",
        "select * from Invoice maxresults ten",
        "select * from Invoice garbage",
        "select * from Invoice where Id = '1' ; drop table",
    ],
)
def test_syntax_errors(text: str) -> None:
    with pytest.raises(QueryParseError):
        parse_query(text)


def test_parse_error_names_the_position() -> None:
    with pytest.raises(QueryParseError) as info:
        parse_query("select * from Invoice where Id = '1' or Id = '2'")
    assert "column 38" in info.value.detail
    assert '" or "' in info.value.detail


def test_unknown_entity_is_validation_error() -> None:
    with pytest.raises(QueryValidationError, match="Widget"):
        parse_query("select * from Widget")


def test_like_pattern() -> None:
    regex = like_to_regex("%o'b%n")
    assert regex.match("Mr O'Brien")
    assert regex.match("o'bn")
    assert not regex.match("O Brien")
    assert like_to_regex("a.c%").match("a.cd")
    assert not like_to_regex("a.c%").match("abcd")
