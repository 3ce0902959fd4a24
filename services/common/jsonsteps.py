"""JSON decoded a slice at a time, so a large answer does not hold the event loop in one go.

`json.loads` of a QBO page of 1,000 invoices is one C call of tens of milliseconds (hundreds
while the machine is busy), during which no other coroutine runs (services/sync/turns.py). Here
the outer levels of the document (the answer object, `QueryResponse`, the `Invoice` array) are
walked by hand and their members decoded one by one with the same decoder, so the caller can
let the loop run every few elements. Deeper values (one invoice) are decoded whole.

The result is the one `decoder.decode` gives for the same text, and so are the failures
(`ValueError`, with `json.JSONDecodeError` for syntax): tests/unit/test_jsonsteps.py checks
both on generated documents and on mutilated ones.
"""

from __future__ import annotations

import json
import re
from collections.abc import Generator
from typing import Any

_WHITESPACE = re.compile(r"[ \t\n\r]*")
# Levels walked by hand: the answer, `QueryResponse` and its arrays. A value deeper than that is
# one entity, decoded whole.
HAND_WALKED_LEVELS = 3

Steps = Generator[None, None, Any]


def decode_text(body: bytes) -> str:
    """The text `json.loads` decodes from `body` (its encoding detection: a BOM is dropped)."""
    return body.decode(json.detect_encoding(body), "surrogatepass")


def decode_in_steps(text: str, decoder: json.JSONDecoder, every: int) -> Steps:
    """A generator that yields after about every `every` values decoded and returns the
    document: drive it with `next` until `StopIteration`, whose `value` is the result."""
    counter = _Counter(every)
    start = _skip(text, 0)
    value, end = yield from _value(text, start, decoder, 0, counter)
    end = _skip(text, end)
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return value


class _Counter:
    def __init__(self, every: int) -> None:
        self.every = max(every, 1)
        self.count = 0

    def tick(self) -> bool:
        self.count += 1
        if self.count >= self.every:
            self.count = 0
            return True
        return False


def _skip(text: str, at: int) -> int:
    match = _WHITESPACE.match(text, at)
    assert match is not None  # `*` always matches
    return match.end()


def _value(
    text: str, at: int, decoder: json.JSONDecoder, level: int, counter: _Counter
) -> Generator[None, None, tuple[Any, int]]:
    if level < HAND_WALKED_LEVELS and text.startswith("{", at):
        return (yield from _object(text, at + 1, decoder, level + 1, counter))
    if level < HAND_WALKED_LEVELS and text.startswith("[", at):
        return (yield from _array(text, at + 1, decoder, level + 1, counter))
    value, end = decoder.raw_decode(text, at)
    if counter.tick():
        yield
    return value, end


def _object(
    text: str, at: int, decoder: json.JSONDecoder, level: int, counter: _Counter
) -> Generator[None, None, tuple[dict[str, Any], int]]:
    result: dict[str, Any] = {}
    done, at = _member(text, at, "}", first=True)
    while not done:
        if not text.startswith('"', at):
            raise json.JSONDecodeError(
                "Expecting property name enclosed in double quotes", text, at
            )
        key, at = decoder.raw_decode(text, at)  # a string: it starts with a quote
        at = _skip(text, at)
        if not text.startswith(":", at):
            raise json.JSONDecodeError("Expecting ':' delimiter", text, at)
        result[key], at = yield from _value(text, _skip(text, at + 1), decoder, level, counter)
        done, at = _member(text, at, "}")
    return result, at


def _array(
    text: str, at: int, decoder: json.JSONDecoder, level: int, counter: _Counter
) -> Generator[None, None, tuple[list[Any], int]]:
    result: list[Any] = []
    done, at = _member(text, at, "]", first=True)
    while not done:
        value, at = yield from _value(text, at, decoder, level, counter)
        result.append(value)
        done, at = _member(text, at, "]")
    return result, at


def _member(text: str, at: int, closing: str, first: bool = False) -> tuple[bool, int]:
    """Just inside a bracket (`first`) or after a member: (True, past the closing bracket) at
    the end, else (False, where the next member starts)."""
    at = _skip(text, at)
    if text.startswith(closing, at):
        return True, at + 1
    if first:
        return False, at
    if not text.startswith(",", at):
        raise json.JSONDecodeError("Expecting ',' delimiter", text, at)
    return False, _skip(text, at + 1)
