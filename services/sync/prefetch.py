"""Reading the next QBO page while the current one is stored.

A refresh's pages were fetched, then stored and emitted, one after the other: QBO (its latency,
or the emulator's CPU) and the database took turns idling. Asking for page n+1 as soon as page
n is handed out overlaps the two; one page ahead at most, so memory stays at two pages and a
realm makes at most two requests at once, well within Intuit's 10 concurrent per realm.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TypeVar

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
