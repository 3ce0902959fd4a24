"""How many records a topic holds: the sum over partitions of end minus beginning offsets.

With an idempotent, non-transactional producer every acknowledged send is exactly one offset, so
this counts acknowledged events without reading them (reading 100,000 would take longer than the
figure it checks).
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.api.projector import topic_partitions


async def topic_record_count(bootstrap_servers: str, topic: str) -> int:
    tps = [TopicPartition(topic, p) for p in await topic_partitions(bootstrap_servers, topic)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        return sum(ends[tp] - starts[tp] for tp in tps)
    finally:
        await consumer.stop()


async def move_group_to_end(bootstrap_servers: str, group_id: str, topic: str) -> None:
    """Commit the end of every partition for `group_id`: its next member starts there."""
    tps = [TopicPartition(topic, p) for p in await topic_partitions(bootstrap_servers, topic)]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, group_id=group_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.commit({tp: offset for tp, offset in ends.items()})
    finally:
        await consumer.stop()


async def group_lag(bootstrap_servers: str, group_id: str, topic: str) -> int:
    """Records of `topic` that `group_id` has not committed past yet (its members' backlog)."""
    tps = [TopicPartition(topic, p) for p in await topic_partitions(bootstrap_servers, topic)]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, group_id=group_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        lag = 0
        for tp in tps:
            committed = await consumer.committed(tp)
            lag += ends[tp] - (committed if committed is not None else starts[tp])
        return lag
    finally:
        await consumer.stop()
