"""Per-realm request throttling with Intuit's published limits.

Intuit limits each company (realm) to 10 concurrent requests and 500
requests per rolling minute and answers HTTP 429 past either limit. Rejected
requests do not consume quota, so a well-behaved client that backs off for
``Retry-After`` seconds gets through.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

WINDOW_S = 60.0


@dataclass
class _RealmWindow:
    in_flight: int = 0
    recent: deque[float] = field(default_factory=deque)


@dataclass(frozen=True)
class ThrottleDecision:
    allowed: bool
    reason: str = ""
    retry_after: int | None = None


class Throttle:
    """Concurrency + rolling-minute limiter, keyed by realm id."""

    def __init__(self, concurrency: int, per_minute: int, clock: Callable[[], float]) -> None:
        self.concurrency = concurrency
        self.per_minute = per_minute
        self._clock = clock
        self._realms: dict[str, _RealmWindow] = {}
        self.enabled = True

    def try_acquire(self, realm_id: str) -> ThrottleDecision:
        """Admit a request (caller must ``release`` it) or say why not."""
        if not self.enabled:
            window = self._realms.setdefault(realm_id, _RealmWindow())
            window.in_flight += 1
            return ThrottleDecision(True)
        window = self._realms.setdefault(realm_id, _RealmWindow())
        now = self._clock()
        recent = window.recent
        while recent and recent[0] <= now - WINDOW_S:
            recent.popleft()
        if window.in_flight >= self.concurrency:
            return ThrottleDecision(
                False,
                f"Too many concurrent requests: limit is {self.concurrency} per realm",
                retry_after=1,
            )
        if len(recent) >= self.per_minute:
            wait = max(1, math.ceil(recent[0] + WINDOW_S - now))
            return ThrottleDecision(
                False,
                f"Too many requests: limit is {self.per_minute} per minute per realm",
                retry_after=wait,
            )
        window.in_flight += 1
        recent.append(now)
        return ThrottleDecision(True)

    def release(self, realm_id: str) -> None:
        window = self._realms.get(realm_id)
        if window is not None and window.in_flight > 0:
            window.in_flight -= 1

    def in_flight(self, realm_id: str) -> int:
        window = self._realms.get(realm_id)
        return window.in_flight if window else 0

    def reset(self) -> None:
        self._realms.clear()
