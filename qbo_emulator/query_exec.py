"""Runs a parsed ``Query`` against one realm's books.

QBO quirks reproduced here:

* string comparisons (``=``, ``IN``, ``LIKE``) ignore case;
* ``CustomerRef = '12'`` compares against ``CustomerRef.value``;
* a Customer query without any condition on ``Active`` only sees active
  customers;
* results are ordered by numeric ``Id`` unless ``ORDERBY`` says otherwise
  (Intuit does not promise an order; a fixed one keeps paging deterministic);
* ``MetaData.*Time`` literals may carry an offset; comparisons use the full
  precision change time, so ``> last seen LastUpdatedTime`` re-delivers a
  same-second change rather than losing it;
* only documented filterable properties may be used (others -> error 4001).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from qbo_emulator.books import CUSTOMER, INVOICE, PAYMENT, Entity, RealmBooks, Stored
from qbo_emulator.query import Condition, Literal, Query, QueryValidationError, like_to_regex
from qbo_emulator.timeutil import parse_datetime

# kind: id | str | ref | num | bool | date | created | updated | email
_FIELDS: dict[str, dict[str, tuple[str, str]]] = {
    INVOICE: {
        "id": ("Id", "id"),
        "docnumber": ("DocNumber", "str"),
        "txndate": ("TxnDate", "date"),
        "duedate": ("DueDate", "date"),
        "customerref": ("CustomerRef", "ref"),
        "customerref.value": ("CustomerRef", "ref"),
        "totalamt": ("TotalAmt", "num"),
        "balance": ("Balance", "num"),
        "emailstatus": ("EmailStatus", "str"),
        "printstatus": ("PrintStatus", "str"),
        "privatenote": ("PrivateNote", "str"),
        "synctoken": ("SyncToken", "id"),
        "metadata.createtime": ("MetaData.CreateTime", "created"),
        "metadata.lastupdatedtime": ("MetaData.LastUpdatedTime", "updated"),
    },
    CUSTOMER: {
        "id": ("Id", "id"),
        "displayname": ("DisplayName", "str"),
        "companyname": ("CompanyName", "str"),
        "givenname": ("GivenName", "str"),
        "familyname": ("FamilyName", "str"),
        "fullyqualifiedname": ("FullyQualifiedName", "str"),
        "primaryemailaddr": ("PrimaryEmailAddr", "email"),
        "active": ("Active", "bool"),
        "balance": ("Balance", "num"),
        "synctoken": ("SyncToken", "id"),
        "metadata.createtime": ("MetaData.CreateTime", "created"),
        "metadata.lastupdatedtime": ("MetaData.LastUpdatedTime", "updated"),
    },
    PAYMENT: {
        "id": ("Id", "id"),
        "txndate": ("TxnDate", "date"),
        "customerref": ("CustomerRef", "ref"),
        "customerref.value": ("CustomerRef", "ref"),
        "totalamt": ("TotalAmt", "num"),
        "synctoken": ("SyncToken", "id"),
        "metadata.createtime": ("MetaData.CreateTime", "created"),
        "metadata.lastupdatedtime": ("MetaData.LastUpdatedTime", "updated"),
    },
}

_CUSTOMER_REF_KEYS = frozenset({"customerref", "customerref.value"})

Getter = Callable[[Stored], Any]
Predicate = Callable[[Stored], bool]


def execute(books: RealmBooks, query: Query) -> dict[str, Any]:
    """Return the ``QueryResponse`` object for ``query``."""
    if query.count:
        return {"totalCount": len(_matching(books, query))}
    result = _matching(books, query)
    start = query.start_position - 1
    page = result[start : start + query.max_results]
    if not page:
        return {}
    objects = (
        [s.data for s in page]
        if query.fields is None
        else [_project(s.data, query.fields) for s in page]
    )
    return {
        query.entity: objects,
        "startPosition": query.start_position,
        "maxResults": len(objects),
    }


# Per realm's books: the rows of recent queries, before paging, with the length of the change
# log they were read at. Paging through 100,000 invoices asks the same query once a page; kept
# until the books change, a page costs its slice instead of a filter and a sort of everything.
_answers: weakref.WeakKeyDictionary[RealmBooks, dict[Query, tuple[int, list[Stored]]]] = (
    weakref.WeakKeyDictionary()
)
_ANSWERS_KEPT = 16


def _matching(books: RealmBooks, query: Query) -> list[Stored]:
    """Every row of ``query`` in its order, before paging (every change is logged, so the log's
    length says whether a kept answer still holds)."""
    key = replace(query, fields=None, start_position=1, max_results=1)
    version = len(books.change_log)
    kept = _answers.setdefault(books, {})
    answer = kept.get(key)
    if answer is not None and answer[0] == version:
        return answer[1]
    fields = _FIELDS[query.entity]
    predicates = [_predicate(fields, query.entity, cond) for cond in query.where]
    if query.entity == CUSTOMER and not query.mentions("Active"):
        predicates.append(lambda s: s.data.get("Active", True) is True)
    candidates, ordered = _candidates(books, query)
    rows: Iterable[Stored] = candidates
    if predicates:
        rows = (s for s in candidates if all(p(s) for p in predicates))
    if query.order_by:
        result = list(rows)
        for order in reversed(query.order_by):
            name, kind = _field(fields, query.entity, order.field)
            getter = _getter(name, kind)
            result.sort(key=lambda s, g=getter: _sort_key(g(s)), reverse=order.descending)  # type: ignore[misc]
    elif ordered:
        result = list(rows)
    else:
        result = sorted(rows, key=_numeric_id)
    if len(kept) >= _ANSWERS_KEPT:
        kept.clear()
    kept[key] = (version, result)
    return result


def _candidates(books: RealmBooks, query: Query) -> tuple[list[Stored], bool]:
    """Use an index when a condition allows it; the bool says "already in Id order"."""
    entity = query.entity
    best: set[str] | None = None
    for cond in query.where:
        ids: set[str] | None = None
        key = cond.field.lower()
        if key == "id" and cond.op in {"=", "IN"}:
            ids = {str(v) for v in cond.values}
        elif entity == INVOICE and key in _CUSTOMER_REF_KEYS and cond.op in {"=", "IN"}:
            ids = set()
            for value in cond.values:
                ids.update(books.invoices_by_customer.get(str(value), ()))
        elif key == "metadata.lastupdatedtime" and cond.op in {">", ">="}:
            since = _parse_time(cond.value)
            ids = set(books.changed_ids_since(entity, since, inclusive=cond.op == ">="))
        if ids is not None and (best is None or len(ids) < len(best)):
            best = ids
    if best is None:
        return books.all_stored(entity), True
    found = [s for s in (books.find(entity, i) for i in best) if s is not None]
    return found, False


def _field(fields: dict[str, tuple[str, str]], entity: str, name: str) -> tuple[str, str]:
    spec = fields.get(name.lower())
    if spec is None:
        raise QueryValidationError(f"property '{name}' is not queryable on {entity}")
    return spec


def _getter(name: str, kind: str) -> Getter:
    if kind == "created":
        return lambda s: s.created_ts
    if kind == "updated":
        return lambda s: s.updated_ts
    if kind == "ref":
        return lambda s: (s.data.get(name) or {}).get("value")
    if kind == "email":
        return lambda s: (s.data.get(name) or {}).get("Address")
    if kind == "id":
        return lambda s: _int_or_str(s.data.get(name))
    if kind == "str":
        return lambda s: _fold(s.data.get(name))
    return lambda s: s.data.get(name)


def _predicate(fields: dict[str, tuple[str, str]], entity: str, cond: Condition) -> Predicate:
    name, kind = _field(fields, entity, cond.field)
    getter = _getter(name, kind)
    if cond.op == "LIKE":
        if kind not in {"str", "email", "ref", "id"}:
            raise QueryValidationError(f"LIKE is not supported on property '{cond.field}'")
        regex = like_to_regex(str(cond.value))
        return lambda s: (v := getter(s)) is not None and regex.match(str(v)) is not None
    values = [_coerce(kind, v, cond.field) for v in cond.values]
    if cond.op == "IN":
        allowed = set(values)
        return lambda s: getter(s) in allowed
    target = values[0]
    compare = _COMPARATORS[cond.op]
    return lambda s: (v := getter(s)) is not None and compare(v, target)


_COMPARATORS: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: bool(a == b),
    "<": lambda a, b: bool(a < b),
    ">": lambda a, b: bool(a > b),
    "<=": lambda a, b: bool(a <= b),
    ">=": lambda a, b: bool(a >= b),
}


def _coerce(kind: str, value: Literal, field: str) -> Any:
    try:
        if kind in {"str", "email"}:
            return _fold(str(value))
        if kind == "ref":
            return str(value)
        if kind == "id":
            return _int_or_str(str(value))
        if kind == "num":
            return (
                value
                if isinstance(value, Decimal | int) and not isinstance(value, bool)
                else Decimal(str(value))
            )
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in {"true", "false"}:
                return text == "true"
            raise ValueError(text)
        if kind == "date":
            return date.fromisoformat(str(value).strip()[:10]).isoformat()
        if kind in {"created", "updated"}:
            return _parse_time(value)
    except (ValueError, InvalidOperation) as exc:
        raise QueryValidationError(f"invalid value {value!r} for property '{field}'") from exc
    return value


def _parse_time(value: Literal) -> float:
    try:
        return parse_datetime(str(value))
    except ValueError as exc:
        raise QueryValidationError(f"invalid date-time {value!r}") from exc


def _fold(value: object) -> str | None:
    return value.casefold() if isinstance(value, str) else None


def _int_or_str(value: object) -> int | str | None:
    if value is None:
        return None
    text = str(value)
    return int(text) if text.isdigit() else text


def _numeric_id(stored: Stored) -> int:
    return int(stored.data["Id"])


def _sort_key(value: Any) -> tuple[int, Any]:
    # None sorts first ascending (last descending) like SQL NULLs in QBO.
    return (0, 0) if value is None else (1, value)


def _project(data: Entity, wanted: tuple[str, ...]) -> Entity:
    """``SELECT a, b`` returns those properties plus the identity fields."""
    out: Entity = {"Id": data["Id"]}
    for name in wanted:
        top = name.split(".", 1)[0]
        for key in data:
            if key.lower() == top.lower():
                out[key] = data[key]
    out["domain"] = data.get("domain", "QBO")
    out["sparse"] = True
    return out
