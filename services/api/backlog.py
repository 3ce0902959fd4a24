"""Events read ahead of the projector, handed out smallest company first.

A refresh of a large company reaches the events topic as thousands of events, spread over
every partition; a small company's one change lands behind them in its partition. Projected in
offset order, that change waited for the whole backlog (seconds, with 50 companies
refreshing). So the projector reads ahead, up to a bound, and each batch takes the companies
with the fewest waiting events first, each whole, and fills the rest with the oldest events of
the next one (shortest first): a company with a few events is in the next batch whatever the
others hold (docs/design.md invariant 14), and a batch still spans few companies, whose listing
revisions it renews one write each (`ReadInvoices.apply_many`). A large company's events wait
while smaller ones arrive, at most until the read-ahead is full and nothing new is read.

Order: an invoice's events share a key, hence a partition and a company. A company's events
are kept in the order they were read and handed out oldest first, so an invoice's versions are
still projected in offset order; the projector commits a partition only up to its lowest event
not yet projected (`services/common/offsets.py`). Pure bookkeeping, no I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable
from typing import TypeAlias

from aiokafka import ConsumerRecord, TopicPartition

Record: TypeAlias = ConsumerRecord[bytes, bytes]


def company_of(record: Record) -> str:
    """The realm an event belongs to, from its key (`<realm_id>:<invoice_id>`). A record
    without such a key is grouped with its partition, so it keeps its place there."""
    key = record.key
    if isinstance(key, bytes):
        realm, colon, _ = key.partition(b":")
        if colon:
            return realm.decode("utf-8", "replace")
    return f"-partition:{record.topic}:{record.partition}"


def _partition(record: Record) -> TopicPartition:
    return TopicPartition(record.topic, record.partition)


def in_offset_order(records: Iterable[Record]) -> list[Record]:
    """A batch as `Projector.project` takes it: each partition's records in offset order."""
    return sorted(records, key=lambda r: (r.topic, r.partition, r.offset))


class EventBacklog:
    """Per company, the events read and not yet handed out, oldest first."""

    def __init__(self) -> None:
        # Insertion order: the company waiting longest comes first among equals.
        self._companies: dict[str, deque[Record]] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, records: Iterable[Record]) -> None:
        """Events just read, each partition's in offset order."""
        for record in records:
            self._companies.setdefault(company_of(record), deque()).append(record)
            self._size += 1

    def take(self, limit: int) -> list[Record]:
        """Up to `limit` events: whole companies from the one with the fewest waiting up, the
        first that does not fit in part (its oldest events), so a batch spans few companies."""
        waiting = sorted(self._companies.items(), key=lambda item: len(item[1]))
        taken: list[Record] = []
        for company, events in waiting:
            room = limit - len(taken)
            if room <= 0:
                break
            taken.extend(events.popleft() for _ in range(min(room, len(events))))
            if not events:
                del self._companies[company]
        self._size -= len(taken)
        return taken

    def put_back(self, records: Iterable[Record]) -> None:
        """Events taken but not projected (left for later): ahead of their company's others,
        in the order they were taken."""
        for record in reversed(list(records)):
            self._companies.setdefault(company_of(record), deque()).appendleft(record)
            self._size += 1

    def drop(self, partitions: Collection[TopicPartition]) -> None:
        """Forget the events of partitions this consumer no longer owns."""
        for company in list(self._companies):
            events = self._companies[company]
            kept = deque(r for r in events if _partition(r) not in partitions)
            self._size -= len(events) - len(kept)
            if kept:
                self._companies[company] = kept
            else:
                del self._companies[company]
