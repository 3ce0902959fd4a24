"""Keeps the services running the way an orchestrator (Kubernetes) would during a chaos run.

A child that exits on its own is started again, with a back-off while it keeps failing (a
service that cannot reach Kafka at start-up exits, like a pod in CrashLoopBackOff), and counted:
a crash is worth a look even when no data is lost. `kill` SIGKILLs one on purpose and starts it
again after a pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Sequence

from bench.procs import Child


class Supervisor:
    def __init__(self, children: Sequence[Child], interval_s: float = 0.25) -> None:
        self.children = {c.name: c for c in children}
        self.crashes: Counter[str] = Counter()
        self.crash_codes: list[tuple[str, int | None]] = []
        self._held: set[str] = set()
        self._interval_s = interval_s
        self._streak: Counter[str] = Counter()  # crashes in a row, for the back-off
        self._not_before: dict[str, float] = {}
        self._started_at: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        # Restarts and kills of a child take turns: otherwise a kill landing while a crash
        # restart is spawning would start a second process and orphan the first.
        self._lock = asyncio.Lock()

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name="supervisor")

    async def stop(self) -> None:
        if self._task is not None:
            async with self._lock:  # never cancel a restart halfway through spawning
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _watch(self) -> None:
        while True:
            for name, child in self.children.items():
                async with self._lock:
                    await self._tend(name, child, time.monotonic())
            await asyncio.sleep(self._interval_s)

    async def _tend(self, name: str, child: Child, now: float) -> None:
        if name in self._held:
            return
        if child.alive:
            if now - self._started_at.get(name, now) > 10.0:
                self._streak[name] = 0
            return
        if name not in self._not_before:
            code = child.process.returncode if child.process else None
            self.crashes[name] += 1
            self.crash_codes.append((name, code))
            self._not_before[name] = now + min(0.5 * 2 ** self._streak[name], 5.0)
            self._streak[name] += 1
        if now >= self._not_before[name]:
            del self._not_before[name]
            self._started_at[name] = now
            await child.start()

    async def kill(self, name: str, down_for_s: float) -> None:
        child = self.children[name]
        async with self._lock:
            self._held.add(name)
            self._not_before.pop(name, None)
            await child.kill()
        try:
            await asyncio.sleep(down_for_s)
        finally:
            async with self._lock:
                self._started_at[name] = time.monotonic()
                if not child.alive:
                    await child.start()
                self._held.discard(name)

    async def wait_all_alive(self, within_s: float = 60.0) -> None:
        deadline = time.monotonic() + within_s
        while self._held or not all(c.alive for c in self.children.values()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"children not running: {sorted(self._held)}")
            await asyncio.sleep(0.1)
