"""CommandWorker's concurrency with fakes of the consumer, the producer, the command log and the
handlers, and fake time: realms side by side, one realm in order, commits only up to the lowest
unfinished record, pause/resume, rebalance mid-flight, poison input among concurrent commands,
throttled realms deferred (docs/design.md invariants 5 and 8). Real Kafka: test_worker_realms.py."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

from aiokafka import TopicPartition
from pymongo.errors import AutoReconnect

from services.common.messages import Command, RefreshInvoices
from services.sync.handlers import Dependencies
from services.sync.quickbooks.errors import QboThrottled, QboUnavailable
from services.sync.scheduler import Outcome
from services.sync.worker import CommandWorker, WorkerOptions
from tests.fakes import FakeTime, settle
from tests.unit.sync.fakes import TOPIC, FakeCommandLog, FakeConsumer, FakeProducer

P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class FakeHandlers(CommandWorker):
    """The worker with its handlers replaced: a command waits on its gate (open unless the
    test closed it) and raises the failures planned for it, in order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.failures: dict[str, list[Exception]] = {}
        self.polled: list[str] = []

    def hold(self, command_id: str) -> None:
        self.gates[command_id] = asyncio.Event()

    async def release(self, command_id: str) -> None:
        self.gates[command_id].set()
        await settle()

    async def dispatch(self, command: Command, owed: bool = True) -> dict[str, Any]:
        self.started.append(command.command_id)
        gate = self.gates.get(command.command_id)
        if gate is not None:
            await gate.wait()
        planned = self.failures.get(command.command_id)
        if planned:
            raise planned.pop(0)
        return {"fetched": 0, "stored": 0, "events": 0}

    async def poll_realm(self, realm_id: str) -> Outcome:
        self.polled.append(realm_id)
        return None


class World:
    def __init__(self, **options: Any) -> None:
        self.time = FakeTime()
        self.consumer = FakeConsumer()
        self.producer = FakeProducer()
        self.log = FakeCommandLog()
        deps = SimpleNamespace(
            clock=lambda: EPOCH + timedelta(seconds=self.time.now),
            vault=SimpleNamespace(active_realms=self._active_realms),
        )
        self.realms: list[str] = []
        self.worker = FakeHandlers(
            self.consumer,
            self.producer,
            cast(Dependencies, deps),
            self.log,
            replace(WorkerOptions(TOPIC, "dlq", retry_base_delay_s=1.0), **options),
            sleep=self.time.sleep,
            clock=self.time.clock,
        )
        self.worker.subscribe()

    async def _active_realms(self) -> list[str]:
        return self.realms

    def command(self, tp: TopicPartition, realm: str, hold: bool = False) -> tuple[str, int]:
        command = RefreshInvoices(realm_id=realm, issued_by="api", local_customer_id="c-1")
        if hold:
            self.worker.hold(command.command_id)
        return command.command_id, self.consumer.add(tp, realm, command.to_bytes())

    async def poll(self) -> None:
        await self.worker.poll_once()
        await settle()
        await self.worker.commit()


async def test_realms_run_concurrently_and_commits_stop_at_the_lowest_unfinished() -> None:
    w = World()
    slow, _ = w.command(P0, "1001", hold=True)
    fast_b, _ = w.command(P0, "1002")
    fast_c, _ = w.command(P0, "1003")

    await w.poll()

    assert w.worker.started == [slow, fast_b, fast_c]  # all at once, none waited for A
    assert w.log.status(fast_b) == w.log.status(fast_c) == "succeeded"
    assert w.consumer.committed.get(P0, 0) == 0  # B and C are done, A is not: nothing passes A
    await w.worker.release(slow)
    await w.poll()
    assert w.consumer.committed[P0] == 3


async def test_one_realms_commands_run_in_order() -> None:
    w = World()
    first, _ = w.command(P0, "1001", hold=True)
    second, _ = w.command(P0, "1001")

    await w.poll()
    assert w.worker.started == [first]
    await w.worker.release(first)
    await w.poll()
    assert w.worker.started == [first, second]
    assert w.consumer.committed[P0] == 2


async def test_concurrency_1_is_the_one_at_a_time_worker() -> None:
    w = World(concurrency=1)
    slow, _ = w.command(P0, "1001", hold=True)
    other, _ = w.command(P1, "1002")

    await w.poll()
    assert w.worker.started == [slow]
    await w.worker.release(slow)
    assert w.worker.started == [slow, other]


