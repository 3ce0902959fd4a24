"""OffsetTracker: a partition's commit point never passes a record that is not done
(docs/design.md invariants 5 and 8)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.common.offsets import OffsetTracker


def test_out_of_order_completion_commits_only_up_to_the_lowest_unfinished() -> None:
    t: OffsetTracker[str] = OffsetTracker()
    for offset in range(10, 15):
        assert t.received("p0", offset)
    t.done("p0", 12)
    t.done("p0", 13)
    assert t.position("p0") == 10
    t.done("p0", 10)
    assert t.position("p0") == 11
    t.done("p0", 11)
    assert t.position("p0") == 14
    t.done("p0", 14)
    assert t.position("p0") == 15
    assert t.in_flight("p0") == 0


def test_committable_lists_only_positions_that_moved() -> None:
    t: OffsetTracker[str] = OffsetTracker()
    t.received("p0", 0)
    t.received("p1", 7)
    t.done("p1", 7)
    assert t.committable() == {"p0": 0, "p1": 8}
    t.committed({"p0": 0, "p1": 8})
    assert t.committable() == {}
    t.done("p0", 0)
    assert t.committable() == {"p0": 1}


def test_offset_gaps_do_not_hold_the_commit_back() -> None:
    # Transaction markers and compaction leave holes in a partition's offsets.
    t: OffsetTracker[str] = OffsetTracker()
    t.received("p0", 5)
    t.received("p0", 9)
    t.done("p0", 9)
    assert t.position("p0") == 5
    t.done("p0", 5)
    assert t.position("p0") == 10


def test_a_repeat_is_refused_and_a_forgotten_partition_commits_nothing() -> None:
    t: OffsetTracker[str] = OffsetTracker()
    assert t.received("p0", 3)
    assert not t.received("p0", 3)
    t.forget("p0")
    t.done("p0", 3)  # finished after its partition was revoked
    assert t.committable() == {}
    assert t.position("p0") is None


def test_an_offset_below_the_received_ones_holds_the_commit_at_it() -> None:
    t: OffsetTracker[str] = OffsetTracker()
    t.received("p0", 10)
    t.done("p0", 10)
    t.received("p0", 4)  # the position moved back: it is in flight again
    assert t.position("p0") == 4
    t.done("p0", 4)
    assert t.position("p0") == 11


@given(st.permutations(list(range(30))), st.integers(min_value=0, max_value=30))
def test_never_commits_past_a_record_not_done(order: list[int], finished: int) -> None:
    t: OffsetTracker[str] = OffsetTracker()
    for offset in range(30):
        t.received("p", offset)
    done = set(order[:finished])
    for offset in order[:finished]:
        t.done("p", offset)
    position = t.position("p")
    assert position is not None
    assert all(o in done for o in range(position))  # everything below is done
    assert position == 30 or position not in done  # and it stops at the first that is not
