"""Client-side enforcement of Intuit's per-realm request limits.

Intuit throttles each (app, realmId) pair at 500 requests per minute, 10 requests
per second and at most 10 requests in flight; going over any returns 429. It is cheaper to wait here
than to burn retries on 429s, so every HTTP attempt takes a slot first. The
budget is per process: several processes talking to the same realm must share
the allowance between them (e.g. configure each with a fraction of the limits).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

INTUIT_MAX_CONCURRENT = 10
INTUIT_MAX_PER_MINUTE = 500
INTUIT_MAX_PER_SECOND = 10


@dataclass
class _RealmState:
    concurrency: asyncio.Semaphore
    window_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    started: deque[float] = field(default_factory=deque)
    active: int = 0


def _newest(started: deque[float], count: int) -> list[float]:
    """The last `count` grant times, oldest first."""
    return list(itertools.islice(reversed(started), count))[::-1]


class RealmBudget:
    """Caps concurrent requests, requests per second and per rolling window, per realm.

    ``slot()`` waits (it never fails) until the realm has both a free concurrency
    permit and room in the rolling window. A request counts against the window
    from the moment its slot is granted.
    """

    def __init__(
        self,
        max_concurrent: int = INTUIT_MAX_CONCURRENT,
        max_per_window: int = INTUIT_MAX_PER_MINUTE,
        window_s: float = 60.0,
        max_per_second: int = INTUIT_MAX_PER_SECOND,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if max_concurrent < 1 or max_per_window < 1 or window_s <= 0 or max_per_second < 1:
            raise ValueError("budget limits must be positive")
        self.max_concurrent = max_concurrent
        self.max_per_window = max_per_window
        self.window_s = window_s
        self.max_per_second = max_per_second
        self._clock = clock
        self._sleep = sleep
        self._realms: dict[str, _RealmState] = {}

    def _state(self, realm_id: str) -> _RealmState:
        state = self._realms.get(realm_id)
        if state is None:
            state = _RealmState(asyncio.Semaphore(self.max_concurrent))
            self._realms[realm_id] = state
        return state

    def in_flight(self, realm_id: str) -> int:
        """Number of slots currently held for ``realm_id``."""
        state = self._realms.get(realm_id)
        if state is None:
            return 0
        return state.active

    def used_in_window(self, realm_id: str) -> int:
        """Number of slots granted for ``realm_id`` within the current window."""
        state = self._realms.get(realm_id)
        if state is None:
            return 0
        self._expire(state, self._clock())
        return len(state.started)

    def _expire(self, state: _RealmState, now: float) -> None:
        horizon = now - self.window_s
        while state.started and state.started[0] <= horizon:
            state.started.popleft()

    async def _wait_for_window(self, state: _RealmState) -> None:
        # One waiter at a time, so slots are granted in arrival order and each
        # waiter computes its delay from an up-to-date window.
        async with state.window_lock:
            while True:
                now = self._clock()
                self._expire(state, now)
                if len(state.started) >= self.max_per_window:
                    await self._sleep(max(state.started[0] + self.window_s - now, 0.0))
                    continue
                recent = _newest(state.started, self.max_per_second)
                if len(recent) >= self.max_per_second and now - recent[0] < 1.0:
                    # At least a millisecond: a wait rounded to nothing would spin.
                    await self._sleep(max(1.0 - (now - recent[0]), 0.001))
                    continue
                state.started.append(now)
                return

    @asynccontextmanager
    async def slot(self, realm_id: str) -> AsyncIterator[None]:
        """Hold one request slot for ``realm_id`` for the duration of the block."""
        state = self._state(realm_id)
        async with state.concurrency:
            await self._wait_for_window(state)
            state.active += 1
            try:
                yield
            finally:
                state.active -= 1
