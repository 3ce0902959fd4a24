"""The command consumer: one Kafka consumer-group member of the sync service.

Guarantees (docs/design.md invariants 1, 5 and 8):
- commands are keyed by realm id, so the member that owns a partition makes every QBO call of
  its realms: it also runs their CDC polls, so token refresh and the rate budget stay in one
  process;
- realms run concurrently (`RealmScheduler`, at most `concurrency` jobs) and one realm's
  commands run in order; polling goes on meanwhile, and a partition with too much unfinished
  work is paused rather than read further;
- a partition's offset is committed only up to its lowest record not yet done (`OffsetTracker`),
  so a crash means redelivery, never loss; handlers are idempotent. A revoked partition's
  running work is waited for (bounded), then abandoned uncommitted;
- a realm that QBO keeps throttling is paused and its command deferred (status `throttled`),
  not failed; a command that cannot be parsed, fails in QBO after the client's retries, fails
  otherwise for good, keeps failing in our own infrastructure (`TRANSIENT`, retried up to
  `max_attempts`), or stays throttled longer than `throttle_give_up_s` goes to the dead-letter
  topic with the reason and the original bytes (invariant 13: who retries what).
- a command runs once: one whose record says it finished is not run again (a duplicate publish
  costs no QBO reads), while one left `running` by a crash is, so its work is completed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

import structlog
from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    MessageSizeTooLargeError,
)
from aiokafka.partitioner import DefaultPartitioner
from pymongo.errors import PyMongoError

from services.common import tracing
from services.common.kafka import RevokeFirst
from services.common.messages import (
    Command,
    MapCustomer,
    RefreshInvoices,
    SyncChanges,
    parse_command,
)
from services.common.offsets import OffsetTracker
from services.common.schemas import MessageInvalid
from services.common.statuses import CommandStatus
from services.sync import handlers, metrics
from services.sync.handlers import CommandRejected, Dependencies
from services.sync.metrics import SyncMetrics
from services.sync.ports import CommandRecords
from services.sync.quickbooks.errors import (
    QboError,
    QboRequestError,
    QboThrottled,
    ReauthRequired,
)
from services.sync.scheduler import Deferred, Job, Outcome, RealmScheduler
from services.sync.store import Attempt
from services.sync.vault import NotConnected

log = structlog.get_logger(__name__)

# An outbox entry older than this belongs to no live attempt (a page takes seconds).
STALE_OUTBOX = timedelta(minutes=2)

# The lane of periodic jobs that belong to no realm.
HOUSEKEEPING = "-housekeeping"

# Failures of our own infrastructure (the database, Kafka), which another attempt of the whole
# command may well get past. No QBO error is here: the QBO client is the only layer that
# retries a QBO request, so one failing page costs a bounded number of metered calls
# (docs/design.md invariant 13); a QBO error that outlasted its retries ends the command at
# once (QboThrottled defers it instead).
TRANSIENT: tuple[type[BaseException], ...] = (PyMongoError, KafkaError, OSError, TimeoutError)


@dataclass(frozen=True)
class WorkerOptions:
    commands_topic: str
    dead_letter_topic: str
    max_attempts: int = 3
    retry_base_delay_s: float = 1.0
    cdc_poll_interval_s: float = 300.0
    outbox_sweep_interval_s: float = 30.0
    # Jobs (commands, CDC polls, sweeps) running at once, each of a different realm. 1 is the
    # old one-command-at-a-time worker.
    concurrency: int = 64
    # Records of one partition received and not yet done; past it the partition is paused.
    max_in_flight_per_partition: int = 1000
    # Intuit asks for 60 s after a 429; a command still throttled after the client's retries
    # waits that long (its realm with it), and is dead-lettered once throttled this long.
    throttle_pause_s: float = 60.0
    throttle_give_up_s: float = 3600.0
    # How long a rebalance or a stop waits for running jobs before abandoning them uncommitted.
    rebalance_grace_s: float = 30.0
    shutdown_grace_s: float = 10.0
    # A job that raised unexpectedly (e.g. the database is away) runs again after this.
    failure_backoff_s: float = 5.0
    poll_timeout_ms: int = 200
    max_poll_records: int = 500


class CommandWorker:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        deps: Dependencies,
        commands: CommandRecords,
        options: WorkerOptions,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        metrics: SyncMetrics | None = None,
    ) -> None:
        self._consumer = consumer
        self._producer = producer
        self._deps = deps
        self._commands = commands
        self._options = options
        self._sleep = sleep
        self._clock = clock
        self._partitioner = DefaultPartitioner()
        self._offsets: OffsetTracker[TopicPartition] = OffsetTracker()
        self._scheduler = RealmScheduler(
            options.concurrency,
            self._job_done,
            clock=clock,
            sleep=sleep,
            failure_backoff_s=options.failure_backoff_s,
        )
        self._commit_lock = asyncio.Lock()
        # Partitions being handed over: records of them that still arrive are left to the next
        # owner (not taken, so never committed here).
        self._revoking: set[TopicPartition] = set()
        self._throttled_since: dict[str, float] = {}  # command id -> first deferral
        self.processed = 0
        self.skipped = 0
        self.dead_lettered = 0
        self.deferred = 0
        self.metrics = metrics or SyncMetrics()

    @property
    def scheduler(self) -> RealmScheduler:
        return self._scheduler

    @property
    def offsets(self) -> OffsetTracker[TopicPartition]:
        return self._offsets

    def subscribe(self) -> None:
        """Join the commands topic with the rebalance listener (before `consumer.start`)."""
        self._consumer.subscribe(
            [self._options.commands_topic], listener=RevokeFirst(self.partitions_revoked, "worker")
        )

    # -- main loops ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set. Background loops (CDC, outbox sweep) submit jobs.

        Polling never waits for the work: records become jobs, and the loop goes back to Kafka
        (so no command, however long or throttled, holds the consumer past max.poll.interval).
        """
        background = [
            asyncio.create_task(
                self._every(self._options.cdc_poll_interval_s, self.poll_owned_realms, stop)
            ),
            asyncio.create_task(
                self._every(self._options.outbox_sweep_interval_s, self.schedule_sweep, stop)
            ),
        ]
        try:
            while not stop.is_set():
                await self.poll_once()
        finally:
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            # Running commands may finish (and be committed); the rest is redelivered.
            await self._scheduler.close(self._options.shutdown_grace_s)
            await self.commit()

    async def poll_once(self) -> int:
        """One turn of the loop: poll, hand the records to the scheduler, pause partitions that
        hold too much, commit what is done. Returns the number of records polled."""
        batches = await self._consumer.getmany(
            timeout_ms=self._options.poll_timeout_ms,
            max_records=self._options.max_poll_records,
        )
        polled = 0
        for tp, records in batches.items():
            for record in records:
                self.accept(tp, record)
                polled += 1
        self.apply_backpressure()
        await self.commit()
        return polled

    def accept(self, tp: TopicPartition, record: ConsumerRecord[Any, Any]) -> None:
        """Make a polled record a job in its realm's lane."""
        if tp in self._revoking or not self._offsets.received(tp, record.offset):
            return  # already in flight here
        self._scheduler.submit(
            Job(
                lane=_lane(tp, record),
                run=tracing.consumed(
                    partial(self.process, record), "process command", record.headers
                ),
                partition=tp,
                offset=record.offset,
                name="command",
            )
        )

    def _job_done(self, job: Job) -> None:
        if job.partition is not None and job.offset is not None:
            assert isinstance(job.partition, TopicPartition)
            self._offsets.done(job.partition, job.offset)

    def apply_backpressure(self) -> None:
        """Pause partitions holding too much unfinished work; resume them once it drains."""
        bound = self._options.max_in_flight_per_partition
        assigned = self._consumer.assignment()
        paused = self._consumer.paused()
        full = [tp for tp in assigned if self._offsets.in_flight(tp) >= bound]
        drained = [tp for tp in paused if tp in assigned and self._offsets.in_flight(tp) < bound]
        if to_pause := [tp for tp in full if tp not in paused]:
            self._consumer.pause(*to_pause)
            log.info("worker.paused", partitions=sorted(tp.partition for tp in to_pause))
        if drained:
            self._consumer.resume(*drained)
            log.info("worker.resumed", partitions=sorted(tp.partition for tp in drained))

    async def commit(self, partitions: Collection[TopicPartition] | None = None) -> None:
        """Commit each partition up to its lowest record not yet done."""
        async with self._commit_lock:
            offsets = self._offsets.committable()
            if partitions is not None:
                offsets = {tp: o for tp, o in offsets.items() if tp in partitions}
            if not offsets:
                return
            try:
                await self._consumer.commit(offsets)
            except (CommitFailedError, IllegalStateError, KafkaError) as exc:
                # A rebalance took a partition away, or Kafka is away: nothing is committed,
                # so those records are redelivered (handlers are idempotent). Next loop retries.
                log.info("worker.commit_failed", error=f"{type(exc).__name__}: {exc}")
                return
            self._offsets.committed(offsets)

    async def partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        """Before a rebalance hands `revoked` to another member: finish or abandon their work,
        commit what is done (never past what is not), and forget them."""
        mine = {tp for tp in revoked if tp.topic == self._options.commands_topic}
        if not mine:
            return
        self._revoking |= mine
        try:
            await self._scheduler.revoke(mine, self._options.rebalance_grace_s)
            await self.commit(mine)
        finally:
            for tp in mine:
                self._offsets.forget(tp)
            self._revoking -= mine
        log.info("worker.partitions_revoked", partitions=sorted(tp.partition for tp in mine))

    async def _every(
        self, interval_s: float, job: Callable[[], Awaitable[Any]], stop: asyncio.Event
    ) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
            if stop.is_set():
                return
            try:
                await job()
            except Exception:
                log.exception("worker.background_job_failed", job=getattr(job, "__name__", "?"))

    # -- one command ---------------------------------------------------------------------------

    async def process(self, record: ConsumerRecord[Any, Any]) -> Outcome:
        """Run one command to its end, or defer it (its realm is throttled). Returns when its
        status is recorded; the caller marks its offset done unless it was deferred."""
        try:
            command = parse_command(record.value)
        except MessageInvalid as exc:
            await self.dead_letter(record, str(exc), "MessageInvalid")
            return None
        except Exception as exc:
            # parse_command is meant to raise only MessageInvalid; should some input still find
            # another way to fail, it is the record's fault, and must not stop the partition.
            log.exception("command.unparsable", partition=record.partition, offset=record.offset)
            await self.dead_letter(record, f"unparsable: {type(exc).__name__}", "ParseError")
            return None
        bound = log.bind(
            command_id=command.command_id, realm_id=command.realm_id, type=command.type
        )
        tracing.annotate_command(command)
        for number in range(1, self._options.max_attempts + 1):
            attempt: Attempt | None = None
            try:
                attempt = await self._commands.running(command, number)
                if attempt is None:
                    await self._skip_finished(command)
                    return None
                result = await self.dispatch(command, owed=attempt.ran_before)
            except ReauthRequired as exc:
                await self._finish(command, attempt, CommandStatus.NEEDS_REAUTH, str(exc))
                self.metrics.command(command.type, metrics.NEEDS_REAUTH)
                return None
            except (CommandRejected, QboRequestError, NotConnected) as exc:
                details = exc.details if isinstance(exc, CommandRejected) else None
                bound.info("command.rejected", reason=str(exc))
                await self._finish(command, attempt, CommandStatus.FAILED, str(exc), details)
                self.metrics.command(command.type, metrics.FAILED)
                return None
            except QboThrottled as exc:
                return await self._throttled(record, command, attempt, exc)
            except Exception as exc:
                transient = isinstance(exc, TRANSIENT) and not isinstance(exc, QboError)
                error = f"{type(exc).__name__}: {exc}"
                bound.warning(
                    "command.attempt_failed",
                    attempt=number,
                    transient=transient,
                    error=error,
                    exc_info=not transient and not isinstance(exc, QboError),
                )
                if not transient or number == self._options.max_attempts:
                    reason = f"gave up after {number} attempts: {error}" if transient else error
                    await self.dead_letter(record, reason, type(exc).__name__)
                    await self._finish(command, attempt, CommandStatus.FAILED, reason)
                    self.metrics.command(command.type, metrics.DEAD_LETTERED)
                    return None
                await self._sleep(self._options.retry_base_delay_s * 2 ** (number - 1))
            else:
                await self._finish(command, attempt, CommandStatus.SUCCEEDED, None, result)
                self.processed += 1
                self.metrics.command(command.type, metrics.SUCCEEDED)
                return None
        return None

    async def _throttled(
        self,
        record: ConsumerRecord[Any, Any],
        command: Command,
        attempt: Attempt | None,
        exc: QboThrottled,
    ) -> Outcome:
        """QBO still answers 429 after the client's retries: wait the pause Intuit asks for,
        with the realm's other work, instead of failing. Only a throttle that outlasts
        `throttle_give_up_s` (counted in this process) ends in the dead-letter topic."""
        now = self._clock()
        since = self._throttled_since.setdefault(command.command_id, now)
        if now - since >= self._options.throttle_give_up_s:
            reason = f"throttled by QBO for {now - since:.0f} s: {exc}"
            await self.dead_letter(record, reason, type(exc).__name__)
            await self._finish(command, attempt, CommandStatus.FAILED, reason)
            self.metrics.command(command.type, metrics.DEAD_LETTERED)
            return None
        pause = self._options.throttle_pause_s
        resumes_at = self._deps.clock() + timedelta(seconds=pause)
        await self._commands.throttled(command.command_id, resumes_at, str(exc))
        self.deferred += 1
        self.metrics.command(command.type, metrics.THROTTLED)
        log.warning(
            "command.throttled",
            command_id=command.command_id,
            realm_id=command.realm_id,
            resumes_at=resumes_at.isoformat(),
        )
        return Deferred(pause)

    async def _skip_finished(self, command: Command) -> None:
        """A command that already finished is not run again (its QBO reads are metered).

        It arrives again when it was published twice (an api retry, a replay) or when a worker
        died after finishing it but before committing its offset. Its finished record was written
        only after its events were acknowledged, so nothing is owed, except by an attempt that
        gave up between a write and its events: those outbox entries are flushed here.
        """
        owed = await self._deps.events.flush(command_id=command.command_id)
        self.skipped += 1
        self.metrics.command(command.type, metrics.SKIPPED)
        log.info(
            "command.already_finished",
            command_id=command.command_id,
            realm_id=command.realm_id,
            events=owed,
        )

    async def dispatch(self, command: Command, owed: bool = True) -> dict[str, Any]:
        """Run the command's handler; `owed`: an earlier attempt may have left events owed."""
        if isinstance(command, RefreshInvoices):
            return await handlers.refresh_invoices(command, self._deps, owed)
        if isinstance(command, SyncChanges):
            return await handlers.sync_changes(command, self._deps, owed)
        if isinstance(command, MapCustomer):
            mapping = await handlers.map_customer(command, self._deps)
            return {"qbo_customer_id": mapping.qbo_customer_id}
        raise CommandRejected(f"no handler for {command.type}")

    async def _finish(
        self,
        command: Command,
        attempt: Attempt | None,
        status: CommandStatus,
        reason: str | None,
        result: dict[str, Any] | None = None,
    ) -> None:
        self._throttled_since.pop(command.command_id, None)
        if not await self._commands.finished(command.command_id, status, reason, result, attempt):
            # Another worker (the partition moved meanwhile) finished it first; its outcome stays.
            log.info("command.finished_elsewhere", command_id=command.command_id)
            return
        log.info(
            "command.finished", command_id=command.command_id, status=status.value, reason=reason
        )

    async def dead_letter(
        self, record: ConsumerRecord[Any, Any], reason: str, error_type: str
    ) -> None:
        headers = [
            ("dlq.reason", reason[:1000].encode()),
            ("dlq.error_type", error_type.encode()),
            ("dlq.topic", record.topic.encode()),
            ("dlq.partition", str(record.partition).encode()),
            ("dlq.offset", str(record.offset).encode()),
            *(tracing.kafka_headers() or ()),
        ]
        try:
            await self._producer.send_and_wait(
                self._options.dead_letter_topic, record.value, key=record.key, headers=headers
            )
        except MessageSizeTooLargeError:
            # A record just under the broker's limit no longer fits once the reason is added.
            # Its bytes stay readable on the source topic at dlq.partition/dlq.offset.
            size = len(record.value or b"") + len(record.key or b"")
            headers.append(("dlq.value_omitted", f"{size} bytes, too large to copy".encode()))
            await self._producer.send_and_wait(
                self._options.dead_letter_topic, b"", key=None, headers=headers
            )
        self.dead_lettered += 1
        self.metrics.dead_lettered(error_type)
        log.warning(
            "command.dead_lettered",
            reason=reason,
            partition=record.partition,
            offset=record.offset,
        )

    # -- background jobs -----------------------------------------------------------------------

    def owned_partitions(self) -> tuple[set[int], list[int]]:
        topic = self._options.commands_topic
        owned = {tp.partition for tp in self._consumer.assignment() if tp.topic == topic}
        all_partitions = sorted(self._consumer.partitions_for_topic(topic) or [])
        return owned, all_partitions

    def realm_partition(self, realm_id: str) -> TopicPartition | None:
        """The commands partition of `realm_id` if this member owns it, else None."""
        owned, all_partitions = self.owned_partitions()
        if not owned:
            return None
        partition = self._partitioner(realm_id.encode(), all_partitions, all_partitions)
        if partition not in owned:
            return None
        return TopicPartition(self._options.commands_topic, partition)

    async def poll_owned_realms(self) -> int:
        """Schedule CDC for every active realm whose commands partition this member owns.

        Each poll runs in its realm's lane: after the realm's earlier commands, never beside
        them, and not while the realm is throttled. A poll already waiting is not doubled."""
        scheduled = 0
        for realm_id in await self._deps.vault.active_realms():
            tp = self.realm_partition(realm_id)
            if tp is None or self._scheduler.has_queued(realm_id, "cdc"):
                continue
            self._scheduler.submit(
                Job(realm_id, partial(self.poll_realm, realm_id), partition=tp, name="cdc")
            )
            scheduled += 1
        return scheduled

    async def poll_realm(self, realm_id: str) -> Outcome:
        try:
            result = await handlers.poll_changes(realm_id, self._deps)
            log.info("cdc.polled", realm_id=realm_id, **result)
        except (ReauthRequired, NotConnected):
            pass
        except QboThrottled:
            log.warning("cdc.throttled", realm_id=realm_id)
            return Deferred(self._options.throttle_pause_s)
        except Exception:
            # The next poll covers the same window again (the checkpoint did not move).
            log.exception("cdc.poll_failed", realm_id=realm_id)
        return None

    async def schedule_sweep(self) -> None:
        """The outbox sweep as a job: it counts against the same concurrency bound."""
        if not self._scheduler.has_queued(HOUSEKEEPING, "sweep"):
            self._scheduler.submit(Job(HOUSEKEEPING, self._sweep_job, name="sweep"))

    async def _sweep_job(self) -> Outcome:
        try:
            await self.sweep_outbox()
        except Exception:
            log.exception("worker.sweep_failed")  # the next sweep finds the same entries
        return None

    async def sweep_outbox(self, older_than: timedelta | None = STALE_OUTBOX) -> int:
        """Emit events owed by writes whose command died and was not redelivered to us."""
        return await self._deps.events.flush(older_than=older_than)


def _lane(tp: TopicPartition, record: ConsumerRecord[Any, Any]) -> str:
    """A command's lane is its realm: commands are keyed by realm id. A record without a
    usable key still gets an ordered lane, of its partition."""
    key = record.key
    if isinstance(key, bytes):
        with contextlib.suppress(UnicodeDecodeError):
            return key.decode()
    return f"-unkeyed:{tp.partition}"
