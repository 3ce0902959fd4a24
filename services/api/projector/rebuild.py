"""`--rebuild`: drop the read model and replay the whole invoice events topic.

It uses its own partition assignment and commits nothing, so the consumer group's members (the
api's projector) are left undisturbed; every write is version-guarded, so the replayed older
versions never overwrite the newer ones they may write meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

import structlog
from aiokafka import TopicPartition

from services.api.projector.admin import topic_partitions
from services.api.projector.projection import Outcome, Projector
from services.common.kafka import make_consumer
from services.common.settings import Settings

log = structlog.get_logger(__name__)


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
    offsets seen at the start."""
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
