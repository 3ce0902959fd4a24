"""In-memory fakes of time for unit tests: a clock the test moves and a sleep that returns when
the test has moved the clock past its deadline. Nothing waits on real time."""

from __future__ import annotations

import asyncio


async def settle(turns: int = 100) -> None:
    """Let every task that can make progress without time passing do so."""
    for _ in range(turns):
        await asyncio.sleep(0)


class FakeTime:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + delay, future))
        await future

    @property
    def sleepers(self) -> int:
        return sum(1 for _, f in self._sleepers if not f.done())

    async def advance(self, seconds: float) -> None:
        self.now += seconds
        due = [(t, f) for t, f in self._sleepers if t <= self.now]
        self._sleepers = [(t, f) for t, f in self._sleepers if t > self.now]
        for _, future in due:
            if not future.done():
                future.set_result(None)
        await settle()
