"""Turns at the event loop (services/sync/turns.py): with many realms' pages ready at once, a
small command's steps are not queued behind all of them (docs/design.md invariant 8)."""

from __future__ import annotations

import asyncio

from services.sync.turns import cpu_turn


async def test_a_small_commands_steps_wait_for_at_most_one_heavy_step_each() -> None:
    trace: list[str] = []

    async def heavy_page(n: int) -> None:
        await asyncio.sleep(0)  # its QBO page has just arrived
        async with cpu_turn():
            trace.append(f"page {n}")  # CPU only, no await: a whole page in one go

    async def small_command() -> None:
        for _ in range(5):
            await asyncio.sleep(0)  # one round trip each (a lookup, an insert, ...)
            trace.append("small")

    await asyncio.gather(*(heavy_page(n) for n in range(20)), small_command())

    assert trace.count("small") == 5 and len(trace) == 25
    # Each of its steps waited for at most one page: it was done before the sixth page (without
    # turns, all 20 pages run in the one pass of the loop where they are ready, before it).
    last_small = len(trace) - 1 - trace[::-1].index("small")
    assert trace[:last_small].count("small") == 4
    assert len(trace[:last_small]) - 4 <= 5, trace
    # The pages kept their order of arrival.
    assert [s for s in trace if s != "small"] == [f"page {n}" for n in range(20)]


async def test_turns_of_one_loop_do_not_hold_up_another_loop() -> None:
    async with cpu_turn():
        done = await asyncio.to_thread(asyncio.run, _one_turn())
    assert done


async def _one_turn() -> bool:
    async with cpu_turn():
        return True
