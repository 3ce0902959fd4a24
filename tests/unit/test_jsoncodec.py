from __future__ import annotations

from decimal import Decimal

import pytest

from services.common import jsoncodec


@pytest.mark.parametrize(
    "text",
    ["1234.56", "0.1", "-0.01", "12345678901234567.89", "100", "0.10", "999999999999.9999"],
)
def test_amounts_round_trip_digit_for_digit(text: str) -> None:
    encoded = jsoncodec.dumps({"TotalAmt": Decimal(text)})
    assert encoded == '{"TotalAmt":' + text + "}"
    assert jsoncodec.loads(encoded)["TotalAmt"] == Decimal(text)


def test_fractions_parse_as_decimal_never_float() -> None:
    parsed = jsoncodec.loads(b'{"a": 0.1, "b": [0.2], "c": 3}')
    assert parsed["a"] + parsed["b"][0] == Decimal("0.3")
    assert isinstance(parsed["c"], int)


def test_exponent_form_is_written_as_plain_digits() -> None:
    assert jsoncodec.dumps(Decimal("1E+2")) == "100"


def test_non_finite_amount_is_refused() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        jsoncodec.dumps({"x": Decimal("NaN")})


def test_strings_that_mention_the_marker_stay_strings() -> None:
    assert jsoncodec.loads(jsoncodec.dumps({"note": "dec:1.5"})) == {"note": "dec:1.5"}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"[" * 65 + b"]" * 65, "nested deeper than 64"),
        (b"[" * 200_000 + b"]" * 200_000, "nested deeper than 64"),  # past the C parser's limit
        (b'{"a":' * 100 + b"1" + b"}" * 100, "nested deeper than 64"),
        (b"1E+999999999", "out of range"),
        (b"9" * 5_000, "digits"),
        (b"NaN", "non-finite"),
        (b"\x22\xff\x22", "decode"),
        (b'{"note": "\\ud800"}', "unpaired surrogate"),
        (b'{"\\udfff": 1}', "unpaired surrogate"),
    ],
)
def test_json_nothing_can_safely_use_is_refused_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(jsoncodec.JsonRejected, match=reason):
        jsoncodec.loads(raw)


def test_paired_surrogates_and_escaped_backslashes_are_ordinary_text() -> None:
    assert jsoncodec.loads(b'"\\ud83d\\ude00"') == "\U0001f600"
    assert jsoncodec.loads(b'"\\\\ud800"') == "\\ud800"
    assert jsoncodec.loads(b"[" * 64 + b"]" * 64) is not None
