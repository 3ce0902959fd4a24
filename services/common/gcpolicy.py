"""When the garbage collector makes its full collections.

CPython makes a full (oldest-generation) collection whenever the long-lived objects have grown
by a quarter since the last one. A sync worker refreshing dozens of companies at once holds
hundreds of thousands of objects (their pages in flight), and the heap grows in steps of a
quarter every second or so: in `make bench` (figure 8) it made a full collection every 0.4-1.5 s,
each 0.1-0.5 s with the event loop stopped and nothing to free (the decoded pages hold no
cycles), which was a quarter of the worker's CPU and the whole of a small command's worst wait.

So full collections are made on a clock instead (`GC_FULL_COLLECTION_INTERVAL_S`), and the
objects alive after start-up are frozen out of them. The young generations are collected as
usual: short-lived cycles (a failed request's traceback) still go at once; a cycle that lived
long enough to reach the oldest generation waits for the next full collection.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog

log = structlog.get_logger(__name__)

# The oldest generation's threshold: never reached (the full collections are the clock's).
NEVER = 2**30


@asynccontextmanager
async def full_collections_on_a_clock(interval_s: float) -> AsyncIterator[None]:
    """Inside: start-up's objects frozen, no growth-triggered full collection, and one full
    collection every `interval_s` instead. The collector's settings are restored on the way out."""
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(thresholds[0], thresholds[1], NEVER)
    clock = asyncio.create_task(_collect_every(interval_s), name="gc-full-collections")
    try:
        yield
    finally:
        clock.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await clock
        gc.set_threshold(*thresholds)
        gc.unfreeze()


async def _collect_every(interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        started = time.perf_counter()
        freed = gc.collect()
        took_ms = round((time.perf_counter() - started) * 1000, 1)
        log.debug("gc.full_collection", freed=freed, ms=took_ms)
