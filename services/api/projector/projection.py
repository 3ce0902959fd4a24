"""A batch of records -> the read model: the valid ones written together, the poison ones
dead-lettered in order, each record's outcome counted once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeAlias

import structlog
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from pymongo.errors import PyMongoError

from services.api.metrics import ApiMetrics
from services.api.projector.dead_letters import DeadLetters
from services.api.projector.records import Rejected, parse_event
from services.api.store import Applied, ReadInvoices
from services.common import tracing
from services.common.clock import Clock, utc_now
from services.common.mongo import Document
from services.common.schemas import SchemaSet, default_schemas

log = structlog.get_logger(__name__)

# Failures of our own infrastructure: retry the record later, never dead-letter it.
RETRYABLE = (PyMongoError, KafkaError, OSError)

Record: TypeAlias = "ConsumerRecord[bytes, bytes]"
ResumeAt: TypeAlias = dict[TopicPartition, int]


class Outcome(StrEnum):
    STORED = "stored"
    STALE = "stale"
    DEAD_LETTERED = "dead_lettered"


class ProjectionInterrupted(Exception):
    """A retryable failure part-way through a batch. In each partition named in `resume_at`,
    the records before that offset are done (stored, skipped as stale or dead-lettered) and the
    rest must be read again; partitions not named are done entirely."""

    def __init__(self, resume_at: ResumeAt) -> None:
        self.resume_at = resume_at
        super().__init__(f"projection interrupted, resuming at {resume_at}")


@dataclass(frozen=True)
class Projected:
    """What became of a batch: each record's outcome (None: left for a later batch), and where
    the partitions with records left must resume; the others are done."""

    outcomes: list[Outcome | None]
    resume_at: ResumeAt


def first_offsets(records: Sequence[Record]) -> ResumeAt:
    """The offset of the first of `records` in each partition."""
    first: ResumeAt = {}
    for record in records:
        first.setdefault(TopicPartition(record.topic, record.partition), record.offset)
    return first


def _done(record: Record, resume_at: ResumeAt) -> bool:
    tp = TopicPartition(record.topic, record.partition)
    return tp not in resume_at or record.offset < resume_at[tp]


@dataclass
class Projector:
    """Projects batches of records; `consumer.run_projector` drives it from the consumer group."""

    read_invoices: ReadInvoices
    dead_letters: DeadLetters
    metrics: ApiMetrics
    schemas: SchemaSet = field(default_factory=default_schemas)
    clock: Clock = utc_now
    retry_delays: Sequence[float] = (0.5, 1.0, 2.0, 5.0, 10.0)
    # Seconds of updates per batch. On FerretDB v1 an update costs a scan of the read model,
    # so a batch of them could otherwise outlast Kafka's max.poll.interval (5 minutes) and get
    # the consumer dropped from its group, batch after batch.
    batch_time_budget: float | None = 60.0
    # Events per batch, and events read ahead of the batches: how far behind other companies'
    # events a company's own can be found (services/api/backlog.py).
    batch_size: int = 500
    read_ahead: int = 50_000

    async def project(self, records: Sequence[Record]) -> Projected:
        """Project a batch (any partitions, each in offset order).

        The valid records are written first, all together (`ReadInvoices.apply_many`), then the
        poison ones are dead-lettered in order. When the writes run out of time, each partition
        is done up to its first record not written, and the rest is left for the next batch. A
        retryable failure raises `ProjectionInterrupted` saying where each partition resumes.
        """
        valid, poison = self._parse(records)
        try:
            with tracing.consumed_batch("process event", (records[i] for i, _ in valid)):
                applied = await self.read_invoices.apply_many(
                    [doc for _, doc in valid], time_budget=self.batch_time_budget
                )
        except RETRYABLE as exc:
            log.warning("projector.retrying", records=len(records), error=repr(exc))
            raise ProjectionInterrupted(first_offsets(records)) from exc
        written = zip(valid, applied, strict=True)
        resume_at = first_offsets([records[i] for (i, _), result in written if result is None])
        outcomes: list[Outcome | None] = [None] * len(records)
        sent, resume_at, failure = await self._dead_letter(records, poison, resume_at)
        for i in sent:
            outcomes[i] = Outcome.DEAD_LETTERED
        # Counted once each: a record left for later is counted when it is read again.
        for (i, _), result in zip(valid, applied, strict=True):
            if result is not None and _done(records[i], resume_at):
                outcomes[i] = Outcome.STORED if result is Applied.STORED else Outcome.STALE
        for outcome in outcomes:
            if outcome is not None:
                self.metrics.events.labels(outcome.value).inc()
        if failure is not None:
            raise ProjectionInterrupted(resume_at) from failure
        log.debug(
            "projector.projected",
            records=len(records),
            stored=outcomes.count(Outcome.STORED),
            dead_lettered=outcomes.count(Outcome.DEAD_LETTERED),
            left_for_later=outcomes.count(None),
        )
        return Projected(outcomes, resume_at)

    def _parse(
        self, records: Sequence[Record]
    ) -> tuple[list[tuple[int, Document]], list[tuple[int, Rejected]]]:
        """The records' documents and their rejections, each with the record's index."""
        projected_at = self.clock()
        valid: list[tuple[int, Document]] = []
        poison: list[tuple[int, Rejected]] = []
        for i, record in enumerate(records):
            try:
                valid.append((i, parse_event(record, self.schemas, projected_at)))
            except Rejected as exc:
                poison.append((i, exc))
            except Exception as exc:
                # parse_event is meant to raise only Rejected; any other failure is still this
                # record's, and retrying it would stall the partition for ever.
                log.exception("projector.unparsable", offset=record.offset)
                poison.append((i, Rejected(f"unparsable: {type(exc).__name__}", "ParseError")))
        return valid, poison

    async def _dead_letter(
        self, records: Sequence[Record], poison: list[tuple[int, Rejected]], resume_at: ResumeAt
    ) -> tuple[list[int], ResumeAt, BaseException | None]:
        """Dead-letter, in order, the poison records before their partition's resume point.

        Returns the indices sent, where the partitions resume and the failure that stopped the
        sending, if one did: a partition then resumes at its first unsent dead letter (those
        left are all before any partition's resume point, so that is the earlier offset).
        """
        due = [(i, rejected) for i, rejected in poison if _done(records[i], resume_at)]
        for n, (i, rejected) in enumerate(due):
            record = records[i]
            try:
                await self.dead_letters.send(record, rejected)
            except RETRYABLE as exc:
                log.warning("projector.retrying", offset=record.offset, error=repr(exc))
                unsent = first_offsets([records[j] for j, _ in due[n:]])
                return [j for j, _ in due[:n]], resume_at | unsent, exc
            log.warning(
                "projector.dead_lettered",
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                reason=rejected.reason,
                error_type=rejected.error_type,
            )
        return [j for j, _ in due], resume_at, None

    def delay_after(self, failures: int) -> float:
        """Back-off before the next try after `failures` consecutive failures (>= 1)."""
        return self.retry_delays[min(max(failures, 1), len(self.retry_delays)) - 1]
