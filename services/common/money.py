"""Money: `Decimal` in Python, exact decimal text in MongoDB, exact JSON numbers on the wire.

FerretDB v1 has no Decimal128 (it drops the connection when sent one) and a binary float cannot
hold 0.10 exactly. Integer micros were exact only up to six decimal places, and Intuit does
send more: unit prices, exchange-rate conversions and three-decimal currencies (KWD, BHD, JOD,
OMR, TND) leave totals such as 10.1234567 in real books. So an amount is stored as its decimal
text ("1234.50", "10.1234567"), which any MongoDB-protocol server keeps byte for byte, and
where the read model must sort or page by an amount it also stores `sort_key(amount)`, a string
whose byte order is the amounts' numeric order. Totals are added up in Python as Decimals.

Documents written before this form carry integer micros (`<field>_micros`); `stored_amount`
still reads them, so nothing is rewritten behind anyone's back (docs/data-model.md, "Money").

The range is bounded so every accepted amount has a fixed-width sort key and a short text:
below 10^20 in magnitude, at most 20 decimal places once trailing zeros are dropped. Intuit's
amounts are far inside both; anything outside is refused as `InexactAmount`, never rounded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Context, Decimal, Inexact, InvalidOperation
from typing import Any

MICROS = 1_000_000
MAX_INTEGER_DIGITS = 20
MAX_FRACTION_DIGITS = 20
_INT64_MAX = 2**63 - 1
_CENT = Decimal("0.01")
_COMPLEMENT = str.maketrans("0123456789", "9876543210")
# Arithmetic on amounts never rounds: the default context keeps 28 significant digits, fewer
# than an amount may have (40) or a sum of many of them; this one has room for sums of up to
# 10^40 and refuses (Inexact) rather than round should that ever not suffice.
EXACT = Context(
    prec=MAX_INTEGER_DIGITS + MAX_FRACTION_DIGITS + 40, traps=[Inexact, InvalidOperation]
)

_WIDE = Context(prec=EXACT.prec)


class InexactAmount(ValueError):
    """An amount cannot be kept exactly: not a finite number, or outside the supported range."""


def amount(value: Any) -> Decimal:
    """An exact amount from a JSON value (int, Decimal or numeric string), checked for range."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        # A float would mean someone parsed JSON without parse_float=Decimal: already inexact.
        raise InexactAmount(f"amount {value!r} is not an exact number")
    if isinstance(value, str) and len(value) > 100:
        raise InexactAmount("amount text is too long")
    if isinstance(value, int) and abs(value) >= 10**MAX_INTEGER_DIGITS:
        raise InexactAmount(f"amount has more than {MAX_INTEGER_DIGITS} integer digits")
    try:
        result = value if isinstance(value, Decimal) else Decimal(value)
    except (InvalidOperation, ValueError):
        raise InexactAmount(f"amount {str(value)[:40]!r} is not a number") from None
    if not result.is_finite():
        raise InexactAmount(f"amount {result} is not a finite number")
    if len(result.as_tuple().digits) > EXACT.prec:
        raise InexactAmount("amount has too many digits")
    if result and result.adjusted() >= MAX_INTEGER_DIGITS:
        raise InexactAmount(f"amount has more than {MAX_INTEGER_DIGITS} integer digits")
    exponent = result.normalize(EXACT).as_tuple().exponent
    if result and isinstance(exponent, int) and -exponent > MAX_FRACTION_DIGITS:
        raise InexactAmount(f"amount has more than {MAX_FRACTION_DIGITS} decimal places")
    return result


def to_text(value: Decimal) -> str:
    """Canonical fixed-point text with at least two decimals: 1234.5 -> "1234.50"."""
    return _text(amount(value))


def _text(checked: Decimal) -> str:
    return format(shown(checked), "f")


def from_text(text: str) -> Decimal:
    return shown(amount(text))


def shown(value: Decimal) -> Decimal:
    """As amounts are shown: at least two decimals, no trailing zeros beyond them."""
    if not value:
        return Decimal("0.00")
    # Rounding to cents only to compare: an amount that has more decimals keeps them all.
    cents = value.quantize(_CENT, context=_WIDE)
    return cents if cents == value else value.normalize(EXACT)


