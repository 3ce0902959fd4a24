"""One company's books: customers, invoices, the change log and indexes.

Entities are kept as the JSON-shaped dicts the API returns (with ``Decimal``
money) so reads need no translation; a handful of indexes keep the hot paths
O(1)/O(log n) at benchmark scale (100,000 invoices in one realm):

* ``Id`` -> entity (dict, insertion order == numeric Id order, because Ids
  are allocated monotonically, which gives QBO-like default ordering for free);
* ``CustomerRef`` -> invoice Ids;
* an append-only change log ordered by change time, bisected by CDC and by
  ``MetaData.LastUpdatedTime >`` queries.

Behaviour copied from QBO: ``SyncToken`` is a string counter bumped on every
write and checked on update (stale -> error 5010); ``DisplayName`` is unique
case-insensitively (error 6240); a voided invoice keeps its Id but all amounts
drop to 0 and ``PrivateNote`` becomes ``"Voided"``; a deleted invoice vanishes
from reads and queries and shows up in CDC with ``status: "Deleted"``;
customer ``Balance`` is the sum of its open invoice balances and changes
without bumping the customer's own ``SyncToken``.
"""

from __future__ import annotations

import bisect
import copy
import gc
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from qbo_emulator import shapes
from qbo_emulator.timeutil import company_date, format_entity_time

Entity = dict[str, Any]

CUSTOMER = "Customer"
INVOICE = "Invoice"
PAYMENT = "Payment"
ENTITY_TYPES: tuple[str, ...] = (CUSTOMER, INVOICE, PAYMENT)

ZERO = Decimal("0")
USD: Mapping[str, str] = {"value": "USD", "name": "United States Dollar"}
DEFAULT_ITEM: Mapping[str, str] = {"value": "1", "name": "Services"}
DEFAULT_TERMS_DAYS = 30
_BULK_SEED = 10_000  # from this many invoices on, seeding tunes the garbage collector

#: Fields an admin update may not touch (QBO owns them).
_READ_ONLY = frozenset({"Id", "MetaData", "domain", "sparse", "SyncToken"})


class BooksError(Exception):
    """A QBO ``ValidationFault``; routes render it as an HTTP 400 fault."""

    def __init__(self, code: str, message: str, detail: str, element: str | None = None) -> None:
        super().__init__(f"{code} {message}: {detail}")
        self.code = code
        self.message = message
        self.detail = detail
        self.element = element


class NotFoundError(BooksError):
    def __init__(self, entity: str, entity_id: str) -> None:
        super().__init__(
            "610",
            "Object Not Found",
            f"Object Not Found : Something you're trying to use has been made inactive. "
            f"Check the fields with accounts, customers, items, vendors or employees. "
            f"({entity} Id={entity_id})",
        )
        self.entity = entity
        self.entity_id = entity_id


def _duplicate_name(name: str) -> BooksError:
    return BooksError(
        "6240",
        "Duplicate Name Exists Error",
        "The name supplied already exists. : Another customer, vendor or employee is already "
        f"using this name. Please use a different name. ({name})",
    )


def _stale(entity: str, entity_id: str, sent: object, current: str) -> BooksError:
    return BooksError(
        "5010",
        "Stale Object Error",
        f"Stale Object Error : You and {entity} Id={entity_id} were working on this at the "
        f"same time. SyncToken {sent} is behind the current {current}.",
    )


def _required(field: str) -> BooksError:
    return BooksError(
        "2020",
        "Required param missing, need to supply the required value for the API",
        f"Required parameter {field} is missing in the request",
        element=field,
    )


def _invalid(field: str, detail: str) -> BooksError:
    return BooksError("2010", "Request has invalid or unsupported property", detail, field)


def to_decimal(value: object, field: str) -> Decimal:
    """Accept JSON numbers (int/Decimal/float) or numeric strings as money."""
    if isinstance(value, bool):
        raise _invalid(field, f"{field} must be a number")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        result = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation as exc:
            raise _invalid(field, f"{field} must be a number, got {value!r}") from exc
    else:
        raise _invalid(field, f"{field} must be a number")
    if not result.is_finite():
        raise _invalid(field, f"{field} must be finite")
    return result


def _date_text(value: object, field: str) -> str:
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip()[:10]).isoformat()
        except ValueError as exc:
            raise _invalid(field, f"{field} must be a YYYY-MM-DD date") from exc
    raise _invalid(field, f"{field} must be a YYYY-MM-DD date")


class Change(NamedTuple):
    """One entry of a realm's change log (what CDC and webhooks report)."""

    seq: int
    ts: float
    entity: str
    entity_id: str
    operation: str  # Create | Update | Delete | Void | Emailed | Merge
    deleted_id: str | None = None  # Merge only: the absorbed entity (``entity_id`` survives)


