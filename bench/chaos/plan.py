"""The seeded script of a chaos run: which operation comes next, and which fault with it.

Pure code: the same seed gives the same plan. Operations are what users and QuickBooks do
(refresh a customer or one customer of every company at once, change, void, delete or create an
invoice); chaos events are what the platform does (kill a process, restart the broker or the
database, expire tokens) or what outsiders send (poison records on the topics, amounts with odd
precision or beyond range), each attached to the operation before which it fires.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

# "refresh_companies" refreshes one customer of every company at once: the worker runs the
# companies concurrently, so kills and restarts land amid several realms' work.
OPERATIONS = ("refresh", "refresh_companies", "update", "void", "delete", "create")
WEIGHTS = (28, 8, 28, 10, 10, 16)


@dataclass(frozen=True)
class Step:
    index: int
    operation: str
    customer: int  # index into the run's customer list
    chaos: tuple[str, ...] = field(default=())


def _spots(rng: random.Random, count: int, low: int, high: int) -> list[int]:
    if count <= 0 or high < low:
        return []
    return [rng.randint(low, high) for _ in range(count)]


def make_plan(
    rng: random.Random,
    operations: int,
    customers: int,
    *,
    workers: int,
    worker_kills: int,
    api_kills: int,
    token_expiries: int,
    realms: int,
    kafka_restart: bool,
    db_restart: bool,
    postgres_restart: bool,
    poison_injections: int = 0,
    odd_amounts: int = 0,
    unstorable_amounts: int = 0,
) -> list[Step]:
    chaos: dict[int, list[str]] = {}
    last = operations - 1

    def at(index: int, event: str) -> None:
        chaos.setdefault(min(max(index, 0), last), []).append(event)

    for spot in _spots(rng, worker_kills, 1, last - 1):
        at(spot, f"kill_worker:{rng.randrange(workers)}")
    for spot in _spots(rng, api_kills, 1, last - 1):
        at(spot, "kill_api")
    for spot in _spots(rng, token_expiries, 0, last):
        at(spot, f"expire_tokens:{rng.randrange(realms)}")
    for spot in _spots(rng, poison_injections, 1, last - 1):
        at(spot, f"poison:{rng.randrange(customers)}")
    for spot in _spots(rng, odd_amounts, 0, last):
        at(spot, f"odd_amount:{rng.randrange(customers)}")
    for spot in _spots(rng, unstorable_amounts, 0, last):
        at(spot, f"unstorable_amount:{rng.randrange(customers)}")
    # The broker early, FerretDB late, PostgreSQL in between (its restarts are serialised too).
    if kafka_restart:
        at(rng.randint(operations // 5, operations * 2 // 5), "restart_kafka")
    if db_restart:
        at(rng.randint(operations * 3 // 5, operations * 4 // 5), "restart_db")
    if postgres_restart:
        at(rng.randint(operations * 2 // 5, operations * 3 // 5), "restart_postgres")
    steps = [
        Step(
            index=i,
            operation=rng.choices(OPERATIONS, WEIGHTS)[0],
            customer=rng.randrange(customers),
            chaos=tuple(chaos.get(i, ())),
        )
        for i in range(operations)
    ]
    if realms > 1:
        # At least once, every company refreshes at once right before a worker is killed, so
        # the kill lands amid several realms' concurrent work (whatever the draw gave).
        kills = [
            i
            for i in range(1, operations)
            if any(e.startswith("kill_worker") for e in chaos.get(i, ()))
        ]
        at_once = kills[0] - 1 if kills else rng.randrange(operations)
        steps[at_once] = replace(steps[at_once], operation="refresh_companies")
    return steps
