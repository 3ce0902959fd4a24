"""The projector's dead-letter topic: a record that will never project, kept with the reason."""

from __future__ import annotations

from aiokafka import ConsumerRecord
from aiokafka.errors import MessageSizeTooLargeError

from services.api.producer import LazyProducer
from services.api.projector.records import Rejected

_MAX_REASON = 1000


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
