"""The command consumer: one Kafka consumer-group member of the sync service.

Guarantees (DESIGN.md invariants 1 and 5):
- commands are keyed by realm id, so the member that owns a partition makes every QBO call of
  its realms: it also runs their CDC polls, so token refresh and the rate budget stay in one
  process;
- an offset is committed only after the command's writes and events are durable; a crash means
  redelivery, and handlers are idempotent;
- a command runs once: one whose record says it finished is not run again (a duplicate publish
  costs no QBO reads), while one left `running` by a crash is, so its work is completed;
- a command that cannot be parsed, or that keeps failing, goes to the dead-letter topic with
  the reason and the original bytes, and the consumer moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    MessageSizeTooLargeError,
)
from aiokafka.partitioner import DefaultPartitioner
from pymongo.errors import PyMongoError

from services.common.messages import (
    Command,
    MapCustomer,
    RefreshInvoices,
    SyncChanges,
    parse_command,
)
from services.common.schemas import MessageInvalid
from services.sync import handlers
from services.sync.handlers import CommandRejected, Dependencies
from services.sync.quickbooks.errors import (
    QboAuthError,
    QboRequestError,
    QboThrottled,
    QboUnavailable,
    ReauthRequired,
)
from services.sync.store import Attempt, CommandLog, CommandStatus
from services.sync.vault import NotConnected

log = structlog.get_logger(__name__)

# An outbox entry older than this belongs to no live attempt (a page takes seconds).
STALE_OUTBOX = timedelta(minutes=2)

# Worth another attempt: the next one may well succeed.
TRANSIENT: tuple[type[BaseException], ...] = (
    QboThrottled,
    QboUnavailable,
    QboAuthError,
    PyMongoError,
    KafkaError,
    OSError,
    TimeoutError,
)


@dataclass(frozen=True)
class WorkerOptions:
    commands_topic: str
    dead_letter_topic: str
    max_attempts: int = 3
    retry_base_delay_s: float = 1.0
    cdc_poll_interval_s: float = 300.0
    outbox_sweep_interval_s: float = 30.0


class CommandWorker:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        deps: Dependencies,
        commands: CommandLog,
        options: WorkerOptions,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._consumer = consumer
        self._producer = producer
        self._deps = deps
        self._commands = commands
        self._options = options
        self._sleep = sleep
        self._partitioner = DefaultPartitioner()
        self.processed = 0
        self.skipped = 0
        self.dead_lettered = 0

    # -- main loops ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set. Background loops (CDC, outbox sweep) run alongside."""
        background = [
            asyncio.create_task(
                self._every(self._options.cdc_poll_interval_s, self.poll_owned_realms, stop)
            ),
            asyncio.create_task(
                self._every(self._options.outbox_sweep_interval_s, self.sweep_outbox, stop)
            ),
        ]
        try:
            while not stop.is_set():
                batches = await self._consumer.getmany(timeout_ms=500, max_records=50)
                if batches:
                    await asyncio.gather(*(self._drain(tp, recs) for tp, recs in batches.items()))
        finally:
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _drain(self, tp: TopicPartition, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        # In order within a partition: one realm's commands never overtake each other.
        for record in records:
            await self.process(record)
            try:
                await self._consumer.commit({tp: record.offset + 1})
            except (CommitFailedError, IllegalStateError) as exc:
                # A rebalance gave the partition to another member, which redelivers from the
                # last commit (handlers are idempotent). Stop draining it; raising would end the
                # process while other partitions' commands are still between write and emit.
                log.info("worker.commit_lost", partition=tp.partition, error=str(exc))
                return

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

    async def process(self, record: ConsumerRecord[Any, Any]) -> None:
        try:
            command = parse_command(record.value)
        except MessageInvalid as exc:
            await self.dead_letter(record, str(exc), "MessageInvalid")
            return
        except Exception as exc:
            # parse_command is meant to raise only MessageInvalid; should some input still find
            # another way to fail, it is the record's fault, and must not stop the partition.
            log.exception("command.unparsable", partition=record.partition, offset=record.offset)
            await self.dead_letter(record, f"unparsable: {type(exc).__name__}", "ParseError")
            return
        bound = log.bind(
            command_id=command.command_id, realm_id=command.realm_id, type=command.type
        )
        for number in range(1, self._options.max_attempts + 1):
            attempt: Attempt | None = None
            try:
                attempt = await self._commands.running(command, number)
                if attempt is None:
                    await self._skip_finished(command)
                    return
                result = await self.dispatch(command, owed=attempt.ran_before)
            except ReauthRequired as exc:
                await self._finish(command, attempt, CommandStatus.NEEDS_REAUTH, str(exc))
                return
            except (CommandRejected, QboRequestError, NotConnected) as exc:
                details = exc.details if isinstance(exc, CommandRejected) else None
                bound.info("command.rejected", reason=str(exc))
                await self._finish(command, attempt, CommandStatus.FAILED, str(exc), details)
                return
            except Exception as exc:
                transient = isinstance(exc, TRANSIENT)
                bound.warning(
                    "command.attempt_failed",
                    attempt=number,
                    transient=transient,
                    error=f"{type(exc).__name__}: {exc}",
                    exc_info=not transient,
                )
                if number == self._options.max_attempts:
                    reason = f"gave up after {number} attempts: {type(exc).__name__}: {exc}"
                    await self.dead_letter(record, reason, type(exc).__name__)
                    await self._finish(command, attempt, CommandStatus.FAILED, reason)
                    return
                await self._sleep(self._options.retry_base_delay_s * 2 ** (number - 1))
            else:
                await self._finish(command, attempt, CommandStatus.SUCCEEDED, None, result)
                self.processed += 1
                return

    async def _skip_finished(self, command: Command) -> None:
        """A command that already finished is not run again (its QBO reads are metered).

        It arrives again when it was published twice (an api retry, a replay) or when a worker
        died after finishing it but before committing its offset. Its finished record was written
        only after its events were acknowledged, so nothing is owed, except by an attempt that
        gave up between a write and its events: those outbox entries are flushed here.
        """
        owed = await self._deps.events.flush(command_id=command.command_id)
        self.skipped += 1
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

    async def poll_owned_realms(self) -> int:
        """CDC for every active realm whose commands partition this member owns."""
        owned, all_partitions = self.owned_partitions()
        if not owned:
            return 0
        polled = 0
        for realm_id in await self._deps.vault.active_realms():
            partition = self._partitioner(realm_id.encode(), all_partitions, all_partitions)
            if partition not in owned:
                continue
            try:
                result = await handlers.poll_changes(realm_id, self._deps)
                polled += 1
                log.info("cdc.polled", realm_id=realm_id, **result)
            except (ReauthRequired, NotConnected):
                continue
            except Exception:
                log.exception("cdc.poll_failed", realm_id=realm_id)
        return polled

    async def sweep_outbox(self, older_than: timedelta | None = STALE_OUTBOX) -> int:
        """Emit events owed by writes whose command died and was not redelivered to us."""
        return await self._deps.events.flush(older_than=older_than)
