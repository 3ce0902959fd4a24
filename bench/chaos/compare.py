"""The audit: the api's read model against QuickBooks (the emulator), invoice by invoice.

Pure code. An invoice is identified by (realm, customer, invoice id), so one shown under the
wrong customer counts as lost for one and unexpected for the other.
- lost: QuickBooks has it (live, or deleted by the run), the api does not show it;
- duplicated: the api lists it more than once;
- stale: the api shows it with another balance, total, status or deleted flag;
- unexpected: the api shows an invoice QuickBooks does not have for that customer.
Invoices in `optional` (created and deleted during the run) may be missing without counting.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

Key = tuple[str, str, str]  # realm id, QBO customer id, invoice id


@dataclass(frozen=True)
class Shown:
    """The facts the audit compares; amounts are None where QuickBooks has none (deleted)."""

    status: str
    deleted: bool
    total: Decimal | None
    balance: Decimal | None


def expected_from_qbo(invoice: Mapping[str, Any]) -> Shown:
    """What the api must show for a live QBO invoice (QBO's own rules, not the sync's code)."""
    total, balance = Decimal(str(invoice["TotalAmt"])), Decimal(str(invoice["Balance"]))
    voided = "voided" in str(invoice.get("PrivateNote") or "").lower() and total == 0
    status = "voided" if voided else "paid" if balance == 0 else "open"
    return Shown(status, False, total, balance)


DELETED = Shown("deleted", True, None, None)


def shown_by_api(row: Mapping[str, Any]) -> Shown:
    return Shown(
        str(row["status"]),
        bool(row["deleted"]),
        Decimal(str(row["total_amt"])),
        Decimal(str(row["balance"])),
    )


def _same(expected: Shown, actual: Shown) -> bool:
    if (expected.status, expected.deleted) != (actual.status, actual.deleted):
        return False
    if expected.total is None or expected.balance is None:
        return True  # a deletion has no amounts in QuickBooks to compare with
    return (expected.total, expected.balance) == (actual.total, actual.balance)


@dataclass
class Audit:
    expected: int = 0
    shown: int = 0
    lost: list[Key] = field(default_factory=list)
    duplicated: list[Key] = field(default_factory=list)
    stale: list[tuple[Key, Shown, Shown]] = field(default_factory=list)
    unexpected: list[Key] = field(default_factory=list)
    never_seen_alive: list[Key] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.stale or self.unexpected)

    def counts(self) -> dict[str, int]:
        return {
            "expected": self.expected,
            "shown": self.shown,
            "lost": len(self.lost),
            "duplicated": len(self.duplicated),
            "stale": len(self.stale),
            "unexpected": len(self.unexpected),
            "created+deleted, never shown (allowed)": len(self.never_seen_alive),
        }

    def examples(self, limit: int = 5) -> dict[str, list[str]]:
        return {
            "lost": [":".join(k) for k in self.lost[:limit]],
            "duplicated": [":".join(k) for k in self.duplicated[:limit]],
            "stale": [f"{':'.join(k)} expected {e} shown {a}" for k, e, a in self.stale[:limit]],
            "unexpected": [":".join(k) for k in self.unexpected[:limit]],
        }


def audit(
    expected: Mapping[Key, Shown],
    shown: Iterable[tuple[Key, Shown]],
    optional: AbstractSet[Key] = frozenset(),
) -> Audit:
    rows = list(shown)
    result = Audit(expected=len(expected), shown=len(rows))
    seen: dict[Key, Shown] = {}
    counts = Counter(key for key, _ in rows)
    for key, actual in rows:
        seen.setdefault(key, actual)
    result.duplicated = sorted(k for k, n in counts.items() if n > 1)
    for key, want in sorted(expected.items()):
        got = seen.get(key)
        if got is None and key in optional:
            result.never_seen_alive.append(key)
        elif got is None:
            result.lost.append(key)
        elif not _same(want, got):
            result.stale.append((key, want, got))
    result.unexpected = sorted(k for k in seen if k not in expected)
    return result
