"""The invoice read model: InvoiceUpdated events in, API models (`models.py`) out. Pure code.

A `read_invoices` document (docs/data-model.md) is a flattened copy of the newest event the
projector has seen for an invoice, with money as exact decimal text (integer micros in
documents of the earlier form). Rendering turns them back into exact `Decimal`s, which
`jsoncodec` writes digit for digit (docs/design.md invariant 7).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from services.api import models
from services.common import money
from services.common.money import InexactAmount
from services.common.mongo import Document

# BSON integers are signed 64-bit; a larger amount or version cannot be stored exactly.
_INT64_MAX = 2**63 - 1
# Invoices that no longer ask for money: excluded from the amount totals, still listed.
CLOSED_STATUSES = frozenset({"voided", "deleted"})


class UnprojectableEvent(ValueError):
    """A schema-valid event that still cannot be stored faithfully (dead-lettered)."""


def invoice_key(realm_id: str, invoice_id: str) -> str:
    """`_id` of a read-model document and the Kafka key of its events."""
    return f"{realm_id}:{invoice_id}"


def _amount(data: Mapping[str, Any], name: str) -> dict[str, Any]:
    try:
        return money.stored_fields(name, money.amount(data[name]), sortable=True)
    except InexactAmount as exc:
        raise UnprojectableEvent(f"data.{name}: {exc}") from None


def _optional_amount(data: Mapping[str, Any], name: str) -> str | None:
    # Events emitted before the multicurrency fields existed lack them: stored as None.
    value = data.get(name)
    try:
        return None if value is None else money.to_text(money.amount(value))
    except InexactAmount as exc:
        raise UnprojectableEvent(f"data.{name}: {exc}") from None


def is_partially_paid(status: str, total_amt: Decimal, balance: Decimal) -> bool:
    """Open with a payment applied: something is still owed, less than the total.

    Independent of overdue (docs/design.md, "Invoice status"): an overdue invoice may be
    partially paid too, and `status` stays `open` for both, so filters keep their meaning.
    """
    return status == "open" and 0 < balance < total_amt


def read_invoice(event: Mapping[str, Any], projected_at: datetime) -> Document:
    """The read-model document for a schema-valid InvoiceUpdated event."""
    data = event["data"]
    realm_id, invoice_id = data["realm_id"], data["invoice_id"]
    subject = f"realms/{realm_id}/invoices/{invoice_id}"
    if event["subject"] != subject:
        raise UnprojectableEvent(f"subject {event['subject']!r} does not match data ({subject})")
    version = data["version"]
    if version > _INT64_MAX:
        raise UnprojectableEvent("data.version is too large")
    deleted = bool(data["deleted"])
    status = "deleted" if deleted else data["status"]
    total_amt, balance = _amount(data, "total_amt"), _amount(data, "balance")
    partially_paid = is_partially_paid(
        status, money.stored_amount(total_amt, "total_amt"), money.stored_amount(balance, "balance")
    )
    return {
        "_id": invoice_key(realm_id, invoice_id),
        "local_customer_id": data["local_customer_id"],
        "realm_id": realm_id,
        "invoice_id": invoice_id,
        "qbo_customer_id": data["qbo_customer_id"],
        "doc_number": data["doc_number"],
        "txn_date": data.get("txn_date"),
        "due_date": data["due_date"],
        "currency": data["currency"],
        **total_amt,
        **balance,
        "exchange_rate": _optional_amount(data, "exchange_rate"),
        "home_total_amt": _optional_amount(data, "home_total_amt"),
        "home_balance": _optional_amount(data, "home_balance"),
        # The deleted flag wins: a deleted invoice is shown as deleted whatever it owed before.
        "status": status,
        # Stored, not only rendered, so the status filter is an equality on it (listing.py).
        "partially_paid": partially_paid,
        "deleted": deleted,
        "version": version,
        "last_updated_time": data["last_updated_time"],
        "projected_at": projected_at,
    }


def is_overdue(doc: Mapping[str, Any], today: date) -> bool:
    """Open with a due date before today. Due dates are calendar dates compared as ISO text."""
    due = doc.get("due_date")
    return doc.get("status") == "open" and isinstance(due, str) and due < today.isoformat()


def render_invoice(doc: Mapping[str, Any], today: date) -> models.Invoice:
    """One invoice as the API shows it."""
    total_amt = money.stored_amount(doc, "total_amt")
    balance = money.stored_amount(doc, "balance")
    return models.Invoice(
        invoice_id=doc["invoice_id"],
        realm_id=doc["realm_id"],
        qbo_customer_id=doc.get("qbo_customer_id"),
        doc_number=doc.get("doc_number"),
        txn_date=doc.get("txn_date"),
        due_date=doc.get("due_date"),
        currency=doc.get("currency"),
        total_amt=total_amt,
        balance=balance,
        exchange_rate=money.stored_optional(doc, "exchange_rate"),
        home_total_amt=money.stored_optional(doc, "home_total_amt"),
        home_balance=money.stored_optional(doc, "home_balance"),
        status=doc["status"],
        overdue=is_overdue(doc, today),
        # Computed again rather than read: a document projected before the flag existed has
        # none, and its amounts say the same.
        partially_paid=is_partially_paid(doc["status"], total_amt, balance),
        deleted=bool(doc.get("deleted")),
        version=doc["version"],
        last_updated_time=doc.get("last_updated_time"),
    )


@dataclass
class Totals:
    """Sums over every invoice a listing matches (not only the page shown), exact Decimals.

    `count` counts every matched invoice; the amounts leave out voided and deleted ones, which
    no longer ask for money. A QBO customer bills in one currency; `currency` is None when the
    matched invoices disagree (or name none), so a reader knows not to trust a mixed sum.
    """

    count: int = 0
    total_amt: Decimal = Decimal(0)
    balance: Decimal = Decimal(0)
    overdue_balance: Decimal = Decimal(0)
    currency: str | None = None
    _currencies: frozenset[str] = frozenset()

    def add(self, doc: Mapping[str, Any], today: date) -> None:
        self.count += 1
        if doc.get("status") in CLOSED_STATUSES or doc.get("deleted"):
            return
        balance = money.stored_amount(doc, "balance")
        self.total_amt = money.add(self.total_amt, money.stored_amount(doc, "total_amt"))
        self.balance = money.add(self.balance, balance)
        if is_overdue(doc, today):
            self.overdue_balance = money.add(self.overdue_balance, balance)
        currency = doc.get("currency")
        self._currencies = self._currencies | {currency if isinstance(currency, str) else ""}
        only = next(iter(self._currencies)) if len(self._currencies) == 1 else ""
        self.currency = only or None

    @classmethod
    def of(cls, docs: Iterable[Mapping[str, Any]], today: date) -> Totals:
        totals = cls()
        for doc in docs:
            totals.add(doc, today)
        return totals

    def render(self) -> models.Totals:
        return models.Totals(
            count=self.count,
            total_amt=money.shown(self.total_amt),
            balance=money.shown(self.balance),
            overdue_balance=money.shown(self.overdue_balance),
            currency=self.currency,
        )