SORT_KEY = re.compile(
    rf"p[0-9]{{{MAX_INTEGER_DIGITS}}}\.[0-9]{{0,{MAX_FRACTION_DIGITS}}}"
    rf"|n[0-9]{{{MAX_INTEGER_DIGITS}}}\.[0-9]{{0,{MAX_FRACTION_DIGITS}}}~"
)


def sort_key(value: Decimal) -> str:
    """A string whose lexicographic order is the numeric order of the amounts.

    Positive (and zero): "p" + integer part zero-padded to a fixed width + "." + the fraction
    without trailing zeros, so a shorter fraction that is a prefix sorts first. Negative: "n"
    (before "p") + the nines' complement of the same digits + "~", which sorts after every
    digit, so of two negatives the one with the larger magnitude sorts first.
    """
    return _key(amount(value))


def _key(checked: Decimal) -> str:
    text = format(abs(checked).normalize(EXACT), "f")
    whole, _, fraction = text.partition(".")
    digits = whole.zfill(MAX_INTEGER_DIGITS) + "." + fraction.rstrip("0")
    if checked >= 0:
        return "p" + digits
    return "n" + digits.translate(_COMPLEMENT) + "~"


def to_micros(value: Decimal | int | str) -> int:
    """Integer micros, for amounts that have them exactly (documents of the earlier form)."""
    micros = EXACT.multiply(amount(value), MICROS)
    if micros != micros.to_integral_value():
        raise InexactAmount(f"amount {value} has more than 6 decimal places")
    return int(micros)


def micros_if_exact(value: Decimal) -> int | None:
    """Micros when they hold `value` exactly within int64, else None (see `stored_fields`)."""
    _, digits, exponent = value.as_tuple()
    if isinstance(exponent, int) and exponent >= -6 and len(digits) + exponent <= 12:
        # The common case, without the general checks: at most six decimals and below 10^12,
        # so the micros are an exact int64 (this runs for every amount stored).
        return int(value.scaleb(6, EXACT))
    try:
        micros = to_micros(value)
    except InexactAmount:
        return None
    return micros if abs(micros) <= _INT64_MAX else None


def from_micros(micros: int) -> Decimal:
    """Back to a Decimal with at least two decimal places (1234.5 -> 1234.50)."""
    return shown(EXACT.divide(Decimal(micros), MICROS))


def add(left: Decimal, right: Decimal) -> Decimal:
    """`left + right`, exactly (see `EXACT`)."""
    return EXACT.add(left, right)


def stored_fields(name: str, value: Decimal, *, sortable: bool = False) -> dict[str, Any]:
    """The document fields that store one amount: `<name>` (exact text), `<name>_key` when the
    amount is sorted on, and `<name>_micros` while it fits, so a process still running the
    earlier version during a rolling upgrade reads the same value."""
    checked = amount(value)
    fields: dict[str, Any] = {name: _text(checked)}
    if sortable:
        fields[f"{name}_key"] = _key(checked)
    micros = micros_if_exact(checked)
    if micros is not None:
        fields[f"{name}_micros"] = micros
    return fields


def stored_amount(doc: Mapping[str, Any], name: str) -> Decimal:
    """An amount read back from a document of either form (exact text, or integer micros)."""
    text = doc.get(name)
    if isinstance(text, str):
        return from_text(text)
    micros = doc.get(f"{name}_micros")
    return from_micros(int(micros)) if micros is not None else Decimal("0.00")


def optional_text(value: Decimal | None) -> str | None:
    """An amount that may be absent (the home-currency amounts, an exchange rate) as stored:
    its exact text, or None. No micros or sort key: no earlier reader knows these fields, and
    nothing sorts on them."""
    return None if value is None else to_text(value)


def stored_optional(doc: Mapping[str, Any], name: str) -> Decimal | None:
    """An optional amount read back; None when the document has none (or predates it)."""
    text = doc.get(name)
    return from_text(text) if isinstance(text, str) else None
