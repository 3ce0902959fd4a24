"""The projector in its consumer group: batch after batch, each committed after its writes,
rewound and retried with back-off when Kafka or the database fails."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError

from services.api.projector.projection import RETRYABLE, ProjectionInterrupted, Projector
from services.common.kafka import ensure_topics, make_consumer, topics_for
from services.common.mongo import counted_as
from services.common.settings import Settings

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
            settings.invoice_events_topic,
            client_id=f"{settings.kafka_client_id}-projector",
            max_poll_records=settings.projector_batch_size,
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
            await consume(projector, consumer)
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


async def consume(projector: Projector, consumer: AIOKafkaConsumer) -> None:
    """Project batch after batch until cancelled; commit each batch after its writes."""
    failures = 0
    while True:
        batches = await consumer.getmany(timeout_ms=500)
        if not batches:
            continue
        done = await _project_batches(projector, consumer, batches)
        failures = 0 if done else failures + 1
        if not done:
            await asyncio.sleep(projector.delay_after(failures))


async def _project_batches(
    projector: Projector,
    consumer: AIOKafkaConsumer,
    batches: Mapping[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
) -> bool:
    """Project one `getmany` worth of records together, so the read model is read once per
    batch rather than once per partition, then commit what is done. On a retryable failure,
    rewind the unfinished partitions (after committing what is done) and report False."""
    failed = False
    try:
        projected = await projector.project([r for rs in batches.values() for r in rs])
        resume_at = projected.resume_at
    except ProjectionInterrupted as interrupted:
        resume_at = interrupted.resume_at
        failed = True
    commits: dict[TopicPartition, int] = {}
    for tp, records in batches.items():
        next_offset = resume_at.get(tp, records[-1].offset + 1)
        if tp in resume_at:
            consumer.seek(tp, next_offset)
        if next_offset > records[0].offset:
            commits[tp] = next_offset
        highwater = consumer.highwater(tp)
        if highwater is not None:
            projector.metrics.lag.labels(str(tp.partition)).set(max(highwater - next_offset, 0))
    if commits:
        try:
            await consumer.commit(commits)
        except CommitFailedError as exc:
            # A partition moved to another member: it re-reads from the last commit and
            # the version guard makes the repeat harmless.
            log.info("projector.commit_lost", error=str(exc))
    return not failed
