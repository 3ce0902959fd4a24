"""Turns at the event loop (services/sync/turns.py): with many realms' pages ready at once, a
small command's steps are not queued behind all of them (docs/design.md invariant 8)."""

from __future__ import annotations

import asyncio
from collections.abc import Generator, Sequence

from services.sync.turns import SLICE, SMALL_STEP, cpu_turn, in_slices, run_steps, small_step


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


async def test_a_small_step_does_not_queue_behind_a_heavy_step_holding_the_turn() -> None:
    holding = asyncio.Event()
    release = asyncio.Event()

    async def heavy() -> None:
        async with cpu_turn():
            holding.set()
            await release.wait()  # (a heavy step never awaits inside; this one stands for many)

    task = asyncio.create_task(heavy())
    await holding.wait()
    async with cpu_turn(small=True):
        ran_while_held = not release.is_set()
    release.set()
    await task
    assert ran_while_held
    assert small_step(SMALL_STEP) and not small_step(SMALL_STEP + 1)


async def test_a_heavy_step_lets_small_commands_run_between_its_slices() -> None:
    trace: list[str] = []

    def work(part: Sequence[int]) -> int:
        trace.append("slice")
        return sum(part)

    async def small_command() -> None:
        for _ in range(3):
            await asyncio.sleep(0)
            trace.append("small")

    items = list(range(SLICE * 4))
    sums, _ = await asyncio.gather(in_slices(items, work), small_command())

    assert sums == [sum(items[i : i + SLICE]) for i in range(0, len(items), SLICE)]
    # Each of the small command's steps waited for one slice at most, not for the whole page.
    assert trace.count("slice") == 4 and trace.count("small") == 3
    assert trace.index("small") <= 1 and trace[-1] == "slice", trace
    assert all(trace[i : i + 2] != ["slice", "slice"] for i in range(trace.index("small") + 4)), (
        trace
    )


async def test_a_small_page_is_worked_in_one_go_and_run_steps_returns_the_result() -> None:
    assert await in_slices([1, 2, 3], sum) == [6]
    assert await in_slices([], sum) == []

    def steps() -> Generator[None, None, str]:
        yield
        yield
        return "done"

    assert await run_steps(steps()) == "done"
