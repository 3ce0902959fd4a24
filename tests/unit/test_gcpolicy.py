"""Full garbage collections on a clock, not on heap growth (services/common/gcpolicy.py)."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from services.common.gcpolicy import NEVER, full_collections_on_a_clock


async def test_growth_triggers_no_full_collection_and_the_clock_does() -> None:
    before = gc.get_threshold()
    full: list[int] = []

    def seen(phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info["generation"] == 2:
            full.append(1)

    gc.callbacks.append(seen)
    try:
        async with full_collections_on_a_clock(0.2):
            assert gc.get_threshold() == (before[0], before[1], NEVER)
            assert gc.get_freeze_count() > 0  # start-up's objects are out of every collection
            full.clear()
            # Long-lived objects growing many times over: by default, a full collection on each
            # quarter of growth.
            kept: list[list[dict[str, int]]] = [[{} for _ in range(50)] for _ in range(20_000)]
            assert not full
            await asyncio.sleep(0.5)
            assert full  # the clock's
            assert len(kept) == 20_000
    finally:
        gc.callbacks.remove(seen)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
