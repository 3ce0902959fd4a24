"""RealmScheduler with fake jobs and fake time: realms side by side, one realm in order,
deferral, failures, revocation (docs/design.md invariant 8)."""

from __future__ import annotations

import asyncio

from services.sync.scheduler import Deferred, Job, Outcome, RealmScheduler
from tests.fakes import FakeTime, settle


class Jobs:
    """Fake jobs that run until the test releases them, recording starts and completions."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.done: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.outcomes: dict[str, list[Outcome | Exception]] = {}

    def job(self, lane: str, name: str, partition: str = "p0", offset: int | None = None) -> Job:
        self.gates[name] = asyncio.Event()

        async def run() -> Outcome:
            self.started.append(name)
            await self.gates[name].wait()
            self.gates[name].clear()
            planned = self.outcomes.get(name)
            outcome = planned.pop(0) if planned else None
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

        return Job(lane, run, partition=partition, offset=offset, name=name)

    async def release(self, *names: str) -> None:
        for name in names:
            self.gates[name].set()
        await settle()

    def on_done(self, job: Job) -> None:
        self.done.append(job.name)


def scheduler(jobs: Jobs, time: FakeTime, max_concurrent: int = 10) -> RealmScheduler:
    return RealmScheduler(
        max_concurrent, jobs.on_done, clock=time.clock, sleep=time.sleep, failure_backoff_s=5
    )


async def test_one_realms_jobs_run_one_at_a_time_in_order() -> None:
    jobs, time = Jobs(), FakeTime()
    s = scheduler(jobs, time)
    for name in ("a1", "a2", "a3"):
        s.submit(jobs.job("A", name))
    await settle()
    assert jobs.started == ["a1"]
    await jobs.release("a1")
    assert jobs.started == ["a1", "a2"]
    await jobs.release("a2", "a3")
    await jobs.release("a3")
    assert jobs.done == ["a1", "a2", "a3"]
    await asyncio.wait_for(s.wait_idle(), 1)


async def test_realms_run_concurrently_up_to_the_bound() -> None:
    jobs, time = Jobs(), FakeTime()
    s = scheduler(jobs, time, max_concurrent=2)
    for lane in ("A", "B", "C"):
        s.submit(jobs.job(lane, lane.lower()))
    await settle()
    assert jobs.started == ["a", "b"]
    assert s.running == 2
    await jobs.release("b")  # out of order: B finishes before A
    assert jobs.done == ["b"]
    assert jobs.started == ["a", "b", "c"]


async def test_a_realm_with_a_backlog_takes_turns_with_the_others() -> None:
    jobs, time = Jobs(), FakeTime()
    s = scheduler(jobs, time, max_concurrent=1)
    for name in ("a1", "a2", "a3"):
        s.submit(jobs.job("A", name))
    s.submit(jobs.job("B", "b1"))
    await settle()
    await jobs.release("a1")
    assert jobs.started == ["a1", "b1"]  # B does not wait for all of A


async def test_a_deferred_job_waits_with_its_realm_while_other_realms_go_on() -> None:
    jobs, time = Jobs(), FakeTime()
    s = scheduler(jobs, time)
    jobs_a1 = jobs.job("A", "a1", offset=0)
    jobs.outcomes["a1"] = [Deferred(60), None]
    s.submit(jobs_a1)
    s.submit(jobs.job("A", "a2", offset=1))
    s.submit(jobs.job("B", "b1", offset=2))
    await settle()
    await jobs.release("a1", "b1")
    assert jobs.done == ["b1"]  # a1 is not done: its offset must not be committed
    assert s.resumes_at("A") == time.now + 60
    await time.advance(59)
    assert jobs.started.count("a1") == 1 and "a2" not in jobs.started
    s.submit(jobs.job("A", "a3", offset=3))  # a new command of a paused realm waits too
    await settle()
    assert "a3" not in jobs.started
    await time.advance(1)
    assert jobs.started[-1] == "a1"  # the same job again, ahead of the realm's others
    await jobs.release("a1")
    await jobs.release("a2")
    await jobs.release("a3")
    assert jobs.done == ["b1", "a1", "a2", "a3"]


async def test_a_job_that_raises_is_not_done_and_runs_again_after_the_backoff() -> None:
    jobs, time = Jobs(), FakeTime()
    s = scheduler(jobs, time)
    s.submit(jobs.job("A", "a1"))
    s.submit(jobs.job("B", "b1"))
    jobs.outcomes["a1"] = [RuntimeError("the database is away")]
    await settle()
    await jobs.release("a1", "b1")
    assert jobs.done == ["b1"]
    await time.advance(5)
    assert jobs.started.count("a1") == 2
    await jobs.release("a1")
    assert jobs.done == ["b1", "a1"]


async def test_revoke_drops_waiting_jobs_waits_for_running_ones_and_leaves_others() -> None:
    jobs, time = Jobs(), FakeTime()
    s = scheduler(jobs, time)
    s.submit(jobs.job("A", "a1", partition="p0"))
    s.submit(jobs.job("A", "a2", partition="p0"))
    s.submit(jobs.job("B", "b1", partition="p1"))
    await settle()

    async def finish_a1_soon() -> None:
        await settle()
        jobs.gates["a1"].set()

    helper = asyncio.create_task(finish_a1_soon())
    await s.revoke({"p0"}, grace_s=30)
    await helper
    assert jobs.done == ["a1"]  # finished within the grace: really done
    assert "a2" not in jobs.started  # dropped: the next owner redelivers it
    assert s.lane_jobs("A") == 0
    await jobs.release("b1")
    assert jobs.done == ["a1", "b1"]


async def test_revoke_cancels_a_running_job_past_the_grace_and_never_reports_it() -> None:
    jobs, time = Jobs(), FakeTime()
    s = scheduler(jobs, time)
    s.submit(jobs.job("A", "a1", partition="p0"))
    jobs.outcomes["a1"] = [Deferred(60)]
    s.submit(jobs.job("B", "b1", partition="p0"))
    await settle()
    await s.revoke({"p0"}, grace_s=0)
    assert jobs.done == []
    assert s.running == 0 and s.queued() == 0
    await time.advance(120)
    assert jobs.started == ["a1", "b1"]  # nothing ran again
    await asyncio.wait_for(s.wait_idle(), 1)


async def test_revoke_of_a_deferred_realm_cancels_its_wait() -> None:
    jobs, time = Jobs(), FakeTime()
    s = scheduler(jobs, time)
    s.submit(jobs.job("A", "a1", partition="p0"))
    jobs.outcomes["a1"] = [Deferred(60)]
    await settle()
    await jobs.release("a1")
    assert s.resumes_at("A") is not None
    await s.revoke({"p0"}, grace_s=0)
    await time.advance(60)
    assert jobs.started == ["a1"]
    await asyncio.wait_for(s.wait_idle(), 1)


async def test_close_lets_running_jobs_finish_and_starts_no_more() -> None:
    jobs, time = Jobs(), FakeTime()
    s = scheduler(jobs, time)
    s.submit(jobs.job("A", "a1"))
    s.submit(jobs.job("A", "a2"))
    await settle()

    async def finish_a1_soon() -> None:
        await settle()
        jobs.gates["a1"].set()

    helper = asyncio.create_task(finish_a1_soon())
    await s.close(grace_s=30)
    await helper
    assert jobs.done == ["a1"]
    assert jobs.started == ["a1"]
