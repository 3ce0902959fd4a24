"""JSON that keeps money exact.

Intuit sends amounts as JSON numbers. Parsed with the default `float` they stop being exact
(0.1 + 0.2), so every boundary that reads or writes JSON goes through here: numbers with a
fraction become `Decimal` on the way in and are written back digit for digit on the way out.
"""

from __future__ import annotations

import json
import operator
import re
from datetime import date, datetime
from decimal import Decimal
from typing import Any

# The stdlib encoder can only write a number from a float (lossy), so a Decimal is first written
# as a marked string and the marks are then stripped. Only a whole string value that starts with
# a NUL character and the mark could collide; no QBO or API field carries NUL characters.
_MARK = "\x00dec:"
_MARKED = re.compile(r'"\\u0000dec:(-?[0-9]+(?:\.[0-9]+)?)"')


class _Encoder(json.JSONEncoder):
    def default(self, o: Any) -> Any:
        if isinstance(o, Decimal):
            if not o.is_finite():
                raise ValueError(f"cannot encode non-finite amount {o}")
            # Fixed-point text: consumers choke on exponents such as 1E+2.
            return _MARK + format(o, "f")
        if isinstance(o, datetime | date):
            return o.isoformat()
        return super().default(o)


# One encoder for every call, and the marks stripped by a C-level callable rather than a
# template: both showed in the sync worker's profile (it encodes every stored invoice and event).
_ENCODER = _Encoder(separators=(",", ":"), ensure_ascii=False)
_DIGITS = operator.itemgetter(1)


def dumps(value: Any) -> str:
    """Serialise with Decimals written exactly as JSON numbers."""
    text = _ENCODER.encode(value)
    return _MARKED.sub(_DIGITS, text) if "\\u0000dec:" in text else text


def dumpb(value: Any) -> bytes:
    return dumps(value).encode()


def loads(data: str | bytes | bytearray) -> Any:
    """Parse JSON with every fractional number as an exact `Decimal`."""
    return json.loads(data, parse_float=Decimal)
