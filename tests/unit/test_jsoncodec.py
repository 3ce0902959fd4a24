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
