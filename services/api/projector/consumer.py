"""The projector in its consumer group: it reads ahead of its batches into a backlog, projects
a batch at a time with the companies that have the fewest events waiting first
(`services/api/backlog.py`, docs/design.md invariant 14), and commits each partition only up to
its lowest event not projected yet; on a failure of Kafka or the database it retries with
back-off."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection
from dataclasses import dataclass, field

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from services.api.backlog import EventBacklog, in_offset_order
from services.api.projector.projection import (
    RETRYABLE,
    ProjectionInterrupted,
    Projector,
    Record,
)
from services.common.kafka import RevokeFirst, ensure_topics, make_consumer, topics_for
from services.common.mongo import counted_as
from services.common.offsets import OffsetTracker
from services.common.settings import Settings
from services.common.shutdown import stop_consumer

log = structlog.get_logger(__name__)


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
        loop = ProjectorLoop(projector, consumer)
        consumer.subscribe(
            [settings.invoice_events_topic],
            listener=RevokeFirst(loop.partitions_revoked, "projector"),
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
            await loop.run()
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
            await stop_consumer(consumer)


@dataclass
class ProjectorLoop:
    """One consumer's run: its backlog of events read ahead and what of each partition is done."""

    projector: Projector
    consumer: AIOKafkaConsumer
    backlog: EventBacklog = field(default_factory=EventBacklog)
    offsets: OffsetTracker[TopicPartition] = field(default_factory=OffsetTracker)

    async def run(self) -> None:
        """Project until cancelled: read ahead into the backlog (at most `read_ahead` events),
        project a batch of it, smallest companies first, commit what is done."""
        failures = 0
        while True:
            await self._read_ahead()
            if not self.backlog:
                continue
            done = await self._project_next()
            failures = 0 if done else failures + 1
            if not done:
                await asyncio.sleep(self.projector.delay_after(failures))

    async def _read_ahead(self) -> None:
        """Take what Kafka has ready (waiting for it only when nothing is left to project),
        pausing every partition while the backlog holds `read_ahead` events."""
        consumer, read_ahead = self.consumer, self.projector.read_ahead
        full = len(self.backlog) >= read_ahead
        if full and not consumer.paused():
            consumer.pause(*consumer.assignment())
        elif not full and consumer.paused():
            consumer.resume(*consumer.paused())
        batches = await consumer.getmany(
            timeout_ms=0 if self.backlog else 500,
            max_records=max(read_ahead - len(self.backlog), 1),
        )
        for tp, records in batches.items():
            self.backlog.add(r for r in records if self.offsets.received(tp, r.offset))

    async def _project_next(self) -> bool:
        """Project one batch of the backlog, put back what is left for later, commit every
        partition up to its lowest event not done. On a retryable failure, report False (the
        batch's unfinished events are back in the backlog)."""
        batch = in_offset_order(self.backlog.take(self.projector.batch_size))
        failed = False
        try:
            resume_at = (await self.projector.project(batch)).resume_at
        except ProjectionInterrupted as interrupted:
            resume_at = interrupted.resume_at
            failed = True
        left: list[Record] = []
        for record in batch:
            tp = TopicPartition(record.topic, record.partition)
            if tp in resume_at and record.offset >= resume_at[tp]:
                left.append(record)
            else:
                self.offsets.done(tp, record.offset)
        owned = self.consumer.assignment()
        self.backlog.put_back(r for r in left if TopicPartition(r.topic, r.partition) in owned)
        await self.commit()
        return not failed

    async def commit(self, partitions: Collection[TopicPartition] | None = None) -> None:
        """Commit each owned partition (of `partitions`, or all) up to its lowest event not
        projected yet."""
        owned = self.consumer.assignment()
        commits = {
            tp: offset
            for tp, offset in self.offsets.committable().items()
            if tp in owned and (partitions is None or tp in partitions)
        }
        for tp in owned:
            highwater, position = self.consumer.highwater(tp), self.offsets.position(tp)
            if highwater is not None and position is not None:
                lag = max(highwater - position, 0)
                self.projector.metrics.lag.labels(str(tp.partition)).set(lag)
        try:
            if commits:
                await self.consumer.commit(commits)
                self.offsets.committed(commits)
        except (CommitFailedError, IllegalStateError) as exc:
            # A partition moved to another member: it re-reads from the last commit and
            # the version guard makes the repeat harmless.
            log.info("projector.commit_lost", error=str(exc))

    async def partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        """Before another member takes `revoked`: commit what is done of them (never past
        what is not) and forget their events; the next owner reads them again."""
        with contextlib.suppress(KafkaError):
            await self.commit(revoked)
        self.backlog.drop(revoked)
        for tp in revoked:
            self.offsets.forget(tp)
