"""Turns at the event loop for the CPU-heavy steps of a page.

A page of 1,000 invoices takes tens of milliseconds of CPU (hundreds while the machine is
busy) to decode, to map, to build the documents of and to turn into events. When dozens of
realms' pages are ready at once, every `await` of a small command (a webhook's one invoice)
waits behind all of them: with 50 companies refreshing, a change of a 51st took many seconds
to be stored. So:

- a heavy step takes a turn first: one at a time, in arrival order, the others waiting out of
  the loop's ready queue;
- inside its turn it works a slice at a time (`SLICE` invoices) and lets the loop run between
  slices, so a small command's next step waits for one slice, not for a whole page;
- a small step (a few invoices, a short body) does not queue for a turn at all: it costs about
  a millisecond, and in the line it would wait for every heavy step that asked before it.

The CPU is the same; only the order changes (docs/design.md invariant 8, companies do not wait
for each other). I/O is never done inside a turn, so database and Kafka calls still overlap.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Up to this many invoices a step is small: mapping, building documents or events of one takes
# about 0.1 ms of CPU each (make bench, "sync CPU per stored invoice").
SMALL_STEP = 20
# The same for a JSON body to decode: about 1.5 KB an invoice.
SMALL_BODY_BYTES = 32 * 1024
# Invoices worked between two passes of the loop inside a turn: a few milliseconds of CPU.
SLICE = 50

_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def small_step(items: int) -> bool:
    return items <= SMALL_STEP


@asynccontextmanager
async def cpu_turn(small: bool = False) -> AsyncIterator[None]:
    """Run the body (CPU work; no I/O) when the heavy steps that asked before are done; a
    `small` one runs at once."""
    if small:
        yield
        return
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


async def run_steps(steps: Generator[None, None, R], small: bool = False) -> R:
    """Drive `steps` to its result in one turn, letting the loop run at each of its yields."""
    async with cpu_turn(small):
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            await asyncio.sleep(0)


async def in_slices(items: Sequence[T], work: Callable[[Sequence[T]], R]) -> list[R]:
    """`work` of each slice of `items` (`SLICE` at a time), in one turn (none if small)."""
    return await run_steps(_slices(items, work), small_step(len(items)))


def _slices(items: Sequence[T], work: Callable[[Sequence[T]], R]) -> Generator[None, None, list[R]]:
    results: list[R] = []
    for start in range(0, len(items), SLICE):
        if start:
            yield
        results.append(work(items[start : start + SLICE]))
    return results
