"""One command, one execution: an Idempotency-Key under concurrency, a command published twice,
and status records written by more than one writer. Real Kafka, a real MongoDB-protocol
server, the api and the sync worker over real HTTP, the emulator standing in for Intuit."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from qbo_emulator.testing import RunningEmulator
from services.api.refresh import command_id_for
from services.common.messages import RefreshInvoices, parse_command
from services.common.mongo import Document
from services.common.settings import Settings
from services.common.statuses import CommandStatus
from services.sync.store import CommandLog
from tests.api_support import consume_all, produce, running_api, seed_mapping
from tests.integration.conftest import SyncUnderTest
from tests.integration.test_sync_worker import (
    REALM,
    add_invoices,
    connect_and_map,
    events,
    finished,
)
from tests.integration.test_unavailable import nowhere
from tests.support import MovableClock, eventually

pytestmark = pytest.mark.integration

DEV_AUTH = {"Authorization": "Bearer dev-token"}  # the token a local api accepts


async def test_thirty_concurrent_requests_with_one_key_publish_and_run_one_command(
    worker: SyncUnderTest,
    emulator: RunningEmulator,
    clock: MovableClock,
    settings: Settings,
    mongo_db: AsyncDatabase[Document],
) -> None:
    qbo_customer = await connect_and_map(worker, emulator, clock)
    add_invoices(emulator, qbo_customer, 5)
    reads_before = worker.service.qbo.calls[REALM]

    async with running_api(settings, run_projector=False) as api:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        "/api/customers/cust-1/refreshInvoices",
                        headers={**DEV_AUTH, "Idempotency-Key": "refresh-once"},
                    )
                    for _ in range(30)
                )
            )
    assert [r.status_code for r in responses] == [202] * 30, responses[0].text
    (command_id,) = {r.json()["command_id"] for r in responses}
    done = await finished(worker, command_id)
    assert done["status"] == "succeeded", done
    assert done["result"] == {"fetched": 5, "stored": 5, "events": 5}
    assert done["attempts"] == 1
    assert done["started_at"] is not None

    # A sentinel after the requests, on the realm's partition: what precedes it is everything
    # the 30 requests published.
    await produce(settings, [(REALM.encode(), b"sentinel")], topic=settings.commands_topic)
    records = await consume_all(settings, settings.commands_topic, 2)
    assert records[-1].value == b"sentinel"
    published = [parse_command(r.value).command_id for r in records[:-1]]
    assert published == [command_id]
    # Executed once: one page of invoices read from QBO (reads are metered), five events.
    assert worker.service.qbo.calls[REALM] - reads_before == 2  # one page, the customer read
    assert len(await events(settings)) == 5


async def test_a_finished_command_published_again_reads_nothing_and_flushes_what_it_owes(
    worker: SyncUnderTest,
    emulator: RunningEmulator,
    clock: MovableClock,
    settings: Settings,
    mongo_db: AsyncDatabase[Document],
) -> None:
    qbo_customer = await connect_and_map(worker, emulator, clock)
    add_invoices(emulator, qbo_customer, 3)
    command = RefreshInvoices(realm_id=REALM, issued_by="api", local_customer_id="cust-1")
    await worker.service.publish([command])
    first = await finished(worker, command.command_id)
    assert first["status"] == "succeeded"
    reads = worker.service.qbo.calls[REALM]
    (owed,) = [d["_id"] async for d in mongo_db.invoices.find({}, {"_id": 1}).limit(1)]
    # An attempt that died between writing an invoice and emitting its event left this entry.
    await worker.service.deps.outbox.open(command.command_id, [owed])

    await worker.service.publish([command])  # the same command, published a second time

    await eventually(lambda: mongo_db.outbox.count_documents({}), lambda n: n == 0)
    assert worker.service.qbo.calls[REALM] == reads  # not run again
    assert await worker.service.commands.get(command.command_id) == first
    emitted = Counter(e["data"]["invoice_id"] for e in await events(settings))
    assert emitted[owed.split(":")[1]] == 2  # its event again: owed by the dead attempt
    assert sorted(emitted.values()) == [1, 1, 2]


async def test_concurrent_status_writers_keep_attempts_and_only_move_forward(
    mongo_db: AsyncDatabase[Document],
) -> None:
    now = datetime(2030, 3, 15, 12, 0, 0, 123000, tzinfo=UTC)
    log = CommandLog(mongo_db, lambda: now)

    async def run_to_the_end(command: RefreshInvoices, attempts: int) -> None:
        # One worker's writes for one command; two of these at once is a partition that moved
        # while its previous owner was still running the command.
        attempt = None
        for number in range(1, attempts + 1):
            attempt = await log.running(command, number)
            if attempt is None:
                return
        await log.finished(
            command.command_id, CommandStatus.SUCCEEDED, None, {"stored": 1}, attempt
        )

    commands = [
        RefreshInvoices(realm_id=REALM, issued_by="api", local_customer_id=f"cust-{n}")
        for n in range(20)
    ]
    for command in commands:
        await mongo_db.commands.insert_one(
            {"_id": command.command_id, "status": "queued", "attempts": 0, "queued_at": now}
        )
    await asyncio.gather(*(run_to_the_end(c, attempts) for c in commands for attempts in (1, 2, 3)))
    for command in commands:
        doc = await log.get(command.command_id)
        assert doc is not None
        assert doc["status"] == "succeeded", doc
        assert doc["attempts"] >= 1 and doc["started_at"] is not None, doc
        assert doc["queued_at"] is not None  # the api's field survives the worker's writes

    # Late writes of a finished command change nothing: no running again, no second outcome.
    command = commands[0]
    before = await log.get(command.command_id)
    assert await log.running(command, 4) is None
    later = CommandLog(mongo_db, lambda: now + timedelta(minutes=5))
    assert not await later.finished(command.command_id, CommandStatus.FAILED, "late")
    assert await log.get(command.command_id) == before


async def published_commands(settings: Settings) -> list[str]:
    """Every command id on the commands topic, up to a sentinel produced now."""
    await produce(settings, [(REALM.encode(), b"sentinel")], topic=settings.commands_topic)
    records = await consume_all(settings, settings.commands_topic, 1)
    while records[-1].value != b"sentinel":
        records = await consume_all(settings, settings.commands_topic, len(records) + 1)
    return [parse_command(r.value).command_id for r in records[:-1]]


async def test_a_retry_after_a_refused_publish_publishes_the_command_once(
    settings: Settings, mongo_db: AsyncDatabase[Document]
) -> None:
    await seed_mapping(mongo_db, "cust-42")
    path = "/api/customers/cust-42/refreshInvoices"
    headers = {**DEV_AUTH, "Idempotency-Key": "after-an-outage"}
    no_kafka = settings.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{nowhere()}"})
    async with running_api(no_kafka, run_projector=False) as api:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
            refused = await client.post(path, headers=headers)
    assert refused.status_code == 503, refused.text

    async with running_api(settings, run_projector=False) as api:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
            retries = [await client.post(path, headers=headers) for _ in range(3)]
    assert [r.status_code for r in retries] == [202] * 3
    (command_id,) = {r.json()["command_id"] for r in retries}
    assert await published_commands(settings) == [command_id]
    attempts = [d async for d in mongo_db.command_publications.find({}).sort("number", 1)]
    assert [(d["number"], d["outcome"]) for d in attempts] == [(0, "failed"), (1, "published")]


async def test_an_attempt_abandoned_by_a_dead_request_is_published_by_the_retry(
    settings: Settings, mongo_db: AsyncDatabase[Document]
) -> None:
    await seed_mapping(mongo_db, "cust-42")
    now = datetime(2030, 3, 15, 12, 0, tzinfo=UTC)
    command_id = command_id_for("cust-42", "the-first-request-died")
    # What a request that died after claiming the first attempt left behind.
    await mongo_db.commands.insert_one(
        {
            "_id": command_id,
            "type": "RefreshInvoices",
            "realm_id": REALM,
            "local_customer_id": "cust-42",
            "status": "queued",
            "issued_at": "2030-03-15T11:59:00Z",
            "issued_by": "api",
            "queued_at": now - timedelta(minutes=1),
            "attempts": 0,
        }
    )
    await mongo_db.command_publications.insert_one(
        {
            "_id": f"{command_id}#0",
            "command_id": command_id,
            "number": 0,
            "claimed_at": now - timedelta(minutes=1),
            "outcome": None,
        }
    )
    async with running_api(settings, clock=lambda: now, run_projector=False) as api:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
            retry = await client.post(
                "/api/customers/cust-42/refreshInvoices",
                headers={**DEV_AUTH, "Idempotency-Key": "the-first-request-died"},
            )
    assert retry.status_code == 202, retry.text
    assert retry.json()["command_id"] == command_id
    assert await published_commands(settings) == [command_id]
    second = await mongo_db.command_publications.find_one({"_id": f"{command_id}#1"})
    assert second is not None and second["outcome"] == "published"
