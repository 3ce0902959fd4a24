"""read_ahead: the next page is asked for while the caller holds the current one; failures
surface where the caller asks, and a caller that stops early leaves no request running."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from services.sync.overlap import Overlapped, read_ahead


class Pages:
    """A source of pages that logs when each is asked for, and can fail or hang on one."""

    def __init__(self, count: int, fail_at: int | None = None, hang_at: int | None = None):
        self.count, self.fail_at, self.hang_at = count, fail_at, hang_at
        self.log: list[str] = []

    async def __call__(self) -> AsyncIterator[int]:
        for n in range(1, self.count + 1):
            self.log.append(f"asked {n}")
            if n == self.fail_at:
                raise ConnectionError(f"page {n}")
            if n == self.hang_at:
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    self.log.append(f"cancelled {n}")
                    raise
            yield n


async def let_others_run() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_the_next_page_is_asked_for_while_the_caller_holds_this_one() -> None:
    pages = Pages(3)
    seen: list[int] = []
    async for page in read_ahead(pages()):
        await let_others_run()  # the caller storing its page
        seen.append(page)
        pages.log.append(f"stored {page}")
    assert seen == [1, 2, 3]
    assert pages.log == ["asked 1", "asked 2", "stored 1", "asked 3", "stored 2", "stored 3"]


async def test_a_failed_page_is_raised_where_the_caller_asks_for_it() -> None:
    pages = Pages(3, fail_at=2)
    seen: list[int] = []
    with pytest.raises(ConnectionError, match="page 2"):
        async for page in read_ahead(pages()):
            await let_others_run()
            seen.append(page)
    assert seen == [1]


async def test_a_caller_that_stops_early_leaves_no_request_running() -> None:
    pages = Pages(3, hang_at=2)
    ahead = read_ahead(pages())
    assert await anext(ahead) == 1
    await let_others_run()
    await ahead.aclose()
    assert pages.log == ["asked 1", "asked 2", "cancelled 2"]


async def test_at_most_limit_coroutines_run_at_once_and_every_result_is_kept() -> None:
    running, most = 0, 0
    gates = [asyncio.Event() for _ in range(3)]

    async def work(n: int) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await gates[n].wait()
        running -= 1
        return n

    overlapped: Overlapped[int] = Overlapped(2)
    await overlapped.submit(work(0))
    await overlapped.submit(work(1))
    third = asyncio.create_task(overlapped.submit(work(2)))
    await let_others_run()
    assert running == 2 and not third.done()
    gates[0].set()
    await third  # started once the first finished
    gates[1].set()
    gates[2].set()
    assert sorted(await overlapped.drain()) == [0, 1, 2]
    assert most == 2


async def test_a_failure_cancels_the_others_and_is_raised() -> None:
    log: list[str] = []

    async def fails() -> int:
        await let_others_run()
        raise ConnectionError("page write")

    async def hangs() -> int:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            log.append("cancelled")
            raise
        return 0

    overlapped: Overlapped[int] = Overlapped(2)
    await overlapped.submit(hangs())
    await overlapped.submit(fails())
    with pytest.raises(ConnectionError, match="page write"):
        await overlapped.drain()
    assert log == ["cancelled"]


async def test_cancel_leaves_nothing_running() -> None:
    started = asyncio.Event()

    async def hangs() -> int:
        started.set()
        await asyncio.Event().wait()
        return 0

    overlapped: Overlapped[int] = Overlapped(2)
    await overlapped.submit(hangs())
    await started.wait()
    await overlapped.cancel()
    assert await overlapped.drain() == []
