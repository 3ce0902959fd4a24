"""Exact Decimal money on the wire."""

from __future__ import annotations

import asyncio
import json
import re
from decimal import Decimal

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qbo_emulator import jsonenc
from qbo_emulator.testing import RunningEmulator

from .helpers import REALM, admin_post, run_query


def test_decimal_is_written_as_exact_number() -> None:
    text = jsonenc.dumps({"a": Decimal("1234.56"), "b": Decimal("0.1"), "c": [Decimal("10")]})
    assert text == '{"a":1234.56,"b":0.1,"c":[10]}'


def test_float_sum_would_drift_but_decimal_sum_does_not() -> None:
    total = sum((Decimal("0.1") for _ in range(3)), Decimal("0"))
    assert jsonenc.dumps(total) == "0.3"
    assert json.loads(jsonenc.dumps(total), parse_float=Decimal) == Decimal("0.3")


def test_no_exponent_notation_and_negative_zero_normalised() -> None:
    assert jsonenc.dumps(Decimal("1E+2")) == "100"
    assert jsonenc.dumps(Decimal("-0")) == "0"
    assert jsonenc.dumps(Decimal("0.000001")) == "0.000001"


def test_strings_escaped_and_types_handled() -> None:
    value = {"s": 'quote " and \\ and \n', "t": True, "f": False, "n": None, "i": 3}
    assert json.loads(jsonenc.dumps(value)) == value


def test_non_finite_rejected() -> None:
    with pytest.raises(ValueError):
        jsonenc.dumps(Decimal("NaN"))
    with pytest.raises(TypeError):
        jsonenc.dumps({"x": object()})


async def test_money_round_trips_exactly_over_http(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    status, created = await admin_post(
        session, emu, f"/realms/{REALM}/customers", {"DisplayName": "Money Co"}
    )
    assert status == 201
    customer_id = created["Customer"]["Id"]
    # Sent as a string so not even the test's own encoder can round it.
    status, _ = await admin_post(
        session,
        emu,
        f"/realms/{REALM}/invoices",
        {"CustomerRef": {"value": customer_id}, "TotalAmt": "1234.56"},
    )
    assert status == 201
    status, body = await run_query(session, emu, token, "select * from Invoice")
    assert status == 200
    invoice = body["QueryResponse"]["Invoice"][0]
    assert invoice["TotalAmt"] == Decimal("1234.56")
    assert invoice["Balance"] == Decimal("1234.56")
    assert invoice["Line"][0]["Amount"] == Decimal("1234.56")
    # And the raw text contains the literal digits, not a float approximation.
    async with session.get(
        emu.url(f"/v3/company/{REALM}/invoice/{invoice['Id']}"),
        params={"minorversion": "75"},
        headers={"Authorization": f"Bearer {token}"},
    ) as response:
        raw = await response.text()
    assert '"TotalAmt":1234.56,' in raw


_money = st.decimals(allow_nan=False, allow_infinity=False, places=None)
_values = st.recursive(
    st.none() | st.booleans() | st.integers() | _money | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(database=None, deadline=None, max_examples=300)
@given(_values)
def test_any_value_round_trips_with_every_decimal_written_exactly(value: object) -> None:
    text = jsonenc.dumps(value)
    assert json.loads(text, parse_float=Decimal, parse_int=Decimal) == value
    assert "e" not in "".join(re.findall(r"(?<![\w\"])-?\d[\d.eE+-]*", _without_strings(text)))


@given(st.text())
def test_strings_that_look_like_the_encoders_own_marks_stay_strings(text: str) -> None:
    for s in (text, "\x00" + text, "\x00" + text + ":1.5", '"\\u0000' + text):
        assert json.loads(jsonenc.dumps({"s": s})) == {"s": s}


def _without_strings(text: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)


@settings(database=None, deadline=None, max_examples=300)
@given(_values, st.integers(min_value=1, max_value=3), st.integers(min_value=0, max_value=5))
def test_an_answer_encoded_in_slices_is_the_answer_encoded_at_once(
    value: object, slice_size: int, levels: int
) -> None:
    sliced = asyncio.run(jsonenc.dumps_in_slices(value, slice_size, levels))
    assert sliced == jsonenc.dumps(value)
