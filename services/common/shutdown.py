"""How the services stop (docs/design.md "Stopping"): on SIGTERM/SIGINT, and without waiting
on Kafka for ever.

Signals. uvicorn, while it serves, puts its own SIGTERM/SIGINT handlers in place; when it
returns it restores the ones it found and raises again each signal it caught. With Python's
defaults in place that re-raised SIGTERM ends the process on the spot (exit 143), before the
sync worker has committed what it finished and left its group; as PID 1 of a container the
same signal is ignored instead. `stop_on_signals` installs the process's own handlers first
(with `signal.signal`, so uvicorn restores them), and the re-raised signal only asks again
for the stop already under way.

Consumers. A consumer subscribed before `start()` returns from it only once its group has
assigned it partitions, and a join lasts until every member the broker knows has rejoined or
been dropped: a member that crashed is dropped only after its session timeout (10 s).
aiokafka's `stop()` also lets a join in progress finish first. A worker told to stop while
joining behind a crashed one so outlived a 10 s grace period. `start_unless_stopped` lets the
stop end that wait, and `stop_consumer` bounds the stop as Kafka's own consumer bounds its
close (`KafkaConsumer.close(Duration)`). Giving up loses nothing: both act only when all that
is done has been committed, and the broker drops the member.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator
from types import FrameType

import structlog
from aiokafka import AIOKafkaConsumer

log = structlog.get_logger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Leaving a group is one request; anything longer is a join or an unreachable broker.
CONSUMER_STOP_TIMEOUT_S = 3.0


@contextlib.contextmanager
def stop_on_signals(on_stop: Callable[[], None]) -> Iterator[None]:
    """Inside: SIGTERM and SIGINT call `on_stop` in the running event loop (every time they
    arrive). The handlers found are restored on the way out."""
    loop = asyncio.get_running_loop()

    def handler(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(on_stop)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, found in previous.items():
            signal.signal(sig, found)


async def stop_consumer(
    consumer: AIOKafkaConsumer, within_s: float = CONSUMER_STOP_TIMEOUT_S
) -> bool:
    """Stop `consumer` and leave its group, giving up after `within_s`. Call it only when all
    that is done has been committed. True when it stopped in time."""
    try:
        await asyncio.wait_for(consumer.stop(), within_s)
    except TimeoutError:
        log.warning(
            "kafka.consumer_stop_gave_up",
            within_s=within_s,
            hint="a group join or the broker did not answer; the group drops this member "
            "after its session timeout",
        )
        return False
    return True


async def start_unless_stopped(
    consumer: AIOKafkaConsumer,
    stop: asyncio.Event,
    stop_within_s: float = CONSUMER_STOP_TIMEOUT_S,
) -> bool:
    """Start `consumer`, which (subscribed) waits until its group has assigned it partitions,
    unless `stop` is set first: then the start is abandoned, the consumer stopped (bounded) and
    False returned. Nothing was assigned, so nothing is left uncommitted."""
    starting = asyncio.ensure_future(consumer.start())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if starting.done():
        starting.result()  # a failed start raises here
        return True
    starting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await starting
    log.info("kafka.start_abandoned", reason="stop requested before the group assigned partitions")
    await stop_consumer(consumer, stop_within_s)
    return False