async def test_a_partition_with_too_much_unfinished_work_is_paused_then_resumed() -> None:
    w = World(max_in_flight_per_partition=2)
    head, _ = w.command(P0, "1001", hold=True)
    w.command(P0, "1001")
    w.command(P0, "1001")
    other, _ = w.command(P1, "1002")

    await w.poll()
    assert w.consumer.paused() == {P0}
    late, _ = w.command(P0, "1003")
    extra, _ = w.command(P1, "1004")
    await w.poll()
    assert late not in w.worker.started  # not even read while paused
    assert extra in w.worker.started  # the other partition goes on
    assert w.log.status(other) == "succeeded"

    await w.worker.release(head)
    await w.poll()  # the backlog drained: resumed
    assert w.consumer.paused() == set()
    await w.poll()
    assert late in w.worker.started
    assert w.consumer.committed == {P0: 4, P1: 2}


async def test_rebalance_waits_for_running_work_then_commits_it() -> None:
    w = World(rebalance_grace_s=30)
    running, _ = w.command(P0, "1001", hold=True)
    queued, _ = w.command(P0, "1001")
    await w.poll()

    async def finish_soon() -> None:
        await settle()
        w.worker.gates[running].set()

    helper = asyncio.create_task(finish_soon())
    await w.consumer.revoke({P0})
    await helper
    assert w.log.status(running) == "succeeded"
    assert w.consumer.committed[P0] == 1  # done within the grace; the queued one is not
    assert queued not in w.worker.started
    assert w.worker.offsets.position(P0) is None  # forgotten: the next owner redelivers


async def test_rebalance_abandons_work_past_the_grace_without_committing_it() -> None:
    w = World(rebalance_grace_s=0)
    stuck, _ = w.command(P0, "1001", hold=True)
    done_p0, _ = w.command(P0, "1002")
    w.command(P1, "1003")
    await w.poll()
    assert w.log.status(done_p0) == "succeeded"

    await w.consumer.revoke({P0})

    assert w.log.status(stuck) == "running"  # cancelled mid-way: not finished, not committed
    assert w.consumer.committed.get(P0, 0) == 0  # never past the abandoned record
    assert w.consumer.committed[P1] == 1  # the partition kept goes on
    await w.worker.release(stuck)  # nothing of it is reported any more
    await w.poll()
    assert w.consumer.committed.get(P0, 0) == 0


async def test_poison_record_among_concurrent_ones_is_dead_lettered_alone() -> None:
    w = World()
    slow, _ = w.command(P0, "1001", hold=True)
    w.consumer.add(P0, "1002", b"{not json")
    fine, _ = w.command(P0, "1003")

    await w.poll()

    assert [value for _, value, _ in w.producer.sent] == [b"{not json"]
    assert w.log.status(fine) == "succeeded"
    assert w.consumer.committed.get(P0, 0) == 0
    await w.worker.release(slow)
    await w.poll()
    assert w.consumer.committed[P0] == 3


async def test_a_throttled_realm_is_deferred_while_other_realms_go_on() -> None:
    w = World(throttle_pause_s=60)
    throttled, _ = w.command(P0, "1001")
    w.worker.failures[throttled] = [QboThrottled("throttled", status=429)]
    later, _ = w.command(P0, "1001")
    other, _ = w.command(P0, "1002")

    await w.poll()

    doc = w.log.docs[throttled]
    assert doc["status"] == "throttled"
    assert doc["resumes_at"] == EPOCH + timedelta(seconds=w.time.now + 60)
    assert w.log.status(other) == "succeeded"
    assert later not in w.worker.started  # the realm's order holds
    assert w.consumer.committed.get(P0, 0) == 0
    await w.time.advance(60)
    await w.poll()
    assert w.log.history[throttled] == ["running", "throttled", "running", "succeeded"]
    assert w.log.status(later) == "succeeded"
    assert w.consumer.committed[P0] == 3
    assert w.producer.sent == []  # nothing dead-lettered


