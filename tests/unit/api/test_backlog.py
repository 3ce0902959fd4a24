"""The projector's backlog: a company with few events is in the next batch whatever the others
hold, and every invoice's events still come out once each, in offset order."""

from __future__ import annotations

import random
import zlib
from collections import Counter

from aiokafka import ConsumerRecord, TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from services.api.backlog import EventBacklog, Record, company_of, in_offset_order

TOPIC = "events"
PARTITIONS = 6


class Topic:
    """Records as a producer keyed by `<realm>:<invoice>` would lay them out."""

    def __init__(self) -> None:
        self.next_offset = [0] * PARTITIONS

    def record(self, realm: str, invoice: str) -> Record:
        key = f"{realm}:{invoice}".encode()
        partition = zlib.crc32(key) % PARTITIONS
        offset = self.next_offset[partition]
        self.next_offset[partition] += 1
        return ConsumerRecord(TOPIC, partition, offset, 0, 0, key, b"{}", None, len(key), 2, [])


def by_partition(records: list[Record]) -> list[Record]:
    """What `getmany` hands out: each partition's records in offset order."""
    return in_offset_order(records)


def test_a_small_companys_event_is_in_the_next_batch_behind_any_backlog() -> None:
    topic = Topic()
    big = [topic.record(f"big-{n % 50}", str(n)) for n in range(20_000)]
    idle = topic.record("idle", "1")
    backlog = EventBacklog()
    backlog.add(by_partition([*big, idle]))

    batch = backlog.take(500)

    assert idle in batch
    assert len(batch) == 500
    # The rest from as few companies as fit: one whole (400), the next in part.
    shares = Counter(company_of(r) for r in batch)
    assert shares["idle"] == 1 and sorted(shares.values()) == [1, 99, 400]
    assert len(backlog) == 20_001 - 500


def test_companies_are_taken_whole_from_the_smallest_and_the_next_in_part() -> None:
    topic = Topic()
    records = [topic.record("one", "1")]
    records += [topic.record("ten", str(n)) for n in range(10)]
    records += [topic.record("big-a", str(n)) for n in range(1000)]
    records += [topic.record("big-b", str(n)) for n in range(1000)]
    backlog = EventBacklog()
    backlog.add(by_partition(records))

    taken = backlog.take(101)
    again = backlog.take(1000)

    assert Counter(company_of(r) for r in taken) == {"one": 1, "ten": 10, "big-a": 90}
    # What is left of big-a is now the smallest, and goes first; its oldest events went first.
    assert Counter(company_of(r) for r in again) == {"big-a": 910, "big-b": 90}
    for partition in range(PARTITIONS):
        mine = [r.offset for r in records if company_of(r) == "big-a" and r.partition == partition]
        first = [r.offset for r in taken if company_of(r) == "big-a" and r.partition == partition]
        assert first == mine[: len(first)]


def test_every_event_comes_out_once_and_each_invoices_in_offset_order() -> None:
    rng = random.Random(7)
    topic = Topic()
    # Invoices with several versions each, interleaved across companies as a busy topic is.
    records = [
        topic.record(f"realm-{rng.randrange(8)}", str(rng.randrange(300))) for _ in range(5_000)
    ]
    backlog = EventBacklog()
    projected: list[Record] = []
    unread = list(records)
    while unread or backlog:
        # Read ahead a little at a time, as the projector does between batches.
        n = rng.randrange(1, 400)
        chunk, unread = unread[:n], unread[n:]
        backlog.add(by_partition(chunk))
        batch = in_offset_order(backlog.take(rng.randrange(1, 200)))
        # Like a batch out of time: per partition, everything from some offset on is left.
        cut = {TopicPartition(TOPIC, p): rng.randrange(1200) for p in range(PARTITIONS)}
        left = [r for r in batch if r.offset >= cut[TopicPartition(r.topic, r.partition)]]
        projected += [r for r in batch if r not in left]
        backlog.put_back(left)

    assert Counter(id(r) for r in projected) == Counter(id(r) for r in records)
    offsets: dict[bytes | None, list[int]] = {}
    for record in projected:
        offsets.setdefault(record.key, []).append(record.offset)
    assert all(seen == sorted(seen) for seen in offsets.values())


def test_events_of_partitions_given_up_are_dropped() -> None:
    topic = Topic()
    records = [topic.record(f"realm-{n % 3}", str(n)) for n in range(600)]
    backlog = EventBacklog()
    backlog.add(by_partition(records))
    gone = {TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)}

    backlog.drop(gone)

    rest = backlog.take(10_000)
    assert len(rest) == len([r for r in records if r.partition not in (0, 1)])
    assert not any(TopicPartition(r.topic, r.partition) in gone for r in rest)
    assert len(backlog) == 0


def test_a_record_without_a_realm_key_keeps_to_its_partition() -> None:
    record = ConsumerRecord(TOPIC, 3, 9, 0, 0, None, b"{}", None, 0, 2, [])
    assert company_of(record) == f"-partition:{TOPIC}:3"


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, PARTITIONS - 1),
            st.one_of(st.none(), st.binary(max_size=12), st.sampled_from([b"1:1", b"1:2", b"2:1"])),
        ),
        max_size=120,
    ),
    st.integers(1, 50),
)
def test_any_record_keys_still_come_out_once_each_in_offset_order_per_key(
    laid_out: list[tuple[int, bytes | None]], batch: int
) -> None:
    """Keys come from the topic, whoever wrote to it: none, not UTF-8 or without a realm, each
    record still comes out once, and the records of one key in offset order."""
    next_offset = [0] * PARTITIONS
    records = []
    for partition, key in laid_out:
        offset = next_offset[partition]
        next_offset[partition] += 1
        records.append(ConsumerRecord(TOPIC, partition, offset, 0, 0, key, b"{}", None, 0, 2, []))
    backlog = EventBacklog()
    backlog.add(by_partition(records))
    projected: list[Record] = []
    while backlog:
        projected += in_offset_order(backlog.take(batch))

    assert Counter(id(r) for r in projected) == Counter(id(r) for r in records)
    offsets: dict[tuple[int, bytes | None], list[int]] = {}
    for record in projected:
        offsets.setdefault((record.partition, record.key), []).append(record.offset)
    assert all(seen == sorted(seen) for seen in offsets.values())