class Stored:
    """An entity plus the precise times QBO would keep (output has 1 s resolution)."""

    __slots__ = ("created_ts", "data", "updated_ts")

    def __init__(self, data: Entity, created_ts: float, updated_ts: float) -> None:
        self.data = data
        self.created_ts = created_ts
        self.updated_ts = updated_ts


class ChangeClock:
    """Hands out strictly increasing (time, sequence) pairs.

    Two writes in the same microsecond - or a test clock that stands still or
    goes backwards - still get distinct, ordered change times, so CDC and
    ``LastUpdatedTime`` ordering never tie or invert.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.last_ts = 0.0
        self.seq = 0

    def tick(self) -> tuple[float, int]:
        now = self._clock()
        ts = now if now > self.last_ts else self.last_ts + 1e-6
        self.last_ts = ts
        self.seq += 1
        return ts, self.seq


ChangeListener = Callable[[str, Change], None]


class _TimeText:
    """Caches the formatted whole-second timestamp; seeding formats 100k times."""

    __slots__ = ("_second", "_text")

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def __call__(self, ts: float) -> str:
        second = int(ts // 1)
        if second != self._second:
            self._second = second
            self._text = format_entity_time(ts)
        return self._text


class RealmBooks:
    """Customers and invoices of one QBO company (realm)."""

    def __init__(
        self,
        realm_id: str,
        clock: Callable[[], float],
        change_clock: ChangeClock,
        listener: ChangeListener | None = None,
    ) -> None:
        self.realm_id = realm_id
        # What CompanyInfo reports; the name makes realms tell apart in tests and demos.
        self.company_name = f"Sandbox Company {realm_id}"
        self.created_text = format_entity_time(clock())
        self._clock = clock
        self._change_clock = change_clock
        self._listener = listener
        self._time_text = _TimeText()
        self.entities: dict[str, dict[str, Stored]] = {e: {} for e in ENTITY_TYPES}
        self._next_id: dict[str, int] = {e: 1 for e in ENTITY_TYPES}
        self._next_address_id = 1
        self._names: dict[str, str] = {}  # casefolded DisplayName -> customer Id
        self.invoices_by_customer: dict[str, dict[str, None]] = {}
        self._deleted: dict[str, dict[str, float]] = {e: {} for e in ENTITY_TYPES}
        self._latest_seq: dict[str, dict[str, int]] = {e: {} for e in ENTITY_TYPES}
        self._log: list[Change] = []
        self._log_ts: list[float] = []
        self._values_cache: dict[str, list[Stored]] = {}

    # ------------------------------------------------------------------ reads
    def get(self, entity: str, entity_id: str) -> Entity:
        """A deep copy of the live entity; raises ``NotFoundError``."""
        return copy.deepcopy(self.get_stored(entity, entity_id).data)

    def get_stored(self, entity: str, entity_id: str) -> Stored:
        stored = self.entities[entity].get(str(entity_id))
        if stored is None:
            raise NotFoundError(entity, str(entity_id))
        return stored

    def find(self, entity: str, entity_id: str) -> Stored | None:
        return self.entities[entity].get(str(entity_id))

    def all_stored(self, entity: str) -> list[Stored]:
        """Every live entity in numeric Id order (cached until the next insert/delete)."""
        cached = self._values_cache.get(entity)
        if cached is None:
            cached = list(self.entities[entity].values())
            self._values_cache[entity] = cached
        return cached

    def count(self, entity: str) -> int:
        return len(self.entities[entity])

    def is_deleted(self, entity: str, entity_id: str) -> bool:
        return str(entity_id) in self._deleted[entity]

    def changed_ids_since(self, entity: str, since_ts: float, inclusive: bool) -> Iterator[str]:
        """Ids of live ``entity`` objects whose last change is after ``since_ts``."""
        start = (bisect.bisect_left if inclusive else bisect.bisect_right)(self._log_ts, since_ts)
        latest = self._latest_seq[entity]
        live = self.entities[entity]
        for change in self._log[start:]:
            if (
                change.entity == entity
                and latest.get(change.entity_id) == change.seq
                and change.entity_id in live
            ):
                yield change.entity_id

    def cdc(
        self, entities: Sequence[str], since_ts: float, limit: int = 1000
    ) -> dict[str, list[Entity]]:
        """Latest state of each object changed at/after ``since_ts``, oldest change first.

        Mirrors QBO CDC: one row per object (its current state, or a
        ``status: "Deleted"`` stub), at most ``limit`` per entity type.
        """
        wanted: dict[str, list[Entity]] = {e: [] for e in entities}
        full = 0
        start = bisect.bisect_left(self._log_ts, since_ts)
        for change in self._log[start:]:
            bucket = wanted.get(change.entity)
            if bucket is None or len(bucket) >= limit:
                continue
            if self._latest_seq[change.entity].get(change.entity_id) != change.seq:
                continue  # superseded by a later change
            stored = self.entities[change.entity].get(change.entity_id)
            if stored is not None:
                bucket.append(stored.data)
            else:
                bucket.append(
                    {
                        "domain": "QBO",
                        "status": "Deleted",
                        "Id": change.entity_id,
                        "MetaData": {"LastUpdatedTime": format_entity_time(change.ts)},
                    }
                )
            if len(bucket) >= limit:
                full += 1
                if full == len(wanted):
                    break
        return wanted

    @property
    def change_log(self) -> Sequence[Change]:
        return self._log

    # -------------------------------------------------------------- customers
    def create_customer(self, fields: Mapping[str, Any], notify: bool = True) -> Entity:
        ts, seq = self._change_clock.tick()
        entity_id = self._allocate_id(CUSTOMER)
        data = self._build_customer(entity_id, fields, ts)
        self._insert(CUSTOMER, entity_id, data, ts)
        self._record(Change(seq, ts, CUSTOMER, entity_id, "Create"), notify)
        return copy.deepcopy(data)

    def update_customer(
        self, entity_id: str, fields: Mapping[str, Any], notify: bool = True
    ) -> Entity:
        stored = self.get_stored(CUSTOMER, entity_id)
        self._check_sync_token(CUSTOMER, stored, fields)
        data = copy.deepcopy(stored.data)
        old_key = data["DisplayName"].casefold()
        for key, value in fields.items():
            if key in _READ_ONLY or key in {"Balance", "BalanceWithJobs"}:
                continue
            if key in {"BillAddr", "ShipAddr"} and isinstance(value, Mapping):
                kept = data.get(key, {}).get("Id") or self._allocate_address_id()
                data[key] = shapes.address(str(value.get("Id", kept)), value)
                continue
            data[key] = copy.deepcopy(value)
        name = data.get("DisplayName")
        if not isinstance(name, str) or not name.strip():
            raise _required("DisplayName")
        data["DisplayName"] = name = name.strip()
        new_key = name.casefold()
        if new_key != old_key:
            owner = self._names.get(new_key)
            if owner is not None and owner != stored.data["Id"]:
                raise _duplicate_name(name)
        data["FullyQualifiedName"] = name
        if "PrintOnCheckName" not in fields:
            data["PrintOnCheckName"] = data.get("CompanyName") or name
        data["Active"] = bool(data.get("Active", True))
        ts, seq = self._change_clock.tick()
        self._bump(data, stored, ts)
        if new_key != old_key:
            del self._names[old_key]
            self._names[new_key] = data["Id"]
            ref = {"value": data["Id"], "name": name}
            for invoice_id in self.invoices_by_customer.get(data["Id"], {}):
                self.entities[INVOICE][invoice_id].data["CustomerRef"] = dict(ref)
        self._record(Change(seq, ts, CUSTOMER, data["Id"], "Update"), notify)
        return copy.deepcopy(data)

    def _build_customer(self, entity_id: str, fields: Mapping[str, Any], ts: float) -> Entity:
        given = fields.get("GivenName")
        family = fields.get("FamilyName")
        company = fields.get("CompanyName")
        name = fields.get("DisplayName")
        if not isinstance(name, str) or not name.strip():
            parts = [p for p in (given, family) if isinstance(p, str) and p.strip()]
            name = " ".join(p.strip() for p in parts) or company
        if not isinstance(name, str) or not name.strip():
            raise _required("DisplayName")
        name = name.strip()
        key = name.casefold()
        if key in self._names:
            raise _duplicate_name(name)
        stamp = self._time_text(ts)
        data: Entity = {
            "Id": entity_id,
            "SyncToken": "0",
            "DisplayName": name,
        }
        if isinstance(given, str):
            data["GivenName"] = given
        if isinstance(family, str):
            data["FamilyName"] = family
        if isinstance(company, str):
            data["CompanyName"] = company
        data["FullyQualifiedName"] = name
        data["PrintOnCheckName"] = company if isinstance(company, str) and company else name
        email = fields.get("PrimaryEmailAddr")
        if isinstance(email, Mapping) and email.get("Address"):
            data["PrimaryEmailAddr"] = {"Address": str(email["Address"])}
        elif isinstance(email, str) and email:
            data["PrimaryEmailAddr"] = {"Address": email}
        for address_field in ("BillAddr", "ShipAddr"):
            given_address = fields.get(address_field)
            if isinstance(given_address, Mapping):
                data[address_field] = shapes.address(self._allocate_address_id(), given_address)
        data.update(
            {
                "Active": bool(fields.get("Active", True)),
                "Job": False,
                "BillWithParent": False,
                "Taxable": False,
                "Balance": ZERO,
                "BalanceWithJobs": ZERO,
                "CurrencyRef": dict(USD),
                "PreferredDeliveryMethod": "Print",
                "IsProject": False,
                "domain": "QBO",
                "sparse": False,
                "MetaData": {"CreateTime": stamp, "LastUpdatedTime": stamp},
            }
        )
        for key_name, value in fields.items():
            if key_name not in data and key_name not in _READ_ONLY:
                data[key_name] = copy.deepcopy(value)
        self._names[key] = entity_id
        return data

    def merge_customers(
        self, absorbed_id: str, survivor_id: str, notify: bool = True
    ) -> dict[str, Any]:
        """QBO's customer merge: the absorbed customer's transactions move to the survivor.

        As QBO does it (a customer is renamed to another's name and confirmed as a merge): the
        absorbed customer stays readable but inactive, its name marked "(deleted)"; each of its
        invoices names the survivor in ``CustomerRef`` with a new ``SyncToken`` (in the change
        log, so CDC sees them, but without webhooks of their own); one ``Merge`` change of the
        survivor carries the absorbed id (``deletedId`` / ``data.deletedid`` in webhooks).
        """
        absorbed = self.get_stored(CUSTOMER, absorbed_id)
        survivor = self.get_stored(CUSTOMER, survivor_id)
        if absorbed is survivor:
            raise _invalid("Id", "a customer cannot be merged into itself")
        if absorbed.data.get("Active") is not True or survivor.data.get("Active") is not True:
            raise _invalid("Active", "only active customers can be merged")
        moved = list(self.invoices_by_customer.get(absorbed.data["Id"], {}))
        ref = _ref(survivor)
        for invoice_id in moved:
            stored = self.entities[INVOICE][invoice_id]
            data = copy.deepcopy(stored.data)
            data["CustomerRef"] = dict(ref)
            ts, seq = self._change_clock.tick()
            self._bump(data, stored, ts)
            self._adjust_balance(absorbed.data["Id"], -data["Balance"])
            self._adjust_balance(survivor.data["Id"], data["Balance"])
            self.invoices_by_customer.setdefault(survivor.data["Id"], {})[invoice_id] = None
            self._record(Change(seq, ts, INVOICE, invoice_id, "Update"), notify=False)
        self.invoices_by_customer.pop(absorbed.data["Id"], None)
        data = copy.deepcopy(absorbed.data)
        old_key = data["DisplayName"].casefold()
        name = self._deleted_name(data["DisplayName"])
        data.update({"DisplayName": name, "FullyQualifiedName": name, "Active": False})
        ts, seq = self._change_clock.tick()
        self._bump(data, absorbed, ts)
        del self._names[old_key]
        self._names[name.casefold()] = data["Id"]
        self._record(Change(seq, ts, CUSTOMER, data["Id"], "Update"), notify=False)
        ts, seq = self._change_clock.tick()
        merge = Change(seq, ts, CUSTOMER, survivor.data["Id"], "Merge", data["Id"])
        self._record(merge, notify)
        return {
            "survivor": copy.deepcopy(survivor.data),
            "absorbed": copy.deepcopy(data),
            "moved_invoices": moved,
        }

    def _deleted_name(self, name: str) -> str:
        candidate, n = f"{name} (deleted)", 1
        while candidate.casefold() in self._names:
            candidate, n = f"{name} (deleted-{n})", n + 1
        return candidate

    # --------------------------------------------------------------- invoices
    def create_invoice(self, fields: Mapping[str, Any], notify: bool = True) -> Entity:
        customer = self._customer_ref(fields)
        ts, seq = self._change_clock.tick()
        entity_id = self._allocate_id(INVOICE)
        data = self._build_invoice(entity_id, fields, customer, ts)
        self._insert(INVOICE, entity_id, data, ts)
        self._adjust_balance(customer.data["Id"], data["Balance"])
        self._record(Change(seq, ts, INVOICE, entity_id, "Create"), notify)
        return copy.deepcopy(data)

    def update_invoice(
        self, entity_id: str, fields: Mapping[str, Any], notify: bool = True
    ) -> Entity:
        stored = self.get_stored(INVOICE, entity_id)
        self._check_sync_token(INVOICE, stored, fields)
        old = stored.data
        data = copy.deepcopy(old)
        old_customer = old["CustomerRef"]["value"]
        if "CustomerRef" in fields:
            customer = self._customer_ref(fields)
            data["CustomerRef"] = _ref(customer)
        for key, value in fields.items():
            if key in _READ_ONLY or key in {"CustomerRef", "Line", "TotalAmt", "Balance"}:
                continue
            if key in {"TxnDate", "DueDate"}:
                data[key] = _date_text(value, key)
            else:
                data[key] = copy.deepcopy(value)
        old_total: Decimal = old["TotalAmt"]
        old_balance: Decimal = old["Balance"]
        if "Line" in fields:
            lines, line_total = _normalise_lines(fields["Line"])
            total = _explicit_total(fields, line_total)
            data["Line"] = lines
        elif "TotalAmt" in fields:
            total = to_decimal(fields["TotalAmt"], "TotalAmt")
            data["Line"] = _default_lines(total)
        else:
            total = old_total
        data["TotalAmt"] = total
        if "Balance" in fields:
            data["Balance"] = to_decimal(fields["Balance"], "Balance")
        elif total != old_total:
            paid = old_total - old_balance
            data["Balance"] = max(total - paid, ZERO)
        _delivery(data, self._clock())
        shapes.set_home_amounts(data)
        ts, seq = self._change_clock.tick()
        self._bump(data, stored, ts)
        new_customer = data["CustomerRef"]["value"]
        self._adjust_balance(old_customer, -old_balance)
        self._adjust_balance(new_customer, data["Balance"])
        if new_customer != old_customer:
            self.invoices_by_customer.get(old_customer, {}).pop(data["Id"], None)
            self.invoices_by_customer.setdefault(new_customer, {})[data["Id"]] = None
        self._record(Change(seq, ts, INVOICE, data["Id"], "Update"), notify)
        return copy.deepcopy(data)

    def void_invoice(self, entity_id: str, notify: bool = True) -> Entity:
        """QBO void: same Id, every amount 0, ``PrivateNote`` "Voided", SyncToken + 1."""
        stored = self.get_stored(INVOICE, entity_id)
        data = copy.deepcopy(stored.data)
        old_balance: Decimal = data["Balance"]
        for line in data.get("Line", []):
            line["Amount"] = ZERO
            detail = line.get("SalesItemLineDetail")
            if isinstance(detail, dict) and "Qty" in detail:
                detail["Qty"] = ZERO
        data["TotalAmt"] = ZERO
        data["Balance"] = ZERO
        data["PrivateNote"] = "Voided"
        shapes.set_home_amounts(data)
        if isinstance(data.get("TxnTaxDetail"), dict):
            data["TxnTaxDetail"]["TotalTax"] = ZERO
        ts, seq = self._change_clock.tick()
        self._bump(data, stored, ts)
        self._adjust_balance(data["CustomerRef"]["value"], -old_balance)
        self._record(Change(seq, ts, INVOICE, data["Id"], "Void"), notify)
        return copy.deepcopy(data)

    def delete_invoice(self, entity_id: str, notify: bool = True) -> Entity:
        """Remove the invoice; CDC reports it as ``status: "Deleted"`` from now on."""
        stored = self.get_stored(INVOICE, entity_id)
        data = stored.data
        ts, seq = self._change_clock.tick()
        del self.entities[INVOICE][data["Id"]]
        self._values_cache.pop(INVOICE, None)
        customer_id = data["CustomerRef"]["value"]
        self.invoices_by_customer.get(customer_id, {}).pop(data["Id"], None)
        self._adjust_balance(customer_id, -data["Balance"])
        self._deleted[INVOICE][data["Id"]] = ts
        self._record(Change(seq, ts, INVOICE, data["Id"], "Delete"), notify)
        return {"Id": data["Id"], "status": "Deleted", "domain": "QBO"}

    # --------------------------------------------------------------- payments
    def create_payment(self, fields: Mapping[str, Any], notify: bool = True) -> Entity:
        """Receive a payment and apply it to invoices, as QBO's "Receive payment" does.

        ``fields``: ``CustomerRef``, ``TotalAmt`` and ``Line`` as Intuit takes them
        (``[{"Amount": .., "LinkedTxn": [{"TxnId": invoice id, "TxnType": "Invoice"}]}]``).
        Each invoice paid drops its ``Balance``, links the payment in ``LinkedTxn`` and
        gets a new ``SyncToken``; what is not applied stays as ``UnappliedAmt``.
        """
        customer = self._customer_ref(fields)
        customer_id = customer.data["Id"]
        applied: list[tuple[Stored, Decimal]] = []
        for raw in fields.get("Line") or []:
            if not isinstance(raw, Mapping):
                raise _invalid("Line", "each Line must be an object")
            amount = to_decimal(raw.get("Amount"), "Line.Amount")
            links = raw.get("LinkedTxn") or []
            target = next(
                (x for x in links if isinstance(x, Mapping) and x.get("TxnType") == "Invoice"),
                None,
            )
            if target is None:
                raise _required("Line.LinkedTxn")
            invoice = self.get_stored(INVOICE, str(target.get("TxnId")))
            if invoice.data["CustomerRef"]["value"] != customer_id:
                raise _invalid("LinkedTxn", "the invoice belongs to another customer")
            if amount <= ZERO or amount > invoice.data["Balance"]:
                raise _invalid("Line.Amount", "amount must be positive and within the balance")
            applied.append((invoice, amount))
        applied_total = sum((amount for _, amount in applied), ZERO)
        total = to_decimal(fields.get("TotalAmt", applied_total), "TotalAmt")
        if total < applied_total:
            raise _invalid("TotalAmt", "TotalAmt is less than the amounts applied")
        ts, seq = self._change_clock.tick()
        entity_id = self._allocate_id(PAYMENT)
        stamp = self._time_text(ts)
        txn_date = (
            _date_text(fields["TxnDate"], "TxnDate")
            if "TxnDate" in fields
            else company_date(self._clock()).isoformat()
        )
        payment: Entity = {
            "CustomerRef": _ref(customer),
            "DepositToAccountRef": dict(shapes.UNDEPOSITED_FUNDS),
            "TotalAmt": total,
            "UnappliedAmt": total - applied_total,
            "ProcessPayment": False,
            "domain": "QBO",
            "sparse": False,
            "Id": entity_id,
            "SyncToken": "0",
            "MetaData": {"CreateTime": stamp, "LastUpdatedTime": stamp},
            "TxnDate": txn_date,
            "CurrencyRef": dict(USD),
            "Line": [
                shapes.payment_line(invoice.data, amount, invoice.data["Balance"])
                for invoice, amount in applied
            ],
        }
        self._insert(PAYMENT, entity_id, payment, ts)
        self._record(Change(seq, ts, PAYMENT, entity_id, "Create"), notify)
        for invoice, amount in applied:
            data = copy.deepcopy(invoice.data)
            data["Balance"] = data["Balance"] - amount
            shapes.link(data, entity_id, "Payment")
            shapes.set_home_amounts(data)
            inv_ts, inv_seq = self._change_clock.tick()
            self._bump(data, invoice, inv_ts)
            self._adjust_balance(customer_id, -amount)
            self._record(Change(inv_seq, inv_ts, INVOICE, data["Id"], "Update"), notify)
        return copy.deepcopy(payment)

    def _customer_ref(self, fields: Mapping[str, Any]) -> Stored:
        ref = fields.get("CustomerRef")
        value = ref.get("value") if isinstance(ref, Mapping) else ref
        if value is None or value == "":
            raise _required("CustomerRef")
        customer = self.entities[CUSTOMER].get(str(value))
        if customer is None:
            raise BooksError(
                "2500",
                "Invalid Reference Id",
                f"Invalid Reference Id : Something you're trying to use has been made inactive. "
                f"Check the fields with accounts, customers, items, vendors or employees. "
                f"(Customer Id={value})",
                element="CustomerRef",
            )
        return customer

    def _build_invoice(
        self, entity_id: str, fields: Mapping[str, Any], customer: Stored, ts: float
    ) -> Entity:
        if fields.get("Line"):
            lines, line_total = _normalise_lines(fields["Line"])
            total = _explicit_total(fields, line_total)
        else:
            total = to_decimal(fields.get("TotalAmt", ZERO), "TotalAmt")
            lines = _default_lines(total)
        balance = to_decimal(fields["Balance"], "Balance") if "Balance" in fields else total
        txn_date = (
            _date_text(fields["TxnDate"], "TxnDate")
            if "TxnDate" in fields
            else company_date(self._clock()).isoformat()
        )
        due_date = (
            _date_text(fields["DueDate"], "DueDate")
            if "DueDate" in fields
            else (date.fromisoformat(txn_date) + timedelta(days=DEFAULT_TERMS_DAYS)).isoformat()
        )
        doc_number = fields.get("DocNumber")
        stamp = self._time_text(ts)
        data: Entity = shapes.invoice_defaults(customer.data)
        data.update(
            {
                "Id": entity_id,
                "SyncToken": "0",
                "DocNumber": str(doc_number)
                if doc_number is not None
                else str(1000 + int(entity_id)),
                "TxnDate": txn_date,
                "DueDate": due_date,
                "CustomerRef": _ref(customer),
                "CurrencyRef": dict(USD),
                "Line": lines,
                "TxnTaxDetail": {"TotalTax": ZERO},
                "TotalAmt": total,
                "Balance": balance,
                "Deposit": ZERO,
                "ApplyTaxAfterDiscount": False,
                "EmailStatus": str(fields.get("EmailStatus", "NotSet")),
                "PrintStatus": str(fields.get("PrintStatus", "NotSet")),
                "LinkedTxn": [],
                "domain": "QBO",
                "sparse": False,
                "MetaData": {"CreateTime": stamp, "LastUpdatedTime": stamp},
            }
        )
        handled = {"Line", "TotalAmt", "Balance", "TxnDate", "DueDate", "DocNumber", "CustomerRef"}
        for key, value in fields.items():
            if key in handled or key in _READ_ONLY:
                continue
            data[key] = copy.deepcopy(value)
        _delivery(data, self._clock())
        shapes.set_home_amounts(data)
        return data

    # ---------------------------------------------------------------- seeding
    def seed(
        self,
        customers: int,
        invoices_per_customer: int,
        customer_names: Sequence[str] | None = None,
        notify: bool = False,
    ) -> dict[str, int]:
        """Bulk-create customers and open invoices quickly (benchmark fixtures).

        Invoices are built directly rather than through ``create_invoice`` so
        100,000 of them take well under a second or two. Every object still
        gets its own change-log entry (so CDC and ``LastUpdatedTime`` queries
        see them) but, unless ``notify``, no webhooks - nobody wants 100k
        notifications from a fixture.
        """
        if customers < 0 or invoices_per_customer < 0:
            raise _invalid("customers", "counts must not be negative")
        names = list(customer_names or [])
        created_customers: list[str] = []
        for index in range(customers):
            base = names[index] if index < len(names) else f"Customer {self._next_id[CUSTOMER]}"
            name = base
            suffix = 2
            while name.casefold() in self._names:
                name = f"{base} ({suffix})"
                suffix += 1
            address = {
                "Line1": f"{100 + index} Main Street",
                "City": "Mountain View",
                "CountrySubDivisionCode": "CA",
                "PostalCode": "94043",
            }
            created = self.create_customer(
                {
                    "DisplayName": name,
                    "CompanyName": name,
                    "PrimaryEmailAddr": {"Address": f"accounts{index + 1}@example.com"},
                    "BillAddr": address,
                    "ShipAddr": address,
                },
                notify=notify,
            )
            created_customers.append(created["Id"])
        if invoices_per_customer == 0 or not created_customers:
            return {"customers": len(created_customers), "invoices": 0}

        if customers * invoices_per_customer < _BULK_SEED:
            made = self._seed_invoices(created_customers, invoices_per_customer, notify)
            return {"customers": len(created_customers), "invoices": made}
        gc_was_enabled = gc.isenabled()
        gc.disable()  # 100k fresh dicts would trigger many pointless full collections
        try:
            made = self._seed_invoices(created_customers, invoices_per_customer, notify)
        finally:
            # Park the new objects outside the collector's generations: they are
            # acyclic and long-lived, and rescanning ~2M of them costs ~0.3 s.
            gc.freeze()
            if gc_was_enabled:
                gc.enable()
        return {"customers": len(created_customers), "invoices": made}

    def _seed_invoices(self, customer_ids: list[str], per_customer: int, notify: bool) -> int:
        store = self.entities[INVOICE]
        by_customer = self.invoices_by_customer
        latest = self._latest_seq[INVOICE]
        customers_store = self.entities[CUSTOMER]
        tick = self._change_clock.tick
        time_text = self._time_text
        txn = company_date(self._clock())
        dates = [
            ((txn - timedelta(days=k)).isoformat(), (txn - timedelta(days=k - 30)).isoformat())
            for k in range(60)
        ]
        amounts = [Decimal(10000 + (i * 7919) % 90000).scaleb(-2) for i in range(997)]
        n_amounts = len(amounts)
        next_id = self._next_id[INVOICE]
        made = 0
        for customer_id in customer_ids:
            customer = customers_store[customer_id].data
            ref = {"value": customer_id, "name": customer["DisplayName"]}
            # Shared between the customer's invoices: every write deep-copies first.
            header = shapes.invoice_defaults(customer)
            bucket = by_customer.setdefault(customer_id, {})
            balance_sum = ZERO
            for k in range(per_customer):
                entity_id = str(next_id)
                amount = amounts[next_id % n_amounts]
                ts, seq = tick()
                stamp = time_text(ts)
                txn_date, due_date = dates[k % 60]
                data: Entity = {
                    **header,
                    "Id": entity_id,
                    "SyncToken": "0",
                    "DocNumber": str(1000 + next_id),
                    "TxnDate": txn_date,
                    "DueDate": due_date,
                    "CustomerRef": ref,
                    "CurrencyRef": USD,
                    "Line": _default_lines(amount),
                    "TxnTaxDetail": {"TotalTax": ZERO},
                    "TotalAmt": amount,
                    "Balance": amount,
                    "Deposit": ZERO,
                    "ApplyTaxAfterDiscount": False,
                    "EmailStatus": "NotSet",
                    "PrintStatus": "NotSet",
                    "LinkedTxn": [],
                    "domain": "QBO",
                    "sparse": False,
                    "MetaData": {"CreateTime": stamp, "LastUpdatedTime": stamp},
                }
                store[entity_id] = Stored(data, ts, ts)
                bucket[entity_id] = None
                balance_sum += amount
                latest[entity_id] = seq
                change = Change(seq, ts, INVOICE, entity_id, "Create")
                self._log.append(change)
                self._log_ts.append(ts)
                if notify and self._listener is not None:
                    self._listener(self.realm_id, change)
                next_id += 1
                made += 1
            customer["Balance"] += balance_sum
            customer["BalanceWithJobs"] = customer["Balance"]
        self._next_id[INVOICE] = next_id
        self._values_cache.pop(INVOICE, None)
        return made

    # --------------------------------------------------------------- plumbing
    def _allocate_address_id(self) -> str:
        address_id = self._next_address_id
        self._next_address_id += 1
        return str(address_id)

    def _allocate_id(self, entity: str) -> str:
        entity_id = self._next_id[entity]
        self._next_id[entity] = entity_id + 1
        return str(entity_id)

    def _insert(self, entity: str, entity_id: str, data: Entity, ts: float) -> None:
        self.entities[entity][entity_id] = Stored(data, ts, ts)
        self._values_cache.pop(entity, None)
        if entity == INVOICE:
            self.invoices_by_customer.setdefault(data["CustomerRef"]["value"], {})[entity_id] = None

    def _bump(self, data: Entity, stored: Stored, ts: float) -> None:
        data["SyncToken"] = str(int(stored.data.get("SyncToken", "0")) + 1)
        data["MetaData"] = {
            "CreateTime": stored.data["MetaData"]["CreateTime"],
            "LastUpdatedTime": self._time_text(ts),
        }
        stored.data = data
        stored.updated_ts = ts

    def _check_sync_token(self, entity: str, stored: Stored, fields: Mapping[str, Any]) -> None:
        sent = fields.get("SyncToken")
        if sent is not None and str(sent) != stored.data["SyncToken"]:
            raise _stale(entity, stored.data["Id"], sent, stored.data["SyncToken"])

    def _adjust_balance(self, customer_id: str, delta: Decimal) -> None:
        if not delta:
            return
        customer = self.entities[CUSTOMER].get(customer_id)
        if customer is None:
            return
        customer.data["Balance"] = customer.data["Balance"] + delta
        customer.data["BalanceWithJobs"] = customer.data["Balance"]

    def _record(self, change: Change, notify: bool) -> None:
        self._latest_seq[change.entity][change.entity_id] = change.seq
        self._log.append(change)
        self._log_ts.append(change.ts)
        if notify and self._listener is not None:
            self._listener(self.realm_id, change)


def _delivery(invoice: Entity, now: float) -> None:
    """QBO records when an invoice was emailed; it has no ``DeliveryInfo`` before that."""
    if invoice.get("EmailStatus") == "EmailSent" and "DeliveryInfo" not in invoice:
        invoice["DeliveryInfo"] = {"DeliveryType": "Email", "DeliveryTime": format_entity_time(now)}


def _ref(customer: Stored) -> dict[str, str]:
    return {"value": customer.data["Id"], "name": customer.data["DisplayName"]}


def _explicit_total(fields: Mapping[str, Any], line_total: Decimal) -> Decimal:
    """An explicit ``TotalAmt`` wins over the sum of the lines (QBO trusts the lines
    but the admin API lets tests create deliberately inconsistent invoices)."""
    if "TotalAmt" in fields:
        return to_decimal(fields["TotalAmt"], "TotalAmt")
    return line_total


def _default_lines(total: Decimal) -> list[Entity]:
    """The single "Services" line QBO shows for a simple one-amount invoice."""
    return [
        {
            "Id": "1",
            "LineNum": 1,
            "Description": DEFAULT_ITEM["name"],
            "Amount": total,
            "DetailType": "SalesItemLineDetail",
            "SalesItemLineDetail": {
                "ItemRef": dict(DEFAULT_ITEM),
                "Qty": 1,
                "UnitPrice": total,
                "TaxCodeRef": dict(shapes.NON_TAXABLE),
            },
        },
        {"Amount": total, "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}},
    ]


def _normalise_lines(raw: object) -> tuple[list[Entity], Decimal]:
    """Number the sales lines, fill Amount from Qty x UnitPrice, append the subtotal."""
    if not isinstance(raw, list):
        raise _invalid("Line", "Line must be a list")
    lines: list[Entity] = []
    total = ZERO
    for item in _mappings(raw):
        detail_type = item.get("DetailType", "SalesItemLineDetail")
        if detail_type == "SubTotalLineDetail":
            continue  # QBO recomputes the subtotal line
        line = copy.deepcopy(dict(item))
        line["DetailType"] = detail_type
        detail = line.get(detail_type)
        if not isinstance(detail, dict):
            detail = {}
            line[detail_type] = detail
        if detail_type == "SalesItemLineDetail":
            detail.setdefault("ItemRef", dict(DEFAULT_ITEM))
            if "Qty" in detail:
                detail["Qty"] = to_decimal(detail["Qty"], "Qty")
            if "UnitPrice" in detail:
                detail["UnitPrice"] = to_decimal(detail["UnitPrice"], "UnitPrice")
        if "Amount" in line:
            amount = to_decimal(line["Amount"], "Amount")
        elif "Qty" in detail and "UnitPrice" in detail:
            amount = detail["Qty"] * detail["UnitPrice"]
        else:
            raise _required("Line.Amount")
        line["Amount"] = amount
        if detail_type == "SalesItemLineDetail":
            shapes.sales_line_defaults(line)
        number = len(lines) + 1
        line["Id"] = str(number)
        line["LineNum"] = number
        lines.append(line)
        total += amount
    lines.append({"Amount": total, "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}})
    return lines, total


def _mappings(items: Iterable[object]) -> Iterator[Mapping[str, Any]]:
    for item in items:
        if not isinstance(item, Mapping):
            raise _invalid("Line", "each Line must be an object")
        yield item
