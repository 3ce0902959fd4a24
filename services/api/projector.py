"""The projector: InvoiceUpdated events -> the `read_invoices` read model.

Delivery is at least once and partitions may be re-read, so projection is idempotent and
order-safe: a version is stored only when it is newer than the stored one
(`ReadInvoices.apply_many`). Records are projected a batch at a time, because on FerretDB v1
the cost is per query rather than per event (see `ReadInvoices.apply_many`); the projector
reads ahead of its batches and fills each with the companies that have the fewest events
waiting first, so a company's change is not held behind another's refresh
(`services/api/backlog.py`, docs/design.md invariant 13). An offset is committed only up to
the lowest record not yet projected (docs/design.md invariant 5). An event that can never be
projected (not JSON, off-contract, inexact money) goes to the dead-letter topic with the
reason, and is committed past so one bad record cannot stall its partition; a failing
database is different: the record is retried, never skipped.

    python -m services.api.projector            # run the projector on its own
    python -m services.api.projector --rebuild  # drop the read model, replay the whole topic

A rebuild may run while other projectors keep going: every write is version-guarded, so the
replayed older versions never overwrite newer ones.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    MessageSizeTooLargeError,
)
from pymongo.errors import PyMongoError

from services.api.backlog import EventBacklog, in_offset_order
from services.api.metrics import ApiMetrics
from services.api.producer import LazyProducer
from services.api.readmodel import UnprojectableEvent, invoice_key, read_invoice
from services.api.store import Applied, ReadInvoices
from services.common import jsoncodec
from services.common.clock import Clock, utc_now
from services.common.kafka import ensure_topics, make_consumer, topics_for
from services.common.logging import configure_logging
from services.common.mongo import Document, counted_as, make_client
from services.common.offsets import OffsetTracker
from services.common.schemas import INVOICE_UPDATED, MessageInvalid, SchemaSet, default_schemas
from services.common.settings import Settings, get_settings

log = structlog.get_logger(__name__)

_MAX_REASON = 1000
# Failures of our own infrastructure: retry the record later, never dead-letter it.
RETRYABLE = (PyMongoError, KafkaError, OSError)


class Outcome(StrEnum):
    STORED = "stored"
    STALE = "stale"
    DEAD_LETTERED = "dead_lettered"


class Rejected(Exception):
    """A record that will never project; `error_type` goes to the `dlq.error_type` header."""

    def __init__(self, reason: str, error_type: str) -> None:
        self.reason = reason
        self.error_type = error_type
        super().__init__(reason)


class DeadLetters:
    """The dead-letter topic: the original key and bytes, plus where they came from and why."""

    def __init__(self, producer: LazyProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic

    async def send(self, record: ConsumerRecord[bytes, bytes], rejected: Rejected) -> None:
        headers = [
            *(record.headers or ()),
            ("dlq.reason", rejected.reason[:_MAX_REASON].encode()),
            ("dlq.topic", record.topic.encode()),
            ("dlq.partition", str(record.partition).encode()),
            ("dlq.offset", str(record.offset).encode()),
            ("dlq.error_type", rejected.error_type.encode()),
        ]
        try:
            await self._producer.send_and_wait(
                self._topic, value=record.value, key=record.key, headers=headers
            )
        except MessageSizeTooLargeError:
            # A record just under the broker's limit no longer fits with the reason added. Its
            # bytes stay readable on the source topic at dlq.partition/dlq.offset (Kafka needs a
            # key or a value, hence the empty value).
            size = len(record.value or b"") + len(record.key or b"")
            omitted = ("dlq.value_omitted", f"{size} bytes, too large to copy".encode())
            dlq_headers = [h for h in headers if h[0].startswith("dlq.")]
            await self._producer.send_and_wait(
                self._topic, value=b"", key=None, headers=[*dlq_headers, omitted]
            )


def parse_event(
    record: ConsumerRecord[bytes, bytes], schemas: SchemaSet, projected_at: datetime
) -> Document:
    """A record -> the read-model document it stands for, or `Rejected` with the reason."""
    if record.value is None:
        raise Rejected("empty record (tombstone)", "EmptyRecord")
    try:
        event = jsoncodec.loads(record.value)
    except ValueError as exc:  # JsonRejected: malformed, bad UTF-8, too deep, out of range
        raise Rejected(f"not JSON: {exc}", "InvalidJSON") from None
    try:
        schemas.validate(INVOICE_UPDATED, event)
    except MessageInvalid as exc:
        where = f" at {exc.path}" if exc.path else ""
        raise Rejected(f"{exc.reason}{where}", "SchemaViolation") from None
    try:
        doc = read_invoice(event, projected_at)
    except UnprojectableEvent as exc:
        raise Rejected(str(exc), "UnprojectableEvent") from None
    if record.key is not None:
        expected = invoice_key(doc["realm_id"], doc["invoice_id"])
        if record.key != expected.encode():
            # The key decides the partition, and so the order of an invoice's versions.
            raise Rejected(f"record key does not match the event (expected {expected})", "BadKey")
    return doc


class ProjectionInterrupted(Exception):
    """A retryable failure part-way through a batch. In each partition named in `resume_at`,
    the records before that offset are done (stored, skipped as stale or dead-lettered) and the
    rest must be read again; partitions not named are done entirely."""

    def __init__(self, resume_at: dict[TopicPartition, int]) -> None:
        self.resume_at = resume_at
        super().__init__(f"projection interrupted, resuming at {resume_at}")


@dataclass(frozen=True)
class Projected:
    """What became of a batch: each record's outcome (None: left for a later batch), and where
    the partitions with records left must resume; the others are done."""

    outcomes: list[Outcome | None]
    resume_at: dict[TopicPartition, int]


@dataclass
class Projector:
    """Projects batches of records; `run_projector` drives it from the consumer group."""

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
    backlog: EventBacklog = field(default_factory=EventBacklog)
    offsets: OffsetTracker[TopicPartition] = field(default_factory=OffsetTracker)

    async def project(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> Projected:
        """Project a batch (any partitions, each in offset order).

        The valid records are written first, all together (`ReadInvoices.apply_many`), then the
        poison ones are dead-lettered in order. When the writes run out of time, each partition
        is done up to its first record not written, and the rest is left for the next batch. A
        retryable failure raises `ProjectionInterrupted` saying where each partition resumes.
        """
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
        try:
            applied = await self.read_invoices.apply_many(
                [doc for _, doc in valid], time_budget=self.batch_time_budget
            )
        except RETRYABLE as exc:
            log.warning("projector.retrying", records=len(records), error=repr(exc))
            raise ProjectionInterrupted(_first_offsets(records)) from exc
        resume_at = _first_offsets(
            [records[i] for (i, _), result in zip(valid, applied, strict=True) if result is None]
        )

        def done(record: ConsumerRecord[bytes, bytes]) -> bool:
            tp = TopicPartition(record.topic, record.partition)
            return tp not in resume_at or record.offset < resume_at[tp]

        outcomes: list[Outcome | None] = [None] * len(records)
        failure: BaseException | None = None
        for n, (i, rejected) in enumerate(p for p in poison if done(records[p[0]])):
            record = records[i]
            try:
                await self.dead_letters.send(record, rejected)
            except RETRYABLE as exc:
                log.warning("projector.retrying", offset=record.offset, error=repr(exc))
                # Done: every record before the first unsent dead letter of its partition (the
                # poison records left are all before any partition's resume point).
                unsent = [records[j] for j, _ in poison if done(records[j])][n:]
                resume_at = resume_at | _first_offsets(unsent)
                failure = exc
                break
            log.warning(
                "projector.dead_lettered",
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                reason=rejected.reason,
                error_type=rejected.error_type,
            )
            outcomes[i] = Outcome.DEAD_LETTERED
        # Counted once each: a record left for later is counted when it is read again.
        for (i, _), result in zip(valid, applied, strict=True):
            if result is not None and done(records[i]):
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

    async def consume(self, consumer: AIOKafkaConsumer) -> None:
        """Project until cancelled: read ahead into the backlog (at most `read_ahead` events),
        project a batch of it, smallest companies first (`services/api/backlog.py`), commit
        what is done."""
        self.backlog, self.offsets = EventBacklog(), OffsetTracker()
        failures = 0
        while True:
            await self._read_ahead(consumer)
            if not self.backlog:
                continue
            done = await self._project_next(consumer)
            failures = 0 if done else failures + 1
            if not done:
                await asyncio.sleep(self.delay_after(failures))

    async def _read_ahead(self, consumer: AIOKafkaConsumer) -> None:
        """Take what Kafka has ready (waiting for it only when nothing is left to project),
        pausing every partition while the backlog holds `read_ahead` events."""
        full = len(self.backlog) >= self.read_ahead
        if full and not consumer.paused():
            consumer.pause(*consumer.assignment())
        elif not full and consumer.paused():
            consumer.resume(*consumer.paused())
        batches = await consumer.getmany(
            timeout_ms=0 if self.backlog else 500,
            max_records=max(self.read_ahead - len(self.backlog), 1),
        )
        for tp, records in batches.items():
            self.backlog.add(r for r in records if self.offsets.received(tp, r.offset))

    async def _project_next(self, consumer: AIOKafkaConsumer) -> bool:
        """Project one batch of the backlog, put back what is left for later, commit
        every partition up to its lowest event not done. On a retryable failure, report
        False (the batch's unfinished events are back in the backlog)."""
        batch = in_offset_order(self.backlog.take(self.batch_size))
        failed = False
        try:
            resume_at = (await self.project(batch)).resume_at
        except ProjectionInterrupted as interrupted:
            resume_at = interrupted.resume_at
            failed = True
        left: list[ConsumerRecord[bytes, bytes]] = []
        for record in batch:
            tp = TopicPartition(record.topic, record.partition)
            if tp in resume_at and record.offset >= resume_at[tp]:
                left.append(record)
            else:
                self.offsets.done(tp, record.offset)
        owned = consumer.assignment()
        self.backlog.put_back(r for r in left if TopicPartition(r.topic, r.partition) in owned)
        await self.commit(consumer)
        return not failed

    async def commit(
        self, consumer: AIOKafkaConsumer, partitions: Collection[TopicPartition] | None = None
    ) -> None:
        """Commit each owned partition (of `partitions`, or all) up to its lowest event not
        projected yet."""
        owned = consumer.assignment()
        commits = {
            tp: offset
            for tp, offset in self.offsets.committable().items()
            if tp in owned and (partitions is None or tp in partitions)
        }
        for tp in owned:
            highwater, position = consumer.highwater(tp), self.offsets.position(tp)
            if highwater is not None and position is not None:
                self.metrics.lag.labels(str(tp.partition)).set(max(highwater - position, 0))
        try:
            if commits:
                await consumer.commit(commits)
                self.offsets.committed(commits)
        except (CommitFailedError, IllegalStateError) as exc:
            # A partition moved to another member: it re-reads from the last commit and
            # the version guard makes the repeat harmless.
            log.info("projector.commit_lost", error=str(exc))

    async def partitions_revoked(
        self, consumer: AIOKafkaConsumer, revoked: Collection[TopicPartition]
    ) -> None:
        """Before another member takes `revoked`: commit what is done of them (never past
        what is not) and forget their events; the next owner reads them again."""
        with contextlib.suppress(KafkaError):
            await self.commit(consumer, revoked)
        self.backlog.drop(revoked)
        for tp in revoked:
            self.offsets.forget(tp)

    def delay_after(self, failures: int) -> float:
        """Back-off before the next try after `failures` consecutive failures (>= 1)."""
        return self.retry_delays[min(max(failures, 1), len(self.retry_delays)) - 1]


def _first_offsets(
    records: Sequence[ConsumerRecord[bytes, bytes]],
) -> dict[TopicPartition, int]:
    first: dict[TopicPartition, int] = {}
    for record in records:
        first.setdefault(TopicPartition(record.topic, record.partition), record.offset)
    return first


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka has no hints
    def __init__(self, projector: Projector, consumer: AIOKafkaConsumer) -> None:
        self._projector = projector
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        await self._projector.partitions_revoked(self._consumer, revoked)

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        pass


async def run_projector(settings: Settings, projector: Projector) -> None:
    """Join the projector's consumer group and project until cancelled, reconnecting (with
    back-off) whenever Kafka or the database fails."""
    with counted_as("projector"):
        await _run_projector(settings, projector)


async def _run_projector(settings: Settings, projector: Projector) -> None:
    failures = 0
    while True:
        consumer = make_consumer(
            settings.kafka_bootstrap_servers,
            settings.projector_consumer_group,
            client_id=f"{settings.kafka_client_id}-projector",
            max_poll_records=settings.projector_batch_size,
        )
        consumer.subscribe(
            [settings.invoice_events_topic], listener=_Rebalance(projector, consumer)
        )
        try:
            await projector.read_invoices.prepare()
            legacy = await projector.read_invoices.without_sort_keys()
            if legacy:
                log.warning(
                    "read_model.amounts_in_earlier_form",
                    invoices=legacy,
                    hint="run `python -m services.api.projector --rebuild` for exact money sorts",
                )
            # Idempotent; without the topic the consumer would only log errors until it exists.
            await ensure_topics(settings.kafka_bootstrap_servers, topics_for(settings))
            await consumer.start()
            log.info("projector.started", topic=settings.invoice_events_topic)
            failures = 0
            await projector.consume(consumer)
        except Exception as exc:
            # Infrastructure failures are expected (RETRYABLE); anything else is a bug, but the
            # projector must not die silently inside the api process: log it and start again.
            failures += 1
            delay = projector.delay_after(failures)
            if isinstance(exc, RETRYABLE):
                log.warning("projector.restarting", error=repr(exc), in_seconds=delay)
            else:
                log.exception("projector.crashed", in_seconds=delay)
            await asyncio.sleep(delay)
        finally:
            await consumer.stop()


async def topic_partitions(bootstrap_servers: str, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if described["error_code"] != 0:
        raise KafkaError(f"cannot describe topic {topic} (error {described['error_code']})")
    return sorted(int(p["partition"]) for p in described["partitions"])


@dataclass(frozen=True)
class RebuildReport:
    partitions: int
    records: int
    outcomes: Mapping[str, int]


async def rebuild(
    settings: Settings,
    projector: Projector,
    idle_timeout: float = 60.0,
) -> RebuildReport:
    """Drop the read model and replay every partition from its earliest offset up to the end
    offsets seen at the start. Uses its own partition assignment and commits nothing, so the
    consumer group's members (the api's projector) are left undisturbed."""
    await projector.read_invoices.drop()
    await projector.read_invoices.prepare()
    consumer = make_consumer(
        settings.kafka_bootstrap_servers,
        settings.projector_consumer_group,
        client_id=f"{settings.kafka_client_id}-projector-rebuild",
        max_poll_records=settings.projector_batch_size,
    )
    outcomes: dict[str, int] = {o.value: 0 for o in Outcome}
    records_seen = 0
    partitions = await topic_partitions(
        settings.kafka_bootstrap_servers, settings.invoice_events_topic
    )
    tps = [TopicPartition(settings.invoice_events_topic, p) for p in partitions]
    await consumer.start()
    try:
        if not tps:
            return RebuildReport(0, 0, outcomes)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if await consumer.position(tp) < end[tp]}
        async with asyncio.timeout(idle_timeout) as deadline:
            while remaining:
                batches = await consumer.getmany(*remaining, timeout_ms=500)
                replayed = [
                    r for tp, records in batches.items() for r in records if r.offset < end[tp]
                ]
                if replayed:
                    projected = await projector.project(replayed)
                    for outcome in projected.outcomes:
                        if outcome is not None:
                            outcomes[outcome.value] += 1
                            records_seen += 1
                    for tp, offset in projected.resume_at.items():
                        consumer.seek(tp, offset)
                if batches:
                    deadline.reschedule(asyncio.get_running_loop().time() + idle_timeout)
                for tp in list(remaining):
                    if await consumer.position(tp) >= end[tp]:
                        remaining.discard(tp)
    finally:
        await consumer.stop()
    log.info("projector.rebuilt", partitions=len(tps), records=records_seen, **outcomes)
    return RebuildReport(len(tps), records_seen, outcomes)


async def _main(rebuild_only: bool) -> int:
    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    mongo = make_client(settings.mongodb_uri, app_name="qbo-sync-projector")
    producer = LazyProducer(settings.kafka_bootstrap_servers, f"{settings.kafka_client_id}-dlq")
    projector = Projector(
        ReadInvoices(mongo[settings.mongodb_database]),
        DeadLetters(producer, settings.dead_letter_topic),
        ApiMetrics(),
        batch_size=settings.projector_batch_size,
        read_ahead=settings.projector_read_ahead,
    )
    try:
        if rebuild_only:
            report = await rebuild(settings, projector)
            print(
                jsoncodec.dumps(
                    {
                        "rebuilt": True,
                        "partitions": report.partitions,
                        "records": report.records,
                        "outcomes": dict(report.outcomes),
                    }
                ),
                flush=True,
            )
            return 0
        task = asyncio.create_task(run_projector(settings, projector))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return 0
    finally:
        await producer.stop()
        await mongo.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.api.projector")
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="drop the read model, replay the invoice events topic from the earliest offset, exit",
    )
    args = parser.parse_args(argv)
    sys.exit(asyncio.run(_main(args.rebuild)))


if __name__ == "__main__":
    main()
