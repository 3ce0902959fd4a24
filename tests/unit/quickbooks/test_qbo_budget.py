"""RealmBudget with a fake clock: concurrency cap, per-second cap and rolling per-minute cap."""

from __future__ import annotations

import asyncio

import pytest

from services.sync.quickbooks.budget import RealmBudget

REALM = "123"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay
        await asyncio.sleep(0)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def test_eleventh_concurrent_request_waits_for_a_free_slot(clock: FakeClock) -> None:
    budget = RealmBudget(max_per_second=100, clock=clock, sleep=clock.sleep)
    release = [asyncio.Event() for _ in range(11)]
    entered: list[int] = []

    async def request(i: int) -> None:
        async with budget.slot(REALM):
            entered.append(i)
            await release[i].wait()

    tasks = [asyncio.create_task(request(i)) for i in range(11)]
    await settle()
    assert sorted(entered) == list(range(10))
    assert budget.in_flight(REALM) == 10

    release[3].set()
    await settle()
    assert entered[-1] == 10
    assert budget.in_flight(REALM) == 10
    assert clock.sleeps == []  # waiting for concurrency is not a timed sleep

    for event in release:
        event.set()
    await asyncio.gather(*tasks)
    assert budget.in_flight(REALM) == 0


async def test_realms_have_independent_allowances(clock: FakeClock) -> None:
    budget = RealmBudget(clock=clock, sleep=clock.sleep)
    release = asyncio.Event()

    async def hold() -> None:
        async with budget.slot(REALM):
            await release.wait()

    holders = [asyncio.create_task(hold()) for _ in range(10)]
    await settle()
    assert budget.in_flight(REALM) == 10

    async with budget.slot("456"):
        assert budget.in_flight("456") == 1

    release.set()
    await asyncio.gather(*holders)


async def test_request_501_in_a_minute_waits_until_the_window_frees(clock: FakeClock) -> None:
    # Ten a second exactly sits on the per-second limit; this test is about the minute.
    budget = RealmBudget(max_per_second=100, clock=clock, sleep=clock.sleep)
    for _ in range(500):
        async with budget.slot(REALM):
            pass
        clock.now += 0.1  # requests at t = 0.0, 0.1, ..., 49.9
    assert clock.now == pytest.approx(50.0)
    assert budget.used_in_window(REALM) == 500
    assert clock.sleeps == []

    async with budget.slot(REALM):
        entered_at = clock.now
    assert clock.sleeps == [pytest.approx(10.0)]
    assert entered_at == pytest.approx(60.0)  # the request from t=0 left the window

    async with budget.slot(REALM):
        second_at = clock.now
    assert second_at == pytest.approx(60.1)  # next one waits for the t=0.1 request
    assert budget.used_in_window(REALM) == 500


async def test_window_waiters_are_served_in_order(clock: FakeClock) -> None:
    budget = RealmBudget(
        max_concurrent=10, max_per_window=2, window_s=10.0, clock=clock, sleep=clock.sleep
    )
    entries: list[tuple[int, float]] = []

    async def request(i: int) -> None:
        async with budget.slot(REALM):
            entries.append((i, clock.now))

    await asyncio.gather(*(request(i) for i in range(5)))
    assert entries == [(0, 0.0), (1, 0.0), (2, 10.0), (3, 10.0), (4, 20.0)]


async def test_cancelled_waiter_releases_its_concurrency_permit(clock: FakeClock) -> None:
    gate = asyncio.Event()
    sleeps: list[float] = []

    async def gated_sleep(delay: float) -> None:
        sleeps.append(delay)
        await gate.wait()
        clock.now += delay

    budget = RealmBudget(
        max_concurrent=1, max_per_window=1, window_s=60.0, clock=clock, sleep=gated_sleep
    )
    async with budget.slot(REALM):
        pass

    async def request() -> None:
        async with budget.slot(REALM):
            pass

    waiter = asyncio.create_task(request())
    await settle()
    assert sleeps == [60.0]  # parked waiting for the window
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert budget.in_flight(REALM) == 0

    clock.now = 60.0
    # With a leaked permit (max_concurrent=1) this would block forever.
    await asyncio.wait_for(request(), timeout=1.0)
    assert budget.used_in_window(REALM) == 1


async def test_eleventh_request_in_a_second_waits_for_the_next_second(clock: FakeClock) -> None:
    budget = RealmBudget(clock=clock, sleep=clock.sleep)
    for _ in range(10):
        async with budget.slot(REALM):
            pass
        clock.now += 0.05  # ten requests within half a second, one at a time
    async with budget.slot(REALM):
        entered_at = clock.now
    assert clock.sleeps == [pytest.approx(0.5)]
    assert entered_at == pytest.approx(1.0)  # the first one left the last second


def test_rejects_non_positive_limits() -> None:
    with pytest.raises(ValueError):
        RealmBudget(max_concurrent=0)
    with pytest.raises(ValueError):
        RealmBudget(window_s=0)
    with pytest.raises(ValueError):
        RealmBudget(max_per_second=0)
