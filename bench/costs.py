"""Engine-independent costs of a stretch of work: the CPU time a service process used and the
MongoDB commands it sent (its opt-in counter), read before and after.

Wall-clock figures move with whatever else the cores are doing; these two do not, so they are
the ones to compare between runs, machines and database engines.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import aiohttp

from bench.procs import Child
from bench.service_stats import api_counts, sync_mongo_commands


@dataclass(frozen=True)
class Snapshot:
    cpu_s: float
    commands: Counter[str]  # by caller: "projector", "service" (everything else)
    events_projected: int = 0
    requests: int = 0


@dataclass(frozen=True)
class Costs:
    cpu_s: float
    commands: Counter[str] = field(default_factory=Counter)
    events_projected: int = 0
    requests: int = 0

    @classmethod
    def between(cls, before: Snapshot, after: Snapshot) -> Costs:
        return cls(
            after.cpu_s - before.cpu_s,
            after.commands - before.commands,
            after.events_projected - before.events_projected,
            after.requests - before.requests,
        )

    def total_commands(self) -> int:
        return sum(self.commands.values())


async def sync_snapshot(http: aiohttp.ClientSession, sync_url: str, sync: Child) -> Snapshot:
    commands = await sync_mongo_commands(http, sync_url)
    return Snapshot(sync.cpu_seconds(), Counter({"service": commands}))


async def api_snapshot(http: aiohttp.ClientSession, api_url: str, api: Child) -> Snapshot:
    counts = await api_counts(http, api_url)
    return Snapshot(api.cpu_seconds(), counts.commands, counts.events_projected, counts.requests)
