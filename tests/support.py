"""Helpers the tests share: a movable clock, a real uvicorn server on a loopback port, and the
spans of a test recorded in memory."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import uvicorn
from aiokafka import AIOKafkaConsumer, TopicPartition
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.types import ASGIApp

from services.common import tracing

T = TypeVar("T")


@contextmanager
def recorded_spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for the block, every finished span kept in memory; off again afterwards."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.configure(provider)
    try:
        yield exporter
    finally:
        tracing.configure(None)


class MovableClock:
    """Real time plus an offset the test can move forward (tokens expire, states age)."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, **delta: float) -> None:
        self.offset += timedelta(**delta)


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@asynccontextmanager
async def serve_asgi(app: ASGIApp, sock: socket.socket) -> AsyncIterator[str]:
    """Serve `app` with uvicorn on an already bound socket; yields its base URL."""
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            # uvicorn offers no start-up event to wait on.
            while not server.started:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        host, port = sock.getsockname()[:2]
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await task


async def eventually(
    probe: Callable[[], Awaitable[T]],
    until: Callable[[T], bool],
    timeout_s: float = 30.0,
    interval_s: float = 0.1,
) -> T:
    """Poll `probe` until `until(result)`; fail with the last result after the timeout."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result = await probe()
        if until(result):
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s; last value: {result!r}")
        await asyncio.sleep(interval_s)


async def read_topic(bootstrap_servers: str, topic: str, timeout_s: float = 30.0) -> list[Any]:
    """Every record of `topic` acknowledged before the call, from the beginning: read up to the
    end offsets found at the call, so it returns as soon as those records are in (producers use
    acks=all, so an acknowledged record is below them). A record produced later is not waited
    for: a test expecting one waits for its condition first (`eventually`)."""
    # Subscribed, the consumer's start waits for the topic's metadata (its partitions).
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        async with asyncio.timeout(timeout_s):
            partitions = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.unsubscribe()
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
            records: list[Any] = []
            while unread := [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                batch = await consumer.getmany(*unread, timeout_ms=1000, max_records=5000)
                for tp, received in batch.items():
                    records.extend(r for r in received if r.offset < ends[tp])
            return records
    finally:
        await consumer.stop()
