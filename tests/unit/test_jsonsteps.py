"""JSON decoded a slice at a time (services/common/jsonsteps.py) is the JSON `json` decodes, and
fails where it fails; a page of invoices gives the event loop a pass every few invoices."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, NoReturn

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.jsonsteps import decode_in_steps, decode_text

from .fuzz import FUZZ, json_values


def _reject(name: str) -> NoReturn:
    raise ValueError(name)


DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=_reject)


def stepwise(text: str, every: int = 3) -> tuple[Any, int]:
    """The document, and how often the decoder paused."""
    steps = decode_in_steps(text, DECODER, every)
    pauses = 0
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value, pauses
        pauses += 1


def outcome(decode: Any, text: str) -> tuple[str, str]:
    try:
        return "value", repr(decode(text))
    except RecursionError:
        return "error", "RecursionError"
    except ValueError as exc:
        return "error", type(exc).__name__


def _encoded(value: Any) -> str:
    return json.dumps(value, default=str)  # decimals as strings: only the shape matters here


@FUZZ
@given(json_values, st.sampled_from([None, 0, 2]), st.integers(min_value=1, max_value=5))
def test_any_document_decodes_to_what_json_gives(
    value: Any, indent: int | None, every: int
) -> None:
    text = json.dumps(value, default=str, indent=indent)
    assert stepwise(text, every)[0] == DECODER.decode(text)
    assert repr(stepwise(text, every)[0]) == repr(DECODER.decode(text))


@FUZZ
@given(json_values, st.data())
def test_mutilated_documents_fail_or_decode_exactly_as_json_does(value: Any, data: Any) -> None:
    text = _encoded({"QueryResponse": {"Invoice": [value, value]}, "time": "t"})
    at = data.draw(st.integers(min_value=0, max_value=len(text)))
    cut = data.draw(st.integers(min_value=0, max_value=3))
    noise = data.draw(st.sampled_from(["", ",", "}", "]", "{", "[", '"', ":", " ", "x", "1e5"]))
    mutilated = text[:at] + noise + text[at + cut :]
    assert outcome(lambda t: stepwise(t)[0], mutilated) == outcome(DECODER.decode, mutilated)


@pytest.mark.parametrize(
    "text",
    [
        '{"a":NaN}',
        '{"a":1,}',
        "[1,]",
        '{"a" 1}',
        "{1:2}",
        '{"a":1} x',
        "",
        " ",
        '"\\ud800"',
        "[" * 50000,
    ],
)
def test_odd_text_fails_or_decodes_as_json_does(text: str) -> None:
    assert outcome(lambda t: stepwise(t)[0], text) == outcome(DECODER.decode, text)


def test_a_page_of_invoices_pauses_every_few_invoices() -> None:
    invoice = {"Id": "1", "TotalAmt": 12.5, "Line": [{"Amount": 12.5, "DetailType": "x"}]}
    page = {"QueryResponse": {"Invoice": [invoice] * 1000, "startPosition": 1}, "time": "t"}
    value, pauses = stepwise(json.dumps(page), every=50)
    assert value == DECODER.decode(json.dumps(page))
    assert value["QueryResponse"]["Invoice"][999]["TotalAmt"] == Decimal("12.5")
    assert 1000 // 50 <= pauses <= 1000 // 50 + 1


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-32-le"])
def test_bytes_are_read_as_json_reads_them(encoding: str) -> None:
    body = '{"DisplayName": "Café ☕"}'.encode(encoding)
    assert DECODER.decode(decode_text(body)) == json.loads(body)
