"""JSON encoding that writes ``Decimal`` as an exact JSON number.

QuickBooks money is decimal; a float round trip turns 1234.56 into
1234.5599999999999 on some paths, which is exactly the kind of bug the emulator
must not hide. ``json`` cannot emit a bare number from ``default=``, so this is
a small dedicated encoder. Strings reuse the stdlib's C-accelerated escaper.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from decimal import Decimal
from json.encoder import encode_basestring as _encode_str
from typing import Any

_encode_string: Callable[[str], str] = _encode_str


def dumps(value: Any) -> str:
    """Serialise ``value`` compactly; ``Decimal`` becomes e.g. ``1234.56``."""
    out: list[str] = []
    _encode(value, out)
    return "".join(out)


def dumps_bytes(value: Any) -> bytes:
    """``dumps`` encoded as UTF-8, ready to be a response or webhook body."""
    return dumps(value).encode("utf-8")


def loads(text: str | bytes) -> Any:
    """Parse JSON keeping non-integral numbers as ``Decimal``."""
    return json.loads(text, parse_float=Decimal)


def decimal_text(value: Decimal) -> str:
    """Exact positional text of a finite decimal (never exponent notation)."""
    if not value.is_finite():
        raise ValueError(f"cannot encode non-finite decimal {value!r} as JSON")
    text = format(value, "f")
    return "0" if text == "-0" else text


def _encode(value: Any, out: list[str]) -> None:
    # Order matters: bool is an int subclass.
    if isinstance(value, str):
        out.append(_encode_string(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, Decimal):
        out.append(decimal_text(value))
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("cannot encode non-finite float as JSON")
        out.append(float.__repr__(value))
    elif isinstance(value, Mapping):
        if not value:
            out.append("{}")
            return
        out.append("{")
        first = True
        for key, item in value.items():
            if not first:
                out.append(",")
            first = False
            out.append(_encode_string(str(key)))
            out.append(":")
            _encode(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        if not value:
            out.append("[]")
            return
        out.append("[")
        first = True
        for item in value:
            if not first:
                out.append(",")
            first = False
            _encode(item, out)
        out.append("]")
    else:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
