"""`services/common/shutdown.py`: the stop signals reach the service however often they come,
and neither a consumer's start nor its stop can hold a stopping process (docs/design.md
"Stopping")."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import cast

import pytest
from aiokafka import AIOKafkaConsumer

from services.common.shutdown import start_unless_stopped, stop_consumer, stop_on_signals


class FakeConsumer:
    """`start` and `stop` that finish, fail or never return, as told."""

    def __init__(self, start: str = "ok", stop: str = "ok") -> None:
        self._start = start
        self._stop = stop
        self.calls: list[str] = []

    async def _act(self, how: str, name: str) -> None:
        self.calls.append(name)
        if how == "hang":
            await asyncio.Event().wait()
        if how == "fail":
            raise ConnectionError(f"{name} failed")

    async def start(self) -> None:
        await self._act(self._start, "start")

    async def stop(self) -> None:
        await self._act(self._stop, "stop")


def consumer(fake: FakeConsumer) -> AIOKafkaConsumer:
    return cast(AIOKafkaConsumer, fake)


async def test_every_stop_signal_calls_back_and_the_handlers_found_come_back() -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    called = asyncio.Event()
    count = 0

    def on_stop() -> None:
        nonlocal count
        count += 1
        if count == 3:
            called.set()

    with stop_on_signals(on_stop):
        # Three times, as uvicorn's re-raise after its own shutdown would add one more.
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGTERM):
            os.kill(os.getpid(), sig)
        await asyncio.wait_for(called.wait(), 5)
    assert count == 3
    assert {sig: signal.getsignal(sig) for sig in before} == before


async def test_a_stop_that_finishes_is_awaited() -> None:
    fake = FakeConsumer()
    assert await stop_consumer(consumer(fake), within_s=5) is True
    assert fake.calls == ["stop"]


async def test_a_stop_that_never_returns_is_given_up_after_its_bound() -> None:
    fake = FakeConsumer(stop="hang")
    assert await stop_consumer(consumer(fake), within_s=0.05) is False
    assert fake.calls == ["stop"]


async def test_a_failing_stop_is_not_hidden() -> None:
    with pytest.raises(ConnectionError, match="stop failed"):
        await stop_consumer(consumer(FakeConsumer(stop="fail")), within_s=5)


async def test_a_start_that_finishes_first_goes_on() -> None:
    fake = FakeConsumer()
    assert await start_unless_stopped(consumer(fake), asyncio.Event()) is True
    assert fake.calls == ["start"]


async def test_a_stop_during_a_start_that_waits_for_the_group_abandons_it_and_stops() -> None:
    fake = FakeConsumer(start="hang", stop="hang")
    stop = asyncio.Event()
    starting = asyncio.ensure_future(start_unless_stopped(consumer(fake), stop, 0.05))
    await asyncio.sleep(0.01)
    assert not starting.done()  # the join goes on until the stop
    stop.set()
    # The stop itself never returns either (a join in progress): it is given up too.
    done, _ = await asyncio.wait({starting}, timeout=10)
    assert starting in done and starting.result() is False
    assert fake.calls == ["start", "stop"]


async def test_a_stop_set_before_the_start_still_stops_the_consumer() -> None:
    fake = FakeConsumer(start="hang")
    stop = asyncio.Event()
    stop.set()
    assert await start_unless_stopped(consumer(fake), stop, 0.05) is False
    assert fake.calls == ["start", "stop"]


async def test_a_failing_start_raises_to_the_worker() -> None:
    with pytest.raises(ConnectionError, match="start failed"):
        await start_unless_stopped(consumer(FakeConsumer(start="fail")), asyncio.Event())
