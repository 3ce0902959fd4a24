"""Money in MongoDB as exact integers of micros (millionths of the currency unit).

FerretDB v1 has no Decimal128 and a binary float cannot hold 0.10 exactly, so stored amounts
are integers: 1234.56 USD is stored as 1_234_560_000. Six decimal places cover every currency
QBO supports (and UnitPrice's finer fractions); int64 still holds 9.2 trillion units. The
"micros" convention is the one ad platforms use for the same reason.
"""

from __future__ import annotations

from decimal import Decimal

MICROS = 1_000_000
_CENT = Decimal("0.01")


class InexactAmount(ValueError):
    """An amount has more than six decimal places and cannot be stored exactly."""


def to_micros(amount: Decimal | int | str) -> int:
    value = Decimal(amount) if not isinstance(amount, Decimal) else amount
    if not value.is_finite():
        raise InexactAmount(f"amount {value} is not a finite number")
    micros = value * MICROS
    if micros != micros.to_integral_value():
        raise InexactAmount(f"amount {value} has more than 6 decimal places")
    return int(micros)


def from_micros(micros: int) -> Decimal:
    """Back to a Decimal with at least two decimal places (1234.5 -> 1234.50)."""
    value = Decimal(micros) / MICROS
    cents = value.quantize(_CENT)
    return cents if cents == value else value.normalize()
