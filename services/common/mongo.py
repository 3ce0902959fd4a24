"""MongoDB wiring: one async client per process (PyMongo's native asyncio API) and indexes.

The code stays within what both MongoDB and FerretDB v1 support (README, "MongoDB-protocol
server"): no multi-document transactions, no change streams, no Decimal128. Atomicity comes from
single-document writes with guard filters instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

Document = dict[str, Any]


@dataclass(frozen=True)
class IndexSpec:
    collection: str
    keys: Sequence[tuple[str, int]]
    name: str
    unique: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)


# Who sends a command, for `CommandCounter`: a task sets it once (`counted_as`) and every command
# sent from that task, and from tasks it starts, is counted under that name.
_caller: ContextVar[str] = ContextVar("mongo_caller", default="service")


@contextlib.contextmanager
def counted_as(caller: str) -> Iterator[None]:
    token = _caller.set(caller)
    try:
        yield
    finally:
        _caller.reset(token)


class CommandCounter(monitoring.CommandListener):
    """Counts the commands a process sends to MongoDB, by caller, command name and collection.

    A figure that is the same on any engine (unlike time): how many round trips each unit of
    work costs. PyMongo calls `started` in the task that sends the command, so the caller set
    with `counted_as` applies. Opt-in (`Settings.mongodb_command_counts`): the benchmarks
    read it from the services.
    """

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str, str]] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        target = event.command.get(name)
        if not isinstance(target, str):  # getMore names its collection apart
            target = event.command.get("collection", "")
        self.counts[(_caller.get(), name, str(target))] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def total(self, caller: str | None = None) -> int:
        return sum(n for (who, _, _), n in self.counts.items() if caller in (None, who))

    def rows(self) -> list[dict[str, Any]]:
        return [
            {"caller": who, "command": name, "collection": target, "count": n}
            for (who, name, target), n in sorted(self.counts.items())
        ]


def make_client(
    uri: str,
    app_name: str = "qbo-sync",
    operation_timeout_s: float | None = None,
    counter: CommandCounter | None = None,
) -> AsyncMongoClient[Document]:
    """A client; with `operation_timeout_s`, every operation (server selection included) gives
    up after that long: for request paths, which answer 503 rather than keep a caller waiting."""
    limits: dict[str, Any] = {}
    if operation_timeout_s is not None:
        limits["timeoutMS"] = int(operation_timeout_s * 1000)
    return AsyncMongoClient(
        uri,
        event_listeners=[counter] if counter is not None else [],
        appname=app_name,
        tz_aware=True,
        # Fail fast at start-up and in readiness probes instead of hanging 30 s.
        serverSelectionTimeoutMS=5_000,
        connectTimeoutMS=5_000,
        # Our writes are guarded and idempotent, so handlers retry them themselves; server-side
        # retryable writes (txnNumber on a session) are not relied upon.
        retryWrites=False,
        **limits,
    )


async def ensure_indexes(db: AsyncDatabase[Document], specs: Sequence[IndexSpec]) -> None:
    """Create the indexes a service relies on; creating an existing index is a no-op."""
    for spec in specs:
        await db[spec.collection].create_index(
            list(spec.keys), name=spec.name, unique=spec.unique, **dict(spec.options)
        )


# What a lookup of many keys costs depends on the engine (README, "The queries of the hot paths").
# MongoDB answers one `$in` from the `_id` index in a single round trip. FerretDB v1 never pushes
# `$in` down to its backend: it reads and decodes every document of the collection (about 60 s at
# 100,000 invoices on PostgreSQL), while each `{_id: key}` is pushed down and served by an index
# (a few milliseconds). So where FerretDB is the engine, keys are read one by one, a few at a
# time; on MongoDB with one `$in`.
PARALLEL_KEY_LOOKUPS = 8

# Per client: does it talk to FerretDB? Asked once (`buildInfo` names FerretDB's version).
_ferretdb: weakref.WeakKeyDictionary[AsyncMongoClient[Document], bool] = weakref.WeakKeyDictionary()


async def is_ferretdb(client: AsyncMongoClient[Document]) -> bool:
    known = _ferretdb.get(client)
    if known is None:
        info = await client.admin.command("buildInfo")
        known = _ferretdb[client] = "ferretdbVersion" in info
    return known


async def find_by_ids(
    collection: AsyncCollection[Document], keys: Sequence[str], projection: Mapping[str, Any]
) -> list[Document]:
    """The documents with these `_id`s that exist, in no particular order."""
    if not keys:
        return []
    if len(keys) > 1 and not await is_ferretdb(collection.database.client):
        return [d async for d in collection.find({"_id": {"$in": list(keys)}}, projection)]
    found: list[Document] = []
    for start in range(0, len(keys), PARALLEL_KEY_LOOKUPS):
        chunk = keys[start : start + PARALLEL_KEY_LOOKUPS]
        answers = await asyncio.gather(
            *(collection.find_one({"_id": k}, projection) for k in chunk)
        )
        found.extend(d for d in answers if d is not None)
    return found
