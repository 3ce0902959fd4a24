"""Per-realm request throttling with Intuit's published limits.

Intuit limits each company (realm) per app to 10 concurrent requests, 10 requests a second and
500 requests per rolling minute, and answers HTTP 429 past any of them: the XML fault
`ThrottleExceeded` (code 3001) and no ``Retry-After`` header; Intuit's guidance is to wait 60 s
after a 429. Rejected requests do not consume quota.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

WINDOW_S = 60.0
SECOND_S = 1.0


@dataclass
class _RealmWindow:
    in_flight: int = 0
    recent: deque[float] = field(default_factory=deque)  # admissions of the last minute


@dataclass(frozen=True)
class ThrottleDecision:
    allowed: bool
    reason: str = ""


class Throttle:
    """Concurrency + per-second + rolling-minute limiter, keyed by realm id."""

    def __init__(
        self,
        concurrency: int,
        per_minute: int,
        clock: Callable[[], float],
        per_second: int = 10,
    ) -> None:
        self.concurrency = concurrency
        self.per_minute = per_minute
        self.per_second = per_second
        self._clock = clock
        self._realms: dict[str, _RealmWindow] = {}
        self.enabled = True

    def try_acquire(self, realm_id: str) -> ThrottleDecision:
        """Admit a request (caller must ``release`` it) or say why not."""
        window = self._realms.setdefault(realm_id, _RealmWindow())
        if not self.enabled:
            window.in_flight += 1
            return ThrottleDecision(True)
        now = self._clock()
        recent = window.recent
        while recent and recent[0] <= now - WINDOW_S:
            recent.popleft()
        if window.in_flight >= self.concurrency:
            return ThrottleDecision(
                False, f"Too many concurrent requests: limit is {self.concurrency} per realm"
            )
        if len(recent) >= self.per_minute:
            return ThrottleDecision(
                False, f"Too many requests: limit is {self.per_minute} per minute per realm"
            )
        if self._in_last_second(recent, now) >= self.per_second:
            return ThrottleDecision(
                False, f"Too many requests: limit is {self.per_second} per second per realm"
            )
        window.in_flight += 1
        recent.append(now)
        return ThrottleDecision(True)

    def _in_last_second(self, recent: deque[float], now: float) -> int:
        count = 0
        for started in reversed(recent):
            if started <= now - SECOND_S:
                break
            count += 1
        return count

    def release(self, realm_id: str) -> None:
        window = self._realms.get(realm_id)
        if window is not None and window.in_flight > 0:
            window.in_flight -= 1

    def in_flight(self, realm_id: str) -> int:
        window = self._realms.get(realm_id)
        return window.in_flight if window else 0

    def reset(self) -> None:
        self._realms.clear()
