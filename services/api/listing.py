"""Query parameters of the invoice listing -> MongoDB filters, sort and paging. Pure code.

Paging is by keyset (`cursor`) or by `offset`. A cursor names the sort it was made for and the
last row's sort value and `_id`, so the next page starts right after that row even while new
invoices arrive. Null sort values (no due date, no doc number) sort first ascending and last
descending, as in MongoDB and FerretDB; the keyset filters below follow the same order.
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from services.common import b64url, money
from services.common.mongo import Document

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_OFFSET = 100_000
STATUSES = ("all", "open", "overdue", "partially_paid", "paid", "voided", "deleted")
# Public sort key -> read-model field.
SORT_FIELDS: Mapping[str, str] = {
    "due_date": "due_date",
    # Amounts sort by their order-preserving text key (services/common/money.py): exact for
    # any number of decimals, and a plain string comparison for the keyset filters.
    "total": "total_amt_key",
    "balance": "balance_key",
    "doc_number": "doc_number",
}
SORTS = tuple(f"{sign}{key}" for key in SORT_FIELDS for sign in ("", "-"))
DEFAULT_SORT = "due_date"
_MONEY_FIELDS = frozenset({"total_amt_key", "balance_key"})
_DIGITS = re.compile(r"^[0-9]{1,9}$")
_MAX_CURSOR_CHARS = 1024

SortValue = str | None


class InvalidParameter(ValueError):
    """A query parameter the listing cannot honour; `param` names it for the 400 answer."""

    def __init__(self, param: str, message: str) -> None:
        self.param = param
        super().__init__(message)


@dataclass(frozen=True)
class Sort:
    key: str
    descending: bool = False

    @classmethod
    def parse(cls, text: str) -> Sort:
        if text not in SORTS:
            raise InvalidParameter("sort", f"sort must be one of {', '.join(SORTS)}")
        return cls(text.lstrip("-"), text.startswith("-"))

    @property
    def field(self) -> str:
        return SORT_FIELDS[self.key]

    @property
    def token(self) -> str:
        return ("-" if self.descending else "") + self.key

    def mongo(self) -> list[tuple[str, int]]:
        # `_id` breaks ties so the order, and therefore every page boundary, is total.
        return [(self.field, -1 if self.descending else 1), ("_id", 1)]

    def after(self, value: SortValue, last_id: str) -> Document:
        """Rows strictly after (value, last_id) in this order."""
        f = self.field
        same_value_later_id: Document = {f: value, "_id": {"$gt": last_id}}
        if value is None:
            if self.descending:  # nulls come last: only later ids among the nulls remain
                return same_value_later_id
            return {"$or": [same_value_later_id, {f: {"$ne": None}}]}
        # $gt/$lt compare within one BSON type, so they never match a null.
        if self.descending:
            return {"$or": [{f: {"$lt": value}}, {f: None}, same_value_later_id]}
        return {"$or": [{f: {"$gt": value}}, same_value_later_id]}

    def value_of(self, doc: Mapping[str, Any]) -> SortValue:
        value = doc.get(self.field)
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class Cursor:
    sort: str
    value: SortValue
    last_id: str

    def encode(self) -> str:
        raw = json.dumps([self.sort, self.value, self.last_id], separators=(",", ":"))
        return b64url.encode(raw.encode())

    @classmethod
    def decode(cls, text: str) -> Cursor:
        if len(text) > _MAX_CURSOR_CHARS:
            raise InvalidParameter("cursor", "cursor is too long")
        try:
            raw = b64url.decode(text)
            sort, value, last_id = json.loads(raw)
        except (binascii.Error, ValueError, TypeError):
            raise InvalidParameter("cursor", "cursor is malformed") from None
        if not isinstance(sort, str) or sort not in SORTS or not isinstance(last_id, str):
            raise InvalidParameter("cursor", "cursor is malformed")
        money_sort = SORT_FIELDS[sort.lstrip("-")] in _MONEY_FIELDS
        if not (value is None or isinstance(value, str)) or (
            money_sort and isinstance(value, str) and not money.SORT_KEY.fullmatch(value)
        ):
            raise InvalidParameter("cursor", "cursor is malformed")
        return cls(sort, value, last_id)


@dataclass(frozen=True)
class InvoiceListQuery:
    status: str = "all"
    sort: Sort = Sort(DEFAULT_SORT)
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    cursor: Cursor | None = None


def _non_negative(params: Mapping[str, str], name: str) -> int | None:
    text = params.get(name)
    if text is None:
        return None
    if not _DIGITS.fullmatch(text):
        raise InvalidParameter(name, f"{name} must be a non-negative integer")
    return int(text)


def parse_invoice_query(params: Mapping[str, str]) -> InvoiceListQuery:
    """Validate the listing's query parameters; unknown parameters are ignored."""
    status = params.get("status", "all")
    if status not in STATUSES:
        raise InvalidParameter("status", f"status must be one of {', '.join(STATUSES)}")
    sort = Sort.parse(params.get("sort", DEFAULT_SORT))
    limit = _non_negative(params, "limit")
    if limit is None:
        limit = DEFAULT_LIMIT
    elif not 1 <= limit <= MAX_LIMIT:
        raise InvalidParameter("limit", f"limit must be between 1 and {MAX_LIMIT}")
    offset = _non_negative(params, "offset")
    if offset is not None and offset > MAX_OFFSET:
        raise InvalidParameter("offset", f"offset must be at most {MAX_OFFSET}; use cursor")
    cursor_text = params.get("cursor")
    cursor = None
    if cursor_text is not None:
        if offset is not None:
            raise InvalidParameter("cursor", "use either cursor or offset, not both")
        cursor = Cursor.decode(cursor_text)
        if cursor.sort != sort.token:
            raise InvalidParameter("cursor", f"cursor was made for sort={cursor.sort}")
    return InvoiceListQuery(status, sort, limit, offset or 0, cursor)


def status_filter(status: str, today: date) -> Document:
    if status == "all":
        return {}
    if status == "overdue":
        return {"status": "open", "due_date": {"$lt": today.isoformat()}}
    if status == "partially_paid":
        # Open invoices with a payment applied, overdue or not (docs/design.md, "Invoice
        # status"): both are equalities, which FerretDB v1 hands to its backend.
        return {"status": "open", "partially_paid": True}
    return {"status": status}


def customer_filter(mapping: Mapping[str, Any]) -> Document:
    """The invoices of a mapped customer: those of its QBO customer in its realm.

    Matching on the mapping rather than on the event's `local_customer_id` also finds the
    invoices whose events did not know the local id (deletions seen only through CDC carry
    none), and follows a customer that was re-mapped.
    """
    if mapping.get("qbo_customer_id"):
        return {"realm_id": mapping["realm_id"], "qbo_customer_id": mapping["qbo_customer_id"]}
    return {"local_customer_id": mapping["_id"]}


def combine(*filters: Document) -> Document:
    """All of `filters` at once, as one flat filter where their fields don't collide.

    Flat rather than `$and`: FerretDB v1 hands a filter's top-level equalities (the customer,
    the status) to its backend, and looks at nothing inside `$and`, which would make it decode
    every document of the collection. A field two filters both constrain goes into `$and`.
    MongoDB plans both shapes alike.
    """
    merged: Document = {}
    clashing: list[Document] = []
    for part in filters:
        for key, value in part.items():
            if key in merged:
                clashing.append({key: value})
            else:
                merged[key] = value
    if clashing:
        merged["$and"] = [*merged.get("$and", []), *clashing]
    return merged
