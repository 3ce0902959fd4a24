"""Turns at the event loop for the CPU-heavy steps of a page.

A page of 1,000 invoices takes tens of milliseconds of CPU to map, to build the documents of and
to turn into events, without an `await` in between. When dozens of realms' pages are ready at
once, every `await` of a small command (a webhook's one invoice) waits behind all of them: with
50 companies refreshing, a change of a 51st took many seconds to be stored. Taking a turn
first, one step at a time in arrival order, leaves the waiting steps out of the loop's ready
queue, so a small command's next step runs after at most one such step (docs/design.md
invariant 8, companies do not wait for each other). The CPU is the same; only the order
changes. I/O is never done inside a turn, so database and Kafka calls still overlap.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


@asynccontextmanager
async def cpu_turn() -> AsyncIterator[None]:
    """Run the body (synchronous CPU work only) when the steps that asked before are done."""
    loop = asyncio.get_running_loop()
    lock = _turns.get(loop)
    if lock is None:
        lock = _turns[loop] = asyncio.Lock()
    async with lock:
        # Holding the turn across one pass of the loop: the steps ready now (a small command's)
        # run first, and the other heavy steps asking meanwhile wait in line instead of each
        # taking the free lock in the same pass.
        await asyncio.sleep(0)
        yield
