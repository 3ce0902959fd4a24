"""One idempotent Kafka producer per api process, started on first use.

Starting lazily lets the api serve reads (and report "not ready") while Kafka is down, instead
of refusing to start; the first publish or readiness probe after Kafka is back connects it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from services.common.kafka import make_producer

Headers = Sequence[tuple[str, bytes]]


class LazyProducer:
    def __init__(
        self,
        bootstrap_servers: str,
        client_id: str,
        factory: Callable[[str, str], AIOKafkaProducer] = make_producer,
    ) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._client_id = client_id
        self._factory = factory
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def _started(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = self._factory(self._bootstrap_servers, self._client_id)
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Headers | None = None,
    ) -> RecordMetadata:
        """Produce one record and wait for the broker's acknowledgement (acks=all)."""
        producer = await self._started()
        return await producer.send_and_wait(
            topic, value=value, key=key, headers=list(headers) if headers else None
        )

    async def ping(self, within_s: float) -> None:
        """Raise unless the cluster answers a metadata request within `within_s` seconds."""
        async with asyncio.timeout(within_s):
            producer = await self._started()
            await producer.client.fetch_all_metadata()

    async def stop(self) -> None:
        async with self._lock:
            if self._producer is not None:
                await self._producer.stop()
                self._producer = None
