"""Overlapping a refresh's steps: reading the next QBO page while pages are stored, and
storing two pages at once.

A refresh's pages were fetched, then stored and emitted, one after the other: QBO (its latency,
or the emulator's CPU), this process's CPU and the database took turns idling. Asking for page
n+1 as soon as page n is handed out overlaps the first two; one page ahead at most, so a realm
makes at most two requests at once, well within Intuit's 10 concurrent per realm. Writing page
n+1 while page n's events are built and acknowledged overlaps the last two. Pages hold
different invoices, and each page keeps its own outbox entry (docs/design.md invariant 4).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")


async def read_ahead(items: AsyncIterator[T]) -> AsyncGenerator[T, None]:
    """The items of `items` in order, the next one asked for while the caller holds this one.
    A failure to get an item is raised where the caller asks for it, as without read-ahead; a
    caller that stops early has the pending request cancelled when this generator is closed."""
    pending: asyncio.Future[T] = asyncio.ensure_future(anext(items))
    try:
        while True:
            try:
                item = await pending
            except StopAsyncIteration:
                return
            pending = asyncio.ensure_future(anext(items))
            yield item
    finally:
        if not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
        elif not pending.cancelled():
            pending.exception()  # the caller stopped before asking: nothing left unretrieved


class Overlapped(Generic[T]):
    """Coroutines run as tasks, at most `limit` at once; their results gathered in the order
    they finish. The first failure cancels the others and is raised; so is any failure of the
    caller's own (`cancel`), so no task outlives the command that started it."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._running: set[asyncio.Task[T]] = set()
        self.results: list[T] = []

    async def submit(self, work: Coroutine[Any, Any, T]) -> None:
        """Start `work` once fewer than `limit` are running."""
        while len(self._running) >= self._limit:
            await self._finish_one()
        self._running.add(asyncio.ensure_future(work))

    async def drain(self) -> list[T]:
        """Wait for every task; the results of all of them."""
        while self._running:
            await self._finish_one()
        return self.results

    async def cancel(self) -> None:
        for task in self._running:
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        self._running.clear()

    async def _finish_one(self) -> None:
        done, self._running = await asyncio.wait(self._running, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            try:
                self.results.append(task.result())
            except BaseException:
                await self.cancel()
                for other in done:  # retrieved: one failure is raised, not logged as lost
                    if other is not task and not other.cancelled():
                        other.exception()
                raise
