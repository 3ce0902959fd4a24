"""Many-key lookups take the shape the engine serves from an index: one `$in` on MongoDB, one
`{_id: key}` per key on FerretDB (which never pushes `$in` down to its backend)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring

from services.common import mongo
from services.common.mongo import Document, find_by_ids, is_ferretdb, make_client
from services.common.settings import Settings

pytestmark = pytest.mark.integration


class FindFilters(monitoring.CommandListener):
    def __init__(self) -> None:
        self.filters: list[Any] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find":
            self.filters.append(event.command.get("filter"))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[tuple[AsyncMongoClient[Document], Any]]:
    listener = FindFilters()
    c: AsyncMongoClient[Document] = AsyncMongoClient(
        settings.mongodb_uri, event_listeners=[listener]
    )
    try:
        yield c, listener
    finally:
        await c.close()


async def test_the_engine_is_told_apart_by_its_build_info(settings: Settings) -> None:
    c = make_client(settings.mongodb_uri)
    try:
        info = await c.admin.command("buildInfo")
        assert await is_ferretdb(c) is ("ferretdbVersion" in info)
    finally:
        await c.close()


@pytest.mark.parametrize("ferretdb", [True, False])
async def test_both_shapes_find_the_same_documents_and_ferretdb_gets_no_in(
    client: tuple[AsyncMongoClient[Document], FindFilters], settings: Settings, ferretdb: bool
) -> None:
    c, listener = client
    mongo._ferretdb[c] = ferretdb  # the shape for that engine, whatever this server is
    collection = c[settings.mongodb_database]["things"]
    await collection.insert_many([{"_id": f"k{i}", "n": i} for i in range(20)])
    keys = [f"k{i}" for i in range(0, 20, 2)] + ["missing"]
    listener.filters.clear()

    found = await find_by_ids(collection, keys, {"n": 1})

    assert sorted(d["_id"] for d in found) == sorted(keys[:-1])
    if ferretdb:
        # A few at a time, so in any order.
        assert sorted(listener.filters, key=str) == sorted(({"_id": k} for k in keys), key=str)
    else:
        assert listener.filters == [{"_id": {"$in": keys}}]
