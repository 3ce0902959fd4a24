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


# Deeper than any message or Intuit payload we read (an invoice is about 6 levels deep). Deeper
# documents are refused before anything walks them: the stdlib parser itself raises
# RecursionError near 1,000 levels, and jsonschema, dataclasses and our own encoder recurse too.
MAX_DEPTH = 64
# A JSON number such as 1E+999999999 parses into a small Decimal, but writing it out in fixed
# point, or turning it into an integer, would take gigabytes. No amount is anywhere near this.
MAX_EXPONENT = 1000


class JsonRejected(ValueError):
    """Not JSON we are willing to read: malformed, nested too deeply or out of range."""


def _exact_number(text: str) -> Decimal:
    value = Decimal(text)
    if abs(value.adjusted()) > MAX_EXPONENT:
        raise JsonRejected(f"number out of range: {text[:40]}")
    return value


def _reject_constant(name: str) -> Any:
    raise JsonRejected(f"non-finite number {name}")


def depth(value: Any, limit: int) -> int:
    """Nesting depth of a parsed document, counting stops just past `limit` (iterative, so a
    deep document cannot exhaust the stack)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def loads(data: str | bytes | bytearray, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON with every fractional number as an exact `Decimal`.

    Raises `JsonRejected` (a ValueError) for anything that is not JSON we can safely work with:
    malformed text, bad UTF-8, `NaN`/`Infinity`, integers past Python's digit limit, absurd
    exponents, or nesting deeper than `max_depth`. Nothing else escapes, whatever the bytes.
    """
    try:
        document = json.loads(data, parse_float=_exact_number, parse_constant=_reject_constant)
    except JsonRejected:
        raise
    except RecursionError:
        raise JsonRejected(f"nested deeper than {max_depth} levels") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, int digit limit
        raise JsonRejected(str(exc)[:200]) from None
    except ArithmeticError as exc:  # decimal.InvalidOperation on a pathological number
        raise JsonRejected(f"bad number: {type(exc).__name__}") from None
    if _brackets(data) > max_depth and depth(document, max_depth) > max_depth:
        raise JsonRejected(f"nested deeper than {max_depth} levels")
    if _mentions_surrogate(data) and _lone_surrogate(document):
        raise JsonRejected("a string holds an unpaired surrogate (not Unicode text)")
    return document


# JSON may spell a lone UTF-16 surrogate (\ud800). Python keeps it in the str, but it is not
# Unicode text: BSON, UTF-8 and most consumers refuse it, so one such string in a record would
# fail every write of its batch. Only documents whose text mentions one are walked.
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


def _mentions_surrogate(data: str | bytes | bytearray) -> bool:
    if isinstance(data, str):
        try:
            data = data.encode("utf-8")
        except UnicodeEncodeError:  # a raw surrogate in the text itself
            return True
    return _ESCAPED_SURROGATE.search(data) is not None


def _brackets(data: str | bytes | bytearray) -> int:
    # Counted in C: a document with no more opening brackets than the limit cannot be nested
    # deeper, so most messages skip the walk (brackets inside strings only over-count).
    if isinstance(data, str):
        return data.count("[") + data.count("{")
    return data.count(b"[") + data.count(b"{")


def _lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False
