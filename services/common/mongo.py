"""MongoDB wiring: one async client per process (PyMongo's native asyncio API) and indexes.

The code stays within what both MongoDB and FerretDB v1 support (README, "MongoDB-protocol
server"): no multi-document transactions, no change streams, no Decimal128. Atomicity comes from
single-document writes with guard filters instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymongo import AsyncMongoClient
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


def make_client(
    uri: str, app_name: str = "qbo-sync", operation_timeout_s: float | None = None
) -> AsyncMongoClient[Document]:
    """A client; with `operation_timeout_s`, every operation (server selection included) gives
    up after that long: for request paths, which answer 503 rather than keep a caller waiting."""
    limits: dict[str, Any] = {}
    if operation_timeout_s is not None:
        limits["timeoutMS"] = int(operation_timeout_s * 1000)
    return AsyncMongoClient(
        uri,
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


# FerretDB v1 pushes only a filter that is exactly `{_id: <string>}` down to SQLite and decodes
# every document of the collection (~70 µs each) for anything else, `$in` included. Measured at
# 2,000 to 100,000 documents, one `$in` costs as much as ~20-30 `_id` equality lookups, so up to
# this many keys are read one by one. MongoDB answers both from its `_id` index.
FEW_KEYS = 16


async def find_by_ids(
    collection: AsyncCollection[Document], keys: Sequence[str], projection: Mapping[str, Any]
) -> list[Document]:
    """The documents with these `_id`s that exist, in no particular order."""
    if len(keys) <= FEW_KEYS:
        found = [await collection.find_one({"_id": k}, projection) for k in keys]
        return [d for d in found if d is not None]
    return [d async for d in collection.find({"_id": {"$in": list(keys)}}, projection)]
