"""A small immutable builder for Intuit's SQL-like query language.

The query language has no bind parameters, so every literal is escaped here and
every identifier is checked against a strict pattern: field names must never be
interpolated from untrusted input. Intuit escapes quotes inside string literals
with a backslash (``'O\\'Brien'``), not by doubling them as SQL does. Only ``AND``
is supported between conditions (Intuit has no ``OR``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Literal, Self, TypeAlias

Scalar: TypeAlias = str | int | float | Decimal | bool | date | datetime
Op: TypeAlias = Literal["=", "LIKE", "IN", "<", ">", "<=", ">="]

MAX_RESULTS_LIMIT = 1000
"""Intuit caps MAXRESULTS at 1000 rows per query page."""

_FIELD_RE = re.compile(r"^[A-Za-z][A-Za-z0-9.]*$")
_ENTITY_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
_OPS: frozenset[str] = frozenset({"=", "LIKE", "IN", "<", ">", "<=", ">="})


def validate_field(name: str) -> str:
    """Return ``name`` if it is a safe field name (e.g. ``MetaData.LastUpdatedTime``)."""
    if not isinstance(name, str) or not _FIELD_RE.fullmatch(name):
        raise ValueError(f"invalid QBO field name: {name!r}")
    return name


def validate_entity(name: str) -> str:
    """Return ``name`` if it is a safe entity name (e.g. ``Invoice``)."""
    if not isinstance(name, str) or not _ENTITY_RE.fullmatch(name):
        raise ValueError(f"invalid QBO entity name: {name!r}")
    return name


def quote_string(value: str) -> str:
    """Quote a string literal using Intuit's backslash escaping."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def render_literal(value: Scalar) -> str:
    """Render one literal: numbers and booleans bare, everything else quoted."""
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"non-finite number in query: {value!r}")
        return format(value, "f")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"non-finite number in query: {value!r}")
        return repr(value)
    if isinstance(value, datetime):  # before date: datetime is a date subclass
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("datetime literals must be timezone-aware")
        return quote_string(value.isoformat(timespec="seconds"))
    if isinstance(value, date):
        return quote_string(value.isoformat())
    if isinstance(value, str):
        return quote_string(value)
    raise TypeError(f"unsupported literal type in query: {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class Condition:
    """One ``field op value`` term of a WHERE clause."""

    field: str
    op: str
    value: Scalar | tuple[Scalar, ...]

    def render(self) -> str:
        if isinstance(self.value, tuple):
            items = ", ".join(render_literal(v) for v in self.value)
            return f"{self.field} {self.op} ({items})"
        return f"{self.field} {self.op} {render_literal(self.value)}"


@dataclass(frozen=True, slots=True)
class Select:
    """``SELECT * FROM <entity>`` with conditions and ordering; each call returns a copy."""

    entity: str
    conditions: tuple[Condition, ...] = ()
    ordering: tuple[tuple[str, bool], ...] = ()

    def __post_init__(self) -> None:
        validate_entity(self.entity)

    def where(self, field: str, op: Op, value: Scalar | Sequence[Scalar]) -> Self:
        """Add an AND-ed condition; ``IN`` takes a non-empty sequence of literals."""
        validate_field(field)
        norm_op = op.upper() if isinstance(op, str) else op
        if norm_op not in _OPS:
            raise ValueError(f"unsupported QBO query operator: {op!r}")
        stored: Scalar | tuple[Scalar, ...]
        if norm_op == "IN":
            if isinstance(value, str | bytes) or not isinstance(value, Sequence):
                raise TypeError("IN needs a sequence of values")
            if not value:
                raise ValueError("IN needs at least one value")
            stored = tuple(value)
            for item in stored:
                render_literal(item)  # validate eagerly, not at render time
        else:
            if isinstance(value, Sequence) and not isinstance(value, str):
                raise TypeError(f"{norm_op} needs a single value, not a sequence")
            stored = value
            render_literal(stored)
        condition = Condition(field, norm_op, stored)
        return type(self)(self.entity, (*self.conditions, condition), self.ordering)

    def order_by(self, field: str, descending: bool = False) -> Self:
        """Append a sort key (Intuit's ``ORDERBY``)."""
        validate_field(field)
        return type(self)(self.entity, self.conditions, (*self.ordering, (field, descending)))

    @property
    def is_ordered(self) -> bool:
        """Whether an explicit ORDERBY is present (paging needs one to be stable)."""
        return bool(self.ordering)

    def _where_clause(self) -> str:
        if not self.conditions:
            return ""
        return " WHERE " + " AND ".join(c.render() for c in self.conditions)

    def render(self, start_position: int | None = None, max_results: int | None = None) -> str:
        """Render the statement, optionally with STARTPOSITION (1-based) and MAXRESULTS."""
        # Entity and fields are validated identifiers and literals are escaped.
        text = f"SELECT * FROM {self.entity}{self._where_clause()}"  # noqa: S608
        if self.ordering:
            keys = ", ".join(f"{f} DESC" if desc else f for f, desc in self.ordering)
            text += f" ORDERBY {keys}"
        if start_position is not None:
            if isinstance(start_position, bool) or start_position < 1:
                raise ValueError("STARTPOSITION is 1-based and must be >= 1")
            text += f" STARTPOSITION {int(start_position)}"
        if max_results is not None:
            if isinstance(max_results, bool) or not 1 <= max_results <= MAX_RESULTS_LIMIT:
                raise ValueError(f"MAXRESULTS must be between 1 and {MAX_RESULTS_LIMIT}")
            text += f" MAXRESULTS {int(max_results)}"
        return text

    def count(self) -> str:
        """Render ``SELECT COUNT(*) FROM <entity> [WHERE ...]`` (ordering is irrelevant)."""
        return f"SELECT COUNT(*) FROM {self.entity}{self._where_clause()}"  # noqa: S608
