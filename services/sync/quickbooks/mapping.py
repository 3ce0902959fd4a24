"""QBO Invoice JSON -> `InvoiceRecord`: pure code, no I/O.

Intuit facts encoded here (docs/design.md, "QBO facts"):
- invoices have no `Active` field; a voided invoice keeps its Id with zero amounts and a
  "Voided" private note; a deleted one is known only from CDC/webhooks as a stub
  `{"status": "Deleted", "Id", "MetaData": {"LastUpdatedTime"}}`;
- `SyncToken` is a decimal string that grows by one per change; together with
  `MetaData.LastUpdatedTime` it orders versions of one invoice;
- amounts are in the invoice's `CurrencyRef`. A company with multicurrency enabled adds
  `ExchangeRate` (home currency units per one unit of `CurrencyRef`) and, on an invoice in a
  foreign currency, `HomeTotalAmt` and `HomeBalance`; without them the amounts are already in
  the home currency (docs/design.md, "QBO facts").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from services.common import jsoncodec, money
from services.common.statuses import InvoiceStatus

# What the InvoiceUpdated contract (schemas/events) accepts; an invoice outside it is refused
# here, one at a time, instead of failing its whole page when its event is built.
_QBO_ID = re.compile(r"[0-9]{1,32}")
_CURRENCY = re.compile(r"[A-Z]{3}")
MAX_DOC_NUMBER = 64
_SYNC_TOKEN_DIGITS = 12


class UnmappableInvoice(ValueError):
    """The JSON is not an invoice we can store (missing Id, bad dates...)."""


@dataclass(frozen=True)
class InvoiceRecord:
    realm_id: str
    invoice_id: str
    qbo_customer_id: str | None
    doc_number: str | None
    txn_date: date | None
    due_date: date | None
    currency: str | None
    total_amt: Decimal
    balance: Decimal
    status: InvoiceStatus
    sync_token: int
    last_updated_time: datetime
    raw_json: str
    # Multicurrency companies only (None otherwise): see the module docstring.
    exchange_rate: Decimal | None = None
    home_total_amt: Decimal | None = None
    home_balance: Decimal | None = None

    @property
    def deleted(self) -> bool:
        return self.status is InvoiceStatus.DELETED

    @property
    def key(self) -> str:
        return f"{self.realm_id}:{self.invoice_id}"

    def is_newer_than(self, sync_token: int, last_updated_time: datetime, deleted: bool) -> bool:
        """Would storing this record move the stored version forward? (docs/design.md invariant 3)

        A deletion is final: nothing replaces a tombstone, and a deletion replaces anything
        that is not one. Otherwise (SyncToken, LastUpdatedTime) must grow.
        """
        if deleted:
            return False
        if self.deleted:
            return True
        return (self.sync_token, self.last_updated_time) > (sync_token, last_updated_time)


def parse_qbo_datetime(text: Any) -> datetime:
    if not isinstance(text, str):
        raise UnmappableInvoice(f"expected a timestamp, got {text!r}")
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UnmappableInvoice(f"bad timestamp {text!r}") from None
    offset = parsed.utcoffset()
    if offset is None:
        raise UnmappableInvoice(f"timestamp without a UTC offset: {text!r}")
    if offset.total_seconds() % 60:
        raise UnmappableInvoice(f"timestamp with an offset in seconds: {text!r}")
    try:
        # BSON stores UTC: a time at the very edge of the calendar could not be written.
        parsed.astimezone(UTC)
    except OverflowError:
        raise UnmappableInvoice(f"timestamp out of range: {text!r}") from None
    return parsed


def _date(value: Any) -> date | None:
    if value in (None, ""):
        return None
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise UnmappableInvoice(f"bad date {value!r}") from None


def _money(value: Any) -> Decimal:
    if value is None:
        return Decimal("0")
    try:
        return money.amount(value)
    except money.InexactAmount as exc:
        raise UnmappableInvoice(str(exc)) from None


def _optional_money(value: Any, field: str) -> Decimal | None:
    if value is None:
        return None
    try:
        return money.amount(value)
    except money.InexactAmount as exc:
        raise UnmappableInvoice(f"{field}: {exc}") from None


def _exchange_rate(value: Any) -> Decimal | None:
    rate = _optional_money(value, "ExchangeRate")
    if rate is not None and rate <= 0:
        # Home units per foreign unit: a rate of zero or below would turn every home amount
        # derived from it into nonsense, so the invoice is refused (and recorded) instead.
        raise UnmappableInvoice(f"ExchangeRate {rate} is not positive")
    return rate


def _ref(value: Any) -> str | None:
    if isinstance(value, Mapping) and value.get("value") not in (None, ""):
        return str(value["value"])
    return None


def _customer_ref(value: Any) -> str | None:
    ref = _ref(value)
    if ref is not None and not _QBO_ID.fullmatch(ref):
        raise UnmappableInvoice(f"CustomerRef {ref[:40]!r} is not a QBO id")
    return ref


def _currency(value: Any) -> str | None:
    code = _ref(value)
    if code is not None and not _CURRENCY.fullmatch(code):
        raise UnmappableInvoice(f"CurrencyRef {code[:40]!r} is not an ISO 4217 code")
    return code


def is_voided(invoice: Mapping[str, Any]) -> bool:
    note = str(invoice.get("PrivateNote") or "")
    return "voided" in note.lower() and _money(invoice.get("TotalAmt")) == 0


def invoice_record(realm_id: str, invoice: Mapping[str, Any]) -> InvoiceRecord:
    """Map one Invoice object (from a query, a read or CDC) to the record we store."""
    invoice_id = invoice.get("Id")
    if not isinstance(invoice_id, str) or not _QBO_ID.fullmatch(invoice_id):
        raise UnmappableInvoice(f"invoice without a numeric Id: {str(invoice_id)[:40]!r}")
    meta = invoice.get("MetaData")
    if not isinstance(meta, Mapping):
        raise UnmappableInvoice(f"invoice {invoice_id} has no MetaData")
    last_updated = parse_qbo_datetime(meta.get("LastUpdatedTime"))
    raw = jsoncodec.dumps(invoice)
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        # JSON may escape a lone surrogate (\ud800); BSON cannot store it, and the whole page's
        # write would fail on this one invoice.
        raise UnmappableInvoice(
            f"invoice {invoice_id} holds text that is not valid Unicode"
        ) from None

    if str(invoice.get("status", "")).lower() == "deleted":
        return InvoiceRecord(
            realm_id=realm_id,
            invoice_id=invoice_id,
            qbo_customer_id=_customer_ref(invoice.get("CustomerRef")),
            doc_number=None,
            txn_date=None,
            due_date=None,
            currency=None,
            total_amt=Decimal("0"),
            balance=Decimal("0"),
            status=InvoiceStatus.DELETED,
            sync_token=-1,  # stubs carry none; deletion is ordered by being final instead
            last_updated_time=last_updated,
            raw_json=raw,
        )

    token = str(invoice.get("SyncToken"))
    if not (token.isascii() and token.isdigit() and len(token) <= _SYNC_TOKEN_DIGITS):
        raise UnmappableInvoice(f"invoice {invoice_id} has no usable SyncToken")
    sync_token = int(token)
    total, balance = _money(invoice.get("TotalAmt")), _money(invoice.get("Balance"))
    if is_voided(invoice):
        status = InvoiceStatus.VOIDED
    elif balance == 0:
        status = InvoiceStatus.PAID
    else:
        status = InvoiceStatus.OPEN
    doc_number = invoice.get("DocNumber")
    if doc_number is not None and len(str(doc_number)) > MAX_DOC_NUMBER:
        raise UnmappableInvoice(f"invoice {invoice_id} has a DocNumber over {MAX_DOC_NUMBER}")
    return InvoiceRecord(
        realm_id=realm_id,
        invoice_id=invoice_id,
        qbo_customer_id=_customer_ref(invoice.get("CustomerRef")),
        doc_number=str(doc_number) if doc_number not in (None, "") else None,
        txn_date=_date(invoice.get("TxnDate")),
        due_date=_date(invoice.get("DueDate")),
        currency=_currency(invoice.get("CurrencyRef")),
        total_amt=total,
        balance=balance,
        status=status,
        sync_token=sync_token,
        last_updated_time=last_updated,
        raw_json=raw,
        exchange_rate=_exchange_rate(invoice.get("ExchangeRate")),
        home_total_amt=_optional_money(invoice.get("HomeTotalAmt"), "HomeTotalAmt"),
        home_balance=_optional_money(invoice.get("HomeBalance"), "HomeBalance"),
    )


def deleted_stub(realm_id: str, invoice_id: str, last_updated: datetime) -> InvoiceRecord:
    """A deletion known from a webhook (which carries no entity body)."""
    return invoice_record(
        realm_id,
        {
            "Id": invoice_id,
            "status": "Deleted",
            "domain": "QBO",
            "MetaData": {"LastUpdatedTime": last_updated.isoformat()},
        },
    )


# ------------------------------------------------------------------------------ customers

MAX_DISPLAY_NAME = 500  # Intuit allows 500 characters in a customer's DisplayName


class UnmappableCustomer(ValueError):
    """The JSON is not a customer we can take facts from (missing Id, bad SyncToken...)."""


@dataclass(frozen=True)
class CustomerFacts:
    """What a mapping keeps of a QBO customer as of the last read (docs/data-model.md)."""

    qbo_customer_id: str
    sync_token: int  # -1 for a deletion stub, which carries none
    active: bool
    display_name: str | None
    deleted: bool = False


def customer_facts(customer: Any) -> CustomerFacts:
    """Map one Customer object (from a query or CDC) to the facts a mapping keeps.

    QBO customers are never deleted, only made inactive (a merged-away one is inactive and
    renamed "... (deleted)"); should CDC all the same send a `status: "Deleted"` stub, it is
    kept as an inactive, deleted customer.
    """
    if not isinstance(customer, Mapping):
        raise UnmappableCustomer("a customer must be a JSON object")
    customer_id = customer.get("Id")
    if not isinstance(customer_id, str) or not _QBO_ID.fullmatch(customer_id):
        raise UnmappableCustomer(f"customer without a numeric Id: {str(customer_id)[:40]!r}")
    if str(customer.get("status", "")).lower() == "deleted":
        return CustomerFacts(customer_id, -1, active=False, display_name=None, deleted=True)
    token = customer.get("SyncToken")
    if not (
        isinstance(token, str)
        and token.isascii()
        and token.isdigit()
        and len(token) <= _SYNC_TOKEN_DIGITS
    ):
        raise UnmappableCustomer(f"customer {customer_id} has no usable SyncToken")
    active = customer.get("Active", True)  # QBO's default for a new customer
    if not isinstance(active, bool):
        raise UnmappableCustomer(f"customer {customer_id} has a non-boolean Active")
    name = customer.get("DisplayName")
    if name is not None and not isinstance(name, str):
        raise UnmappableCustomer(f"customer {customer_id} has a non-text DisplayName")
    if name is not None:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise UnmappableCustomer(
                f"customer {customer_id} holds text that is not valid Unicode"
            ) from None
    return CustomerFacts(customer_id, int(token), active, name[:MAX_DISPLAY_NAME] if name else None)
