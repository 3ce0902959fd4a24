"""Which offset of each partition may be committed while records finish out of order.

The sync worker runs several realms' commands at once, and the api's projector projects the
events it read ahead a company at a time, so a partition's records complete in any order.
Kafka keeps one committed offset per partition, meaning "everything below is done". The
tracker therefore hands out, per partition, the lowest offset that is not yet done (the
key-ordered mode of Confluent's Parallel Consumer works the same way): a crash redelivers
every record from there on, done or not, and loses none (docs/design.md invariants 5 and 8).
Records done above that offset are redelivered too; handlers are idempotent.

Pure bookkeeping, no I/O: the consumer feeds it what it receives and what finishes, and commits
what `committable` returns.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Generic, TypeVar

P = TypeVar("P")  # a partition (aiokafka's TopicPartition in the worker)


@dataclass
class _Partition:
    pending: set[int] = field(default_factory=set)
    # A min-heap over `pending` that may hold offsets already done (removed lazily).
    heap: list[int] = field(default_factory=list)
    next_offset: int | None = None  # one past the highest offset received
    committed: int | None = None  # what Kafka acknowledged (or None: nothing yet by us)


class OffsetTracker(Generic[P]):
    """Per partition: the records received and not yet done, and the safe commit point."""

    def __init__(self) -> None:
        self._partitions: dict[P, _Partition] = {}

    def received(self, partition: P, offset: int) -> bool:
        """A record was handed to the worker; it is not done until `done` says so.

        False when that offset is already in flight here (a repeat to ignore). An offset below
        what was received before (the position moved back without a `forget`) is simply taken
        as in flight again: the commit point can only stay at or below it.
        """
        state = self._partitions.setdefault(partition, _Partition())
        if offset in state.pending:
            return False
        state.pending.add(offset)
        heapq.heappush(state.heap, offset)
        if state.next_offset is None or offset >= state.next_offset:
            state.next_offset = offset + 1
        return True

    def done(self, partition: P, offset: int) -> None:
        """The record's work is durable. Unknown partitions (revoked meanwhile) are ignored."""
        state = self._partitions.get(partition)
        if state is not None:
            state.pending.discard(offset)

    def in_flight(self, partition: P) -> int:
        """Records received and not yet done: what bounds the worker's memory per partition."""
        state = self._partitions.get(partition)
        return len(state.pending) if state is not None else 0

    def position(self, partition: P) -> int | None:
        """The offset to commit: the lowest record not done, or one past the highest received."""
        state = self._partitions.get(partition)
        if state is None:
            return None
        while state.heap and state.heap[0] not in state.pending:
            heapq.heappop(state.heap)
        if state.heap:
            return state.heap[0]
        return state.next_offset

    def committable(self) -> dict[P, int]:
        """Positions that moved past what was last committed."""
        result: dict[P, int] = {}
        for partition, state in self._partitions.items():
            position = self.position(partition)
            if position is not None and (state.committed is None or position > state.committed):
                result[partition] = position
        return result

    def committed(self, offsets: dict[P, int]) -> None:
        """Kafka acknowledged these commits."""
        for partition, offset in offsets.items():
            state = self._partitions.get(partition)
            if state is not None and (state.committed is None or offset > state.committed):
                state.committed = offset

    def forget(self, partition: P) -> None:
        """The partition was revoked: whatever it held is the next owner's to redeliver."""
        self._partitions.pop(partition, None)

    def partitions(self) -> list[P]:
        return list(self._partitions)
