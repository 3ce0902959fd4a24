"""The local FerretDB survives more concurrent writes than the services ever send.

FerretDB v1 runs an update, an upsert or a findAndModify by holding one pooled PostgreSQL
connection for its read while it takes a second one for the write. With as many such writes in
flight as its pool has connections, every one of them holds its first connection and waits for
a second for ever: the server stops answering anything, pings included (seen with a pool of 16
and 60 concurrent command-status writers). deploy/local/infra.sh sizes the pool far above what the
services reach (docs/design.md, "Local engine notes"); this test fails if it shrinks
again.
"""

from __future__ import annotations

import asyncio

import pytest
from pymongo import AsyncMongoClient, ReturnDocument

from services.common.mongo import Document
from services.common.settings import Settings

pytestmark = pytest.mark.integration

WRITERS = 120  # the worker's 64 realm lanes and the api's requests, with room to spare


async def test_more_concurrent_upserts_than_the_old_pool_all_complete(settings: Settings) -> None:
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        settings.mongodb_uri, maxPoolSize=WRITERS + 10, timeoutMS=60_000
    )
    try:
        commands = client[settings.mongodb_database]["concurrency_probe"]
        # Writes that match a stored document are the ones that read before they write; three
        # writers per document keep each one's connections held longer.
        docs = WRITERS // 3
        await commands.insert_many([{"_id": n, "attempts": 0} for n in range(docs)])

        async def write(n: int, attempt: int) -> Document | None:
            await commands.update_one({"_id": n}, {"$set": {"by": attempt}}, upsert=True)
            return await commands.find_one_and_update(
                {"_id": n, "status": {"$nin": ["succeeded", "failed"]}},
                {"$set": {"status": "running"}, "$max": {"attempts": attempt}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )

        async with asyncio.timeout(60):
            for _ in range(3):
                answers = await asyncio.gather(
                    *(write(n, attempt) for n in range(docs) for attempt in (1, 2, 3))
                )
        assert all(a is not None and a["status"] == "running" for a in answers)
        stored = [d async for d in commands.find({}).sort("_id", 1)]
        assert [(d["_id"], d["attempts"]) for d in stored] == [(n, 3) for n in range(docs)]
        # and the server still answers afterwards
        assert (await client.admin.command("ping"))["ok"] == 1
    finally:
        await client.close()
