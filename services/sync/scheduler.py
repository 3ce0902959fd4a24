"""Realm-level concurrency: realms run side by side, one realm's jobs run in order.

A *lane* is one realm (the Kafka key of its commands). Each lane runs at most one job at a time,
in the order the jobs were submitted, so a realm's commands never overtake each other and its
token refresh and QBO budget see one caller. Different lanes run concurrently, at most
`max_concurrent` jobs in all, taken from the ready lanes in turn so that a realm with a long
backlog cannot starve the others (docs/design.md invariant 8).

A job answers `Deferred(delay_s)` when it cannot go on yet (its realm is throttled at Intuit):
it stays at the head of its lane, the lane sleeps for the delay and then runs it again, and
other lanes go on meanwhile. A job that raises is not done either: it is logged and retried
after `failure_backoff_s`, never dropped, because dropping it would let its offset be committed.

Kafka records, CDC polls and outbox sweeps all run as jobs, so they share the same bound and
order. The scheduler knows nothing of Kafka beyond the `partition` and `offset` a job carries:
`on_done` is told when a job is finished for good, and `revoke` removes a partition's jobs when
the partition moves to another consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Hashable
from dataclasses import dataclass, field
from typing import Any

import structlog

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Deferred:
    """Run this job again after `delay_s`; its lane waits, other lanes do not."""

    delay_s: float


Outcome = Deferred | None


@dataclass(eq=False)
class Job:
    lane: str
    run: Callable[[], Awaitable[Outcome]]
    partition: Hashable | None = None  # where it came from, for revocation and commits
    offset: int | None = None
    name: str = "job"
    abandoned: bool = False  # its partition was revoked: never queue it again


@dataclass(eq=False)
class _Lane:
    name: str
    jobs: deque[Job] = field(default_factory=deque)
    running: Job | None = None
    task: asyncio.Task[None] | None = None
    resumes_at: float | None = None  # set while the lane waits out a deferral
    timer: asyncio.Task[None] | None = None


class RealmScheduler:
    def __init__(
        self,
        max_concurrent: int,
        on_done: Callable[[Job], None],
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        failure_backoff_s: float = 5.0,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.max_concurrent = max_concurrent
        self._on_done = on_done
        self._clock = clock
        self._sleep = sleep
        self._failure_backoff_s = failure_backoff_s
        self._lanes: dict[str, _Lane] = {}
        self._ready: deque[_Lane] = deque()  # lanes with a job to start, in turn
        self._running = 0
        self._closed = False
        self._idle = asyncio.Event()
        self._idle.set()

    # -- what the worker asks -----------------------------------------------------------------

    @property
    def running(self) -> int:
        return self._running

    def queued(self) -> int:
        return sum(len(lane.jobs) for lane in self._lanes.values())

    def lane_jobs(self, lane: str) -> int:
        """Jobs of `lane` not finished yet (waiting or running)."""
        state = self._lanes.get(lane)
        if state is None:
            return 0
        return len(state.jobs) + (1 if state.running is not None else 0)

    def resumes_at(self, lane: str) -> float | None:
        """When a deferred lane runs again (scheduler clock), or None if it is not waiting."""
        state = self._lanes.get(lane)
        return state.resumes_at if state is not None else None

    def has_queued(self, lane: str, name: str) -> bool:
        """Is a job called `name` waiting (not running) in `lane`? Lets periodic jobs coalesce."""
        state = self._lanes.get(lane)
        return state is not None and any(job.name == name for job in state.jobs)

    async def wait_idle(self) -> None:
        """Until no job is waiting or running (tests and shutdown)."""
        await self._idle.wait()

    # -- submitting and running ---------------------------------------------------------------

    def submit(self, job: Job) -> None:
        if self._closed:
            raise RuntimeError("the scheduler is closed")
        lane = self._lanes.get(job.lane)
        if lane is None:
            lane = self._lanes[job.lane] = _Lane(job.lane)
        lane.jobs.append(job)
        self._idle.clear()
        if lane.running is None and lane.resumes_at is None and lane not in self._ready:
            self._ready.append(lane)
        self._pump()

    def _pump(self) -> None:
        while self._running < self.max_concurrent and self._ready and not self._closed:
            lane = self._ready.popleft()
            if lane.running is not None or lane.resumes_at is not None or not lane.jobs:
                continue
            job = lane.jobs.popleft()
            lane.running = job
            self._running += 1
            lane.task = asyncio.create_task(self._run(lane, job), name=f"{job.name}:{lane.name}")

    async def _run(self, lane: _Lane, job: Job) -> None:
        outcome: Outcome = None
        failed = False
        try:
            outcome = await job.run()
        except asyncio.CancelledError:
            failed = True  # cancelled by revoke or close: not done, never reported
        except Exception:
            failed = True
            log.exception("scheduler.job_failed", lane=lane.name, job=job.name, offset=job.offset)
        finally:
            self._running -= 1
            lane.running = None
            lane.task = None
        if failed or isinstance(outcome, Deferred):
            if not (job.abandoned or self._closed):
                lane.jobs.appendleft(job)  # same place: the realm's order holds
                delay = outcome.delay_s if isinstance(outcome, Deferred) else None
                self._defer(lane, self._failure_backoff_s if delay is None else delay)
        else:
            self._on_done(job)
            if lane.jobs and lane.resumes_at is None:
                self._ready.append(lane)  # behind the other ready realms
        self._settle(lane)

    def _defer(self, lane: _Lane, delay_s: float) -> None:
        lane.resumes_at = self._clock() + delay_s
        lane.timer = asyncio.create_task(self._wake(lane, delay_s), name=f"wake:{lane.name}")

    async def _wake(self, lane: _Lane, delay_s: float) -> None:
        await self._sleep(delay_s)
        lane.resumes_at = None
        lane.timer = None
        if lane.jobs and lane.running is None:
            self._ready.append(lane)
        self._settle(lane)

    def _settle(self, lane: _Lane) -> None:
        if not lane.jobs and lane.running is None and lane.timer is None:
            self._lanes.pop(lane.name, None)
        self._pump()
        if self._running == 0 and not self._lanes:
            self._idle.set()

    # -- partitions leaving, and the end ------------------------------------------------------

    async def revoke(self, partitions: Collection[Hashable], grace_s: float) -> None:
        """Give up every job of `partitions`: waiting ones at once; running ones are waited for
        up to `grace_s`, then cancelled. None of them is reported done after this returns, so
        the caller commits no offset past them; the next owner redelivers them."""
        if not partitions:
            return
        running: list[asyncio.Task[None]] = []
        for lane in list(self._lanes.values()):
            kept = deque(job for job in lane.jobs if job.partition not in partitions)
            for job in lane.jobs:
                if job.partition in partitions:
                    job.abandoned = True
            lane.jobs = kept
            if lane.running is not None and lane.running.partition in partitions:
                # It may still finish (and be reported done) within the grace; it is never
                # queued again.
                lane.running.abandoned = True
                if lane.task is not None:
                    running.append(lane.task)
            if not lane.jobs and lane.timer is not None:
                lane.timer.cancel()
                lane.timer = None
                lane.resumes_at = None
        if running:
            _, late = await asyncio.wait(running, timeout=grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        for lane in list(self._lanes.values()):
            self._settle(lane)

    async def close(self, grace_s: float) -> None:
        """Stop starting jobs; let running ones finish within `grace_s`, then cancel them.
        Jobs that never finished are not reported done (their records are redelivered)."""
        self._closed = True
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        timers = [lane.timer for lane in self._lanes.values() if lane.timer is not None]
        for timer in timers:
            timer.cancel()
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        for timer in timers:
            with contextlib.suppress(asyncio.CancelledError):
                await timer
        self._lanes.clear()
        self._ready.clear()
        self._idle.set()
