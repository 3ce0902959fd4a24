"""Topic metadata the projector's tools need from Kafka's admin API."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError


async def topic_partitions(bootstrap_servers: str, topic: str) -> list[int]:
    """The partition numbers of `topic`, in order."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if described["error_code"] != 0:
        raise KafkaError(f"cannot describe topic {topic} (error {described['error_code']})")
    return sorted(int(p["partition"]) for p in described["partitions"])
