"""What the chaos run did to QuickBooks: its customers, and which invoices it deleted.

The emulator answers queries only for live invoices; a deleted invoice is simply gone. The
ledger remembers deletions (and which customer the invoice belonged to) so the audit can expect
them to be shown as deleted; everything else the audit reads from the emulator itself.
An invoice the run created and deleted may never have been seen alive by qbo-sync (QuickBooks
names no customer in a deletion), so for those "not shown" is as right as "shown as deleted".
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Customer:
    realm_id: str
    qbo_customer_id: str

    @property
    def local_id(self) -> str:
        return f"chaos-{self.realm_id[-4:]}-{self.qbo_customer_id}"


@dataclass
class Ledger:
    customers: list[Customer]
    live: dict[Customer, list[str]] = field(default_factory=dict)
    deleted: dict[Customer, set[str]] = field(default_factory=dict)
    created_by_run: set[tuple[Customer, str]] = field(default_factory=set)
    changes: int = 0

    def pick(self, rng: random.Random, customer: Customer) -> str | None:
        ids = self.live.get(customer, [])
        return rng.choice(ids) if ids else None

    def created(self, customer: Customer, invoice_id: str) -> None:
        self.live.setdefault(customer, []).append(invoice_id)
        self.created_by_run.add((customer, invoice_id))
        self.changes += 1

    def removed(self, customer: Customer, invoice_id: str) -> None:
        self.live[customer].remove(invoice_id)
        self.deleted.setdefault(customer, set()).add(invoice_id)
        self.changes += 1
