"""How many records a topic holds: the sum over partitions of end minus beginning offsets.

With an idempotent, non-transactional producer every acknowledged send is exactly one offset, so
this counts acknowledged events without reading them (reading 100,000 would take longer than the
figure it checks).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.api.projector import topic_partitions


@contextlib.asynccontextmanager
async def _offsets_reader(
    bootstrap_servers: str, topic: str, group_id: str | None = None
) -> AsyncIterator[tuple[AIOKafkaConsumer, list[TopicPartition]]]:
    """A started consumer that reads offsets only (never records), and the topic's partitions."""
    tps = [TopicPartition(topic, p) for p in await topic_partitions(bootstrap_servers, topic)]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, group_id=group_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        yield consumer, tps
    finally:
        await consumer.stop()


async def topic_record_count(bootstrap_servers: str, topic: str) -> int:
    async with _offsets_reader(bootstrap_servers, topic) as (consumer, tps):
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        return sum(ends[tp] - starts[tp] for tp in tps)


async def group_lag(bootstrap_servers: str, group_id: str, topic: str) -> int:
    """Records of `topic` that `group_id` has not committed past yet (its members' backlog)."""
    async with _offsets_reader(bootstrap_servers, topic, group_id) as (consumer, tps):
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        lag = 0
        for tp in tps:
            committed = await consumer.committed(tp)
            lag += ends[tp] - (committed if committed is not None else starts[tp])
        return lag