async def test_five_minutes_of_throttling_dead_letters_nothing() -> None:
    w = World(throttle_pause_s=60, throttle_give_up_s=3600)
    throttled, _ = w.command(P0, "1001")
    w.worker.failures[throttled] = [QboThrottled("throttled", status=429) for _ in range(5)]
    others = [w.command(P1, f"20{i:02d}")[0] for i in range(5)]
    await w.poll()
    for _ in range(5):
        others.append(w.command(P1, "2100")[0])
        await w.time.advance(60)
        await w.poll()
    assert w.log.status(throttled) == "succeeded"
    assert w.log.history[throttled].count("throttled") == 5
    assert all(w.log.status(c) == "succeeded" for c in others)
    assert w.producer.sent == []
    assert w.worker.deferred == 5


async def test_a_command_throttled_past_the_give_up_time_is_dead_lettered_once() -> None:
    w = World(throttle_pause_s=60, throttle_give_up_s=300)
    throttled, _ = w.command(P0, "1001")
    w.worker.failures[throttled] = [QboThrottled("throttled", status=429) for _ in range(50)]
    await w.poll()
    for _ in range(6):
        await w.time.advance(60)
        await w.poll()
    assert w.log.status(throttled) == "failed"
    assert "throttled by QBO for 300 s" in w.log.docs[throttled]["reason"]
    assert len(w.producer.sent) == 1
    assert w.producer.sent[0][2]["dlq.error_type"] == b"QboThrottled"
    assert w.consumer.committed[P0] == 1


async def test_cdc_polls_run_in_their_realms_lane_and_do_not_pile_up() -> None:
    w = World()
    w.realms = ["1001", "1002"]
    running, _ = w.command(P0, "1001", hold=True)
    await w.poll()

    assert await w.worker.poll_owned_realms() == 2
    await settle()
    assert w.worker.polled == ["1002"]  # 1001's poll waits behind 1001's command
    assert await w.worker.poll_owned_realms() == 1  # 1001's is still waiting: not doubled
    await settle()
    await w.worker.release(running)
    assert w.worker.polled == ["1002", "1002", "1001"]


async def test_records_polled_while_a_partition_is_handed_over_are_left_to_the_next_owner() -> None:
    w = World(rebalance_grace_s=30)
    running, _ = w.command(P0, "1001", hold=True)
    await w.poll()
    revoking = asyncio.create_task(w.consumer.revoke({P0}))
    await settle()
    late, _ = w.command(P0, "1002")
    await w.worker.poll_once()  # the broker still hands out P0 during the grace
    await settle()
    assert late not in w.worker.started
    await w.worker.release(running)
    await revoking
    assert w.consumer.committed[P0] == 1  # only what was taken and done
    assert w.worker.offsets.position(P0) is None


async def test_a_qbo_failure_is_dead_lettered_at_once_without_another_attempt() -> None:
    """docs/design.md invariant 13: the QBO client already retried the request."""
    w = World()
    failing, _ = w.command(P0, "1001")
    w.worker.failures[failing] = [QboUnavailable("server error", status=503) for _ in range(3)]

    await w.poll()

    assert w.worker.started == [failing]  # one attempt: the client's retries are not multiplied
    assert w.log.history[failing] == ["running", "failed"]
    assert w.log.docs[failing]["reason"] == "QboUnavailable: HTTP 503: server error"
    assert [headers["dlq.error_type"] for _, _, headers in w.producer.sent] == [b"QboUnavailable"]
    assert w.consumer.committed[P0] == 1


async def test_a_database_failure_is_retried_with_backoff_then_dead_lettered() -> None:
    w = World(max_attempts=3, retry_base_delay_s=1.0)
    failing, _ = w.command(P0, "1001")
    w.worker.failures[failing] = [AutoReconnect("primary stepped down") for _ in range(3)]

    await w.poll()
    assert w.worker.started == [failing]
    await w.time.advance(1)
    assert w.worker.started == [failing] * 2
    await w.time.advance(2)
    assert w.worker.started == [failing] * 3

    assert w.log.status(failing) == "failed"
    reason = w.log.docs[failing]["reason"]
    assert reason == "gave up after 3 attempts: AutoReconnect: primary stepped down"
    assert [headers["dlq.reason"] for _, _, headers in w.producer.sent] == [reason.encode()]


async def test_a_database_failure_that_passes_is_not_dead_lettered() -> None:
    w = World(max_attempts=3, retry_base_delay_s=1.0)
    flaky, _ = w.command(P0, "1001")
    w.worker.failures[flaky] = [AutoReconnect("primary stepped down")]

    await w.poll()
    await w.time.advance(1)

    assert w.log.history[flaky] == ["running", "running", "succeeded"]
    assert w.producer.sent == []
