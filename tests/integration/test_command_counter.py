"""The MongoDB command counter: what it counts against a real server, and where the services
show it (the sync service's /stats, the api's /metrics) when `mongodb_command_counts` is on."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from services.api.auth import DEV_TOKEN
from services.common.mongo import CommandCounter, counted_as, make_client
from services.common.settings import Settings
from services.sync.app import sync_service
from tests.api_support import invoice_event, produce_events, running_api, seed_mapping
from tests.integration.conftest import SYNC_AUTH
from tests.support import eventually

pytestmark = pytest.mark.integration


async def test_counts_each_command_by_caller_command_and_collection(settings: Settings) -> None:
    counter = CommandCounter()
    client = make_client(settings.mongodb_uri, counter=counter)
    db = client[settings.mongodb_database]
    try:
        await db["things"].insert_many([{"_id": i} for i in range(3)])
        with counted_as("worker"):
            await db["things"].find_one({"_id": 1})
            # A task started under a caller counts as that caller too.
            await asyncio.create_task(db["others"].find_one({"_id": 2}))
        await db["things"].delete_one({"_id": 0})
        counted = dict(counter.counts)  # before close, which ends the sessions (one more)
    finally:
        await client.close()
    assert counted == {
        ("service", "insert", "things"): 1,
        ("worker", "find", "things"): 1,
        ("worker", "find", "others"): 1,
        ("service", "delete", "things"): 1,
    }
    assert counter.total() == 5
    assert counter.total("worker") == 2


async def test_a_large_find_counts_its_get_mores_against_the_collection(
    settings: Settings,
) -> None:
    counter = CommandCounter()
    client = make_client(settings.mongodb_uri, counter=counter)
    db = client[settings.mongodb_database]
    try:
        await db["many"].insert_many([{"_id": i} for i in range(250)])
        found = await db["many"].find({}).batch_size(100).to_list()
    finally:
        await client.close()
    assert len(found) == 250
    assert counter.counts[("service", "find", "many")] == 1
    assert counter.counts[("service", "getMore", "many")] == 2


async def test_sync_stats_show_the_commands_only_when_counting(settings: Settings) -> None:
    for counting in (False, True):
        wired = settings.model_copy(update={"mongodb_command_counts": counting})
        async with sync_service(wired) as service:
            transport = httpx.ASGITransport(app=service.web_app())
            async with httpx.AsyncClient(
                transport=transport, base_url="http://sync", headers=SYNC_AUTH
            ) as http:
                answer = await http.get("/stats")
                assert answer.status_code == 200, answer.text
                body = answer.json()
        if not counting:
            assert "mongo_commands" not in body
            continue
        # Start-up created the indexes: each is one createIndexes command, counted.
        rows = body["mongo_commands"]
        created = {r["collection"]: r["count"] for r in rows if r["command"] == "createIndexes"}
        assert created["invoices"] == 1
        assert all(r["caller"] == "service" for r in rows)


async def test_api_metrics_tell_the_projector_from_requests(settings: Settings) -> None:
    counting = settings.model_copy(update={"mongodb_command_counts": True})
    async with running_api(counting) as api:
        await seed_mapping(api.service.db)
        await produce_events(counting, invoice_event("101", 1), invoice_event("102", 1))
        auth = {"Authorization": f"Bearer {DEV_TOKEN}"}
        async with httpx.AsyncClient(base_url=api.base_url, headers=auth) as http:

            async def listed() -> int:
                response = await http.get("/api/customers/cust-42/invoices")
                return int(response.json()["totals"]["count"])

            await eventually(listed, lambda n: n == 2)
            text = (await http.get("/metrics")).text

    def count(caller: str, command: str, collection: str) -> float:
        labels = f'caller="{caller}",collection="{collection}",command="{command}"'
        match = re.search(rf"^qbo_mongo_commands_total\{{{labels}\}} (\S+)$", text, re.M)
        assert match, f"{caller} {command} {collection} missing"
        return float(match.group(1))

    # The projector wrote the two new invoices with one insert per batch it read (both events
    # usually come in one batch, but may come in two); requests only read.
    assert count("projector", "insert", "read_invoices") in (1, 2)
    assert count("service", "find", "customer_mappings") >= 1
    assert count("service", "find", "read_invoices") >= 2
    assert 'caller="service",collection="read_invoices",command="insert"' not in text
