"""The projector against real Kafka and a real MongoDB-protocol server: InvoiceUpdated events
in, `read_invoices` out, idempotent, order-safe, poison events dead-lettered, rebuildable."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import AutoReconnect

from bench.procs import child_env
from bench.stack import infra_env
from services.api.metrics import ApiMetrics
from services.api.producer import LazyProducer
from services.api.projector import DeadLetters, Projector, run_projector
from services.api.readmodel import invoice_key
from services.api.store import Applied, ReadInvoices
from services.common import jsoncodec
from services.common.mongo import Document
from services.common.schemas import SCHEMAS_DIR
from services.common.settings import Settings
from tests.api_support import (
    REALM,
    consume_all,
    event_key,
    invoice_event,
    produce,
    produce_events,
)
from tests.infra import ROOT
from tests.support import eventually

pytestmark = pytest.mark.integration

NOW = datetime(2030, 3, 15, 12, 0, tzinfo=UTC)


class RunningProjector:
    def __init__(self, projector: Projector) -> None:
        self.projector = projector

    def handled(self) -> dict[str, float]:
        """Records handled so far, by outcome (from the projector's own metrics)."""
        counts: dict[str, float] = {}
        for metric in self.projector.metrics.events.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    counts[sample.labels["outcome"]] = sample.value
        return counts

    async def wait_handled(self, total: int) -> dict[str, float]:
        async def probe() -> dict[str, float]:
            return self.handled()

        return await eventually(probe, lambda c: sum(c.values()) >= total)


def make_projector(
    settings: Settings, db: AsyncDatabase[Document], read_invoices: ReadInvoices | None = None
) -> tuple[Projector, LazyProducer]:
    producer = LazyProducer(settings.kafka_bootstrap_servers, "api-tests-dlq")
    projector = Projector(
        read_invoices or ReadInvoices(db),
        DeadLetters(producer, settings.dead_letter_topic),
        ApiMetrics(),
        clock=lambda: NOW,
        retry_delays=(0.05, 0.1),
    )
    return projector, producer


async def start(projector: Projector, settings: Settings) -> asyncio.Task[None]:
    return asyncio.create_task(run_projector(settings, projector))


async def stop(task: asyncio.Task[None], producer: LazyProducer) -> None:
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    await producer.stop()


@pytest.fixture
async def projector(
    settings: Settings, mongo_db: AsyncDatabase[Document]
) -> AsyncIterator[RunningProjector]:
    projector, producer = make_projector(settings, mongo_db)
    task = await start(projector, settings)
    try:
        yield RunningProjector(projector)
    finally:
        await stop(task, producer)


async def committed_offsets(settings: Settings) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(settings.projector_consumer_group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items()}


async def partition_of(settings: Settings, key: bytes) -> int:
    """Where the producer put records with `key` (all of one key go to one partition)."""
    records = await consume_all(settings, settings.invoice_events_topic, 1)
    assert records[0].key == key
    return int(records[0].partition)


async def test_versions_are_projected_once_and_never_backwards(
    settings: Settings, mongo_db: AsyncDatabase[Document], projector: RunningProjector
) -> None:
    v2 = invoice_event("130", 2, total_amt="1234.56", balance="1000.01")
    v1 = invoice_event("130", 1, total_amt="1234.56", balance="1234.56")
    await produce_events(settings, v2, v1, v2)

    outcomes = await projector.wait_handled(3)

    assert outcomes == {"stored": 1.0, "stale": 2.0, "dead_lettered": 0.0}
    rows = await mongo_db["read_invoices"].find({}).to_list()
    assert len(rows) == 1
    assert rows[0]["_id"] == f"{REALM}:130"
    assert rows[0]["version"] == 2
    assert rows[0]["balance_micros"] == 1_000_010_000
    assert rows[0]["total_amt_micros"] == 1_234_560_000
    # The offsets were committed past all three records, after their writes.
    partition = await partition_of(settings, event_key(v2))
    offsets = await eventually(lambda: committed_offsets(settings), lambda o: o.get(partition) == 3)
    assert offsets[partition] == 3


async def test_a_newer_version_replaces_the_stored_one(
    settings: Settings, mongo_db: AsyncDatabase[Document], projector: RunningProjector
) -> None:
    await produce_events(settings, invoice_event("7", 1, total_amt="10.00"))
    await projector.wait_handled(1)
    await produce_events(settings, invoice_event("7", 4, total_amt="10.00", balance="2.50"))
    await projector.wait_handled(2)

    row = await mongo_db["read_invoices"].find_one({"_id": f"{REALM}:7"})
    assert row is not None
    assert (row["version"], row["balance_micros"], row["status"]) == (4, 2_500_000, "open")


async def test_voided_and_deleted_invoices_are_kept_and_shown_as_such(
    settings: Settings, mongo_db: AsyncDatabase[Document], projector: RunningProjector
) -> None:
    await produce_events(
        settings,
        invoice_event("21", 1, total_amt="80.00"),
        invoice_event("21", 2, total_amt=0, balance=0, status="voided"),
        invoice_event("22", 1, total_amt="15.00"),
        invoice_event(
            "22", 2, total_amt=0, balance=0, deleted=True, local_customer_id=None, due_date=None
        ),
    )
    await projector.wait_handled(4)

    voided = await mongo_db["read_invoices"].find_one({"_id": f"{REALM}:21"})
    deleted = await mongo_db["read_invoices"].find_one({"_id": f"{REALM}:22"})
    assert voided is not None and deleted is not None
    assert (voided["status"], voided["deleted"], voided["total_amt_micros"]) == ("voided", False, 0)
    assert (deleted["status"], deleted["deleted"], deleted["version"]) == ("deleted", True, 2)
    # A deletion seen through CDC may not know the local customer; the QBO customer stays.
    assert deleted["qbo_customer_id"] == "58"


async def test_poison_events_are_dead_lettered_and_the_next_event_is_still_projected(
    settings: Settings, mongo_db: AsyncDatabase[Document], projector: RunningProjector
) -> None:
    good = invoice_event("300", 1, total_amt="0.10")
    key = event_key(good)
    off_contract = (
        SCHEMAS_DIR / "examples/invoice-updated.v1/invalid-string-amount.json"
    ).read_bytes()
    # Beyond any amount the read model can keep exactly (20 integer digits): refused, not rounded.
    inexact = jsoncodec.dumpb(good).replace(b'"balance":0.10', b'"balance":1E+20')
    assert inexact != jsoncodec.dumpb(good)
    # Same key, so all four share one partition and the good one comes after the bad ones.
    await produce(
        settings,
        [(key, b"{not json"), (key, off_contract), (key, inexact), (key, jsoncodec.dumpb(good))],
    )

    outcomes = await projector.wait_handled(4)
    assert outcomes == {"stored": 1.0, "stale": 0.0, "dead_lettered": 3.0}
    row = await mongo_db["read_invoices"].find_one({"_id": f"{REALM}:300"})
    assert row is not None and row["total_amt_micros"] == 100_000

    dead = await consume_all(settings, settings.dead_letter_topic, 3)
    assert [r.value for r in dead] == [b"{not json", off_contract, inexact]
    assert all(r.key == key for r in dead)
    headers = [dict(r.headers) for r in dead]
    assert [h["dlq.error_type"] for h in headers] == [
        b"InvalidJSON",
        b"SchemaViolation",
        b"UnprojectableEvent",
    ]
    assert headers[0]["dlq.reason"].startswith(b"not JSON")
    assert b"is not of type 'number'" in headers[1]["dlq.reason"]
    assert b"/data/total_amt" in headers[1]["dlq.reason"]
    assert b"more than 20 integer digits" in headers[2]["dlq.reason"]
    source_partition = (await consume_all(settings, settings.invoice_events_topic, 4))[0].partition
    for offset, h in enumerate(headers):
        assert h["dlq.topic"] == settings.invoice_events_topic.encode()
        assert h["dlq.partition"] == str(source_partition).encode()
        assert h["dlq.offset"] == str(offset).encode()
    # Committed past the poison records too: a restart would not see them again.
    offsets = await eventually(
        lambda: committed_offsets(settings), lambda o: o.get(source_partition) == 4
    )
    assert offsets[source_partition] == 4


async def test_an_event_under_the_wrong_key_is_dead_lettered(
    settings: Settings, mongo_db: AsyncDatabase[Document], projector: RunningProjector
) -> None:
    event = invoice_event("41", 1)
    await produce(settings, [(b"9130350000000001:999", jsoncodec.dumpb(event))])
    assert (await projector.wait_handled(1))["dead_lettered"] == 1.0
    assert await mongo_db["read_invoices"].count_documents({}) == 0
    (dead,) = await consume_all(settings, settings.dead_letter_topic, 1)
    assert dict(dead.headers)["dlq.error_type"] == b"BadKey"


async def test_absurdly_nested_json_is_dead_lettered_not_fatal(
    settings: Settings, mongo_db: AsyncDatabase[Document], projector: RunningProjector
) -> None:
    deep = b"[" * 200_000 + b"]" * 200_000
    good = invoice_event("42", 1)
    await produce(settings, [(event_key(good), deep), (event_key(good), jsoncodec.dumpb(good))])
    assert await projector.wait_handled(2) == {"stored": 1.0, "stale": 0.0, "dead_lettered": 1.0}
    (dead,) = await consume_all(settings, settings.dead_letter_topic, 1)
    assert dict(dead.headers)["dlq.error_type"] == b"InvalidJSON"
    assert await mongo_db["read_invoices"].count_documents({}) == 1


class FlakyReadInvoices(ReadInvoices):
    """The real collection, failing its first writes as a dropped connection would."""

    def __init__(self, db: AsyncDatabase[Document], failures: int) -> None:
        super().__init__(db)
        self.failures = failures

    async def apply_many(self, docs: Sequence[Document], time_budget: float | None = None) -> Any:
        if self.failures > 0:
            self.failures -= 1
            raise AutoReconnect("connection reset by test")
        return await super().apply_many(docs, time_budget)


async def test_a_failing_database_delays_the_event_but_never_skips_it(
    settings: Settings, mongo_db: AsyncDatabase[Document]
) -> None:
    flaky = FlakyReadInvoices(mongo_db, failures=3)
    projector, producer = make_projector(settings, mongo_db, flaky)
    task = await start(projector, settings)
    try:
        await produce_events(settings, invoice_event("55", 1), invoice_event("56", 1))
        await RunningProjector(projector).wait_handled(2)
    finally:
        await stop(task, producer)
    assert flaky.failures == 0
    keys = {row["_id"] async for row in mongo_db["read_invoices"].find({})}
    assert keys == {invoice_key(REALM, "55"), invoice_key(REALM, "56")}
    assert RunningProjector(projector).handled()["dead_lettered"] == 0.0


def subprocess_env(settings: Settings) -> dict[str, str]:
    return child_env({**infra_env(settings), "LOG_LEVEL": "WARNING"})


async def test_rebuild_drops_the_read_model_and_replays_the_topic_from_the_start(
    settings: Settings, mongo_db: AsyncDatabase[Document], projector: RunningProjector
) -> None:
    await produce_events(
        settings,
        invoice_event("61", 1, total_amt="5.00"),
        invoice_event("61", 2, total_amt="5.00", balance="1.25"),
        invoice_event("62", 1, total_amt="7.00"),
        invoice_event("63", 3, total_amt=0, balance=0, deleted=True),
    )
    await projector.wait_handled(4)
    # The read model drifts: a row no event explains, and a row rolled back by hand.
    await mongo_db["read_invoices"].insert_one({"_id": "stray", "version": 99})
    await mongo_db["read_invoices"].update_one(
        {"_id": f"{REALM}:61"}, {"$set": {"version": 1, "balance_micros": 5_000_000}}
    )

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.api.projector",
        "--rebuild",
        cwd=ROOT,
        env=subprocess_env(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    report = jsoncodec.loads(stdout.decode().strip().splitlines()[-1])
    assert report["records"] == 4
    assert report["partitions"] == settings.events_partitions

    rows = {row["_id"]: row async for row in mongo_db["read_invoices"].find({})}
    assert set(rows) == {f"{REALM}:61", f"{REALM}:62", f"{REALM}:63"}
    assert (rows[f"{REALM}:61"]["version"], rows[f"{REALM}:61"]["balance_micros"]) == (2, 1_250_000)
    assert rows[f"{REALM}:63"]["status"] == "deleted"


async def test_the_projector_runs_standalone_and_stops_cleanly_on_sigterm(
    settings: Settings, mongo_db: AsyncDatabase[Document]
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.api.projector",
        cwd=ROOT,
        env=subprocess_env(settings),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await produce_events(settings, invoice_event("71", 1, total_amt="3.30"))
        row = await eventually(
            lambda: mongo_db["read_invoices"].find_one({"_id": f"{REALM}:71"}),
            lambda r: r is not None,
            timeout_s=30,
        )
        assert row is not None and row["total_amt_micros"] == 3_300_000
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr.decode()


async def test_partitions_are_committed_independently(
    settings: Settings, projector: RunningProjector
) -> None:
    events = [invoice_event(str(i), 1) for i in range(1, 13)]
    await produce_events(settings, *events)
    await projector.wait_handled(12)
    per_partition: dict[int, int] = {}
    for record in await consume_all(settings, settings.invoice_events_topic, 12):
        per_partition[record.partition] = per_partition.get(record.partition, 0) + 1
    offsets = await eventually(lambda: committed_offsets(settings), lambda o: o == per_partition)
    assert offsets == per_partition
    assert len(per_partition) > 1  # the test means something only across partitions


async def projected_once_started(
    settings: Settings, db: AsyncDatabase[Document], total: int, store: ReadInvoices | None = None
) -> tuple[Projector, dict[str, float]]:
    """Start a projector on records already in the topic, so they come in as few batches as
    Kafka hands out, wait until it handled `total` of them and stop it."""
    projector, producer = make_projector(settings, db, store)
    task = await start(projector, settings)
    try:
        handled = await RunningProjector(projector).wait_handled(total)
    finally:
        await stop(task, producer)
    return projector, handled


async def test_a_batch_with_repeated_and_reordered_versions_keeps_the_newest(
    settings: Settings, mongo_db: AsyncDatabase[Document]
) -> None:
    # Already stored: invoice 80 at version 2 (to be updated), 81 at version 5 (newer than the
    # batch), and enough other invoices that the batch's versions are read with one `$in`.
    await mongo_db["read_invoices"].insert_many(
        [
            {"_id": invoice_key(REALM, "80"), "version": 2},
            {"_id": invoice_key(REALM, "81"), "version": 5},
        ]
    )
    events = [
        invoice_event("80", 3, balance="30.00"),
        invoice_event("80", 1),
        invoice_event("81", 4),
        invoice_event("82", 2, balance="20.00"),
        invoice_event("82", 7, balance="70.00"),
        invoice_event("82", 7, balance="70.00"),
        invoice_event("82", 5),
        *(invoice_event(str(900 + i), 1) for i in range(20)),
    ]
    await produce_events(settings, *events)

    _, handled = await projected_once_started(settings, mongo_db, len(events))

    assert handled == {"stored": 22.0, "stale": 5.0, "dead_lettered": 0.0}
    rows = {row["_id"]: row async for row in mongo_db["read_invoices"].find({})}
    assert len(rows) == 23
    assert (rows[f"{REALM}:80"]["version"], rows[f"{REALM}:80"]["balance_micros"]) == (
        3,
        30_000_000,
    )
    assert rows[f"{REALM}:81"] == {"_id": f"{REALM}:81", "version": 5}
    assert (rows[f"{REALM}:82"]["version"], rows[f"{REALM}:82"]["balance_micros"]) == (
        7,
        70_000_000,
    )
    assert all(rows[f"{REALM}:{900 + i}"]["version"] == 1 for i in range(20))


async def test_a_redelivered_batch_changes_nothing(
    settings: Settings, mongo_db: AsyncDatabase[Document]
) -> None:
    events = [invoice_event(str(i), 1 + i % 3) for i in range(1, 31)]
    await produce_events(settings, *events)
    await projected_once_started(settings, mongo_db, len(events))
    before = {row["_id"]: row async for row in mongo_db["read_invoices"].find({})}

    # The same records again, as after a rebalance or a crash before the commit.
    await produce_events(settings, *events)
    _, handled = await projected_once_started(settings, mongo_db, len(events))

    assert handled == {"stored": 0.0, "stale": 30.0, "dead_lettered": 0.0}
    after = {row["_id"]: row async for row in mongo_db["read_invoices"].find({})}
    assert after == before
    assert len(after) == 30


async def test_a_batch_mixing_valid_and_poison_records_dead_letters_only_the_poison(
    settings: Settings, mongo_db: AsyncDatabase[Document]
) -> None:
    good = [invoice_event(str(i), 1) for i in range(500, 510)]
    records: list[tuple[bytes | None, bytes | None]] = []
    for n, event in enumerate(good):
        records.append((event_key(event), jsoncodec.dumpb(event)))
        if n % 3 == 0:
            records.append((event_key(event), b"{not json"))
    await produce(settings, records)

    _, handled = await projected_once_started(settings, mongo_db, len(records))

    assert handled == {"stored": 10.0, "stale": 0.0, "dead_lettered": 4.0}
    keys = {row["_id"] async for row in mongo_db["read_invoices"].find({})}
    assert keys == {invoice_key(REALM, str(i)) for i in range(500, 510)}
    dead = await consume_all(settings, settings.dead_letter_topic, 4)
    assert {r.value for r in dead} == {b"{not json"}
    assert {r.key for r in dead} == {event_key(good[n]) for n in (0, 3, 6, 9)}
    for r in dead:
        h = dict(r.headers)
        source = [
            s
            for s in await consume_all(settings, settings.invoice_events_topic, len(records))
            if s.partition == int(h["dlq.partition"]) and s.offset == int(h["dlq.offset"])
        ]
        assert [s.value for s in source] == [b"{not json"]
    per_partition: dict[int, int] = {}
    for record in await consume_all(settings, settings.invoice_events_topic, len(records)):
        per_partition[record.partition] = per_partition.get(record.partition, 0) + 1
    assert await committed_offsets(settings) == per_partition


class CrashAfterWriting(ReadInvoices):
    """The real collection; the projector "dies" right after its writes, before any commit."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        super().__init__(db)
        self.written = asyncio.Event()

    async def apply_many(self, docs: Sequence[Document], time_budget: float | None = None) -> Any:
        await super().apply_many(docs, time_budget)
        self.written.set()
        await asyncio.Event().wait()  # cancelled here, as a killed process would stop


async def test_a_crash_between_the_writes_and_the_commit_loses_nothing(
    settings: Settings, mongo_db: AsyncDatabase[Document]
) -> None:
    events = [invoice_event(str(i), 2) for i in range(600, 640)]
    await produce_events(settings, *events)
    crashing = CrashAfterWriting(mongo_db)
    projector, producer = make_projector(settings, mongo_db, crashing)
    task = await start(projector, settings)
    await asyncio.wait_for(crashing.written.wait(), 30)
    await stop(task, producer)
    assert await committed_offsets(settings) == {}
    # Newer versions arrive while the projector is down.
    await produce_events(settings, *(invoice_event(str(i), 3) for i in range(600, 610)))

    _, handled = await projected_once_started(settings, mongo_db, len(events) + 10)

    rows = {row["_id"]: row["version"] async for row in mongo_db["read_invoices"].find({})}
    assert rows == {invoice_key(REALM, str(i)): 3 if i < 610 else 2 for i in range(600, 640)}
    assert handled["dead_lettered"] == 0.0
    offsets = await committed_offsets(settings)
    assert sum(offsets.values()) == len(events) + 10


class RacedReadInvoices(ReadInvoices):
    """The real collection, where another writer stores invoices right after the batch's
    versions were read (a rebuild, or the partition's previous owner)."""

    def __init__(self, db: AsyncDatabase[Document], others: list[Document]) -> None:
        super().__init__(db)
        self.others = others

    async def held(self, keys: Sequence[str]) -> list[Document]:
        found = await super().held(keys)
        if self.others:
            await self._collection.insert_many(self.others)
            self.others = []
        return found


async def test_invoices_inserted_by_another_writer_meanwhile_are_rechecked(
    mongo_db: AsyncDatabase[Document],
) -> None:
    def doc(invoice_id: str, version: int) -> Document:
        return {"_id": invoice_key(REALM, invoice_id), "version": version, "by": "batch"}

    others = [
        {"_id": invoice_key(REALM, "1"), "version": 1, "by": "other"},
        {"_id": invoice_key(REALM, "2"), "version": 9, "by": "other"},
        {"_id": invoice_key(REALM, "3"), "version": 2, "by": "other"},
    ]
    store = RacedReadInvoices(mongo_db, others)
    batch = [doc("1", 4), doc("2", 4), doc("3", 2), doc("4", 4)]

    applied = await store.apply_many(batch)

    # Newer than the other writer's: stored; older: stale; the same version: it is stored.
    assert applied == [Applied.STORED, Applied.STALE, Applied.STORED, Applied.STORED]
    rows = {
        row["_id"]: (row["version"], row["by"]) async for row in mongo_db["read_invoices"].find({})
    }
    assert rows == {
        invoice_key(REALM, "1"): (4, "batch"),
        invoice_key(REALM, "2"): (9, "other"),
        invoice_key(REALM, "3"): (2, "other"),
        invoice_key(REALM, "4"): (4, "batch"),
    }


async def test_a_batch_out_of_time_leaves_the_rest_for_later_and_counts_each_record_once(
    settings: Settings, mongo_db: AsyncDatabase[Document]
) -> None:
    await mongo_db["read_invoices"].insert_many(
        [{"_id": invoice_key(REALM, str(i)), "version": 1} for i in range(700, 712)]
    )
    events = [invoice_event(str(i), 2) for i in range(700, 712)]
    events += [invoice_event(str(i), 1) for i in range(720, 730)]
    records = [(event_key(e), jsoncodec.dumpb(e)) for e in events]
    records.insert(5, (event_key(events[5]), b"{not json"))
    await produce(settings, records)
    projector, producer = make_projector(settings, mongo_db)
    projector.batch_time_budget = 0.0  # one update per batch, the rest left for the next ones
    task = await start(projector, settings)
    try:
        handled = await RunningProjector(projector).wait_handled(len(records))
        per_partition: dict[int, int] = {}
        for record in await consume_all(settings, settings.invoice_events_topic, len(records)):
            per_partition[record.partition] = per_partition.get(record.partition, 0) + 1
        await eventually(lambda: committed_offsets(settings), lambda o: o == per_partition)
    finally:
        await stop(task, producer)

    assert handled == {"stored": 22.0, "stale": 0.0, "dead_lettered": 1.0}
    rows = {row["_id"]: row["version"] async for row in mongo_db["read_invoices"].find({})}
    assert rows == {
        **{invoice_key(REALM, str(i)): 2 for i in range(700, 712)},
        **{invoice_key(REALM, str(i)): 1 for i in range(720, 730)},
    }
    assert len(await consume_all(settings, settings.dead_letter_topic, 1)) == 1


class FlakyDeadLetters(DeadLetters):
    """The real dead-letter topic, whose first sends fail as an unreachable broker would."""

    def __init__(self, producer: LazyProducer, topic: str, failures: int) -> None:
        super().__init__(producer, topic)
        self.failures = failures

    async def send(self, record: Any, rejected: Any) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise KafkaConnectionError("broker unreachable (test)")
        await super().send(record, rejected)


async def test_a_dead_letter_that_cannot_be_sent_is_retried_and_each_record_counted_once(
    settings: Settings, mongo_db: AsyncDatabase[Document]
) -> None:
    good = [invoice_event(str(i), 1) for i in range(800, 806)]
    key = event_key(good[0])
    records = [(event_key(e), jsoncodec.dumpb(e)) for e in good]
    records[3:3] = [(key, b"{not json"), (key, b"[]")]
    await produce(settings, records)
    projector, producer = make_projector(settings, mongo_db)
    projector.dead_letters = FlakyDeadLetters(producer, settings.dead_letter_topic, failures=2)
    task = await start(projector, settings)
    try:
        handled = await RunningProjector(projector).wait_handled(len(records))
        dead = await consume_all(settings, settings.dead_letter_topic, 2)
    finally:
        await stop(task, producer)

    # Valid records after the unsent dead letter were written but not committed: read again,
    # they count as stale, as after a crash before the commit.
    assert handled["dead_lettered"] == 2.0
    assert handled["stored"] + handled["stale"] == 6.0
    assert sorted(r.value for r in dead) == [b"[]", b"{not json"]
    keys = {row["_id"] async for row in mongo_db["read_invoices"].find({})}
    assert keys == {invoice_key(REALM, str(i)) for i in range(800, 806)}


async def test_a_first_version_is_inserted_unread_and_never_overwrites_a_newer_one(
    mongo_db: AsyncDatabase[Document],
) -> None:
    # Invoice 1 holds version 3 already; the first version of 1 and of 2 arrive together.
    await mongo_db["read_invoices"].insert_one(
        {"_id": invoice_key(REALM, "1"), "version": 3, "by": "newer"}
    )
    batch = [
        {"_id": invoice_key(REALM, "1"), "version": 1, "by": "batch"},
        {"_id": invoice_key(REALM, "2"), "version": 1, "by": "batch"},
    ]

    applied = await ReadInvoices(mongo_db).apply_many(batch)

    # Invoice 2's copy landed; whether it counts as stored or stale is not known without a
    # read before the insert (services/api/store.py): only its row tells.
    assert applied[0] is Applied.STALE and applied[1] is not None
    rows = {
        row["_id"]: (row["version"], row["by"]) async for row in mongo_db["read_invoices"].find({})
    }
    assert rows == {invoice_key(REALM, "1"): (3, "newer"), invoice_key(REALM, "2"): (1, "batch")}


class RecordingReadInvoices(ReadInvoices):
    """The real collection, remembering the (key, version) of each batch it was given."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        super().__init__(db)
        self.batches: list[list[tuple[str, int]]] = []

    async def apply_many(
        self, docs: Sequence[Document], time_budget: float | None = None
    ) -> list[Applied | None]:
        self.batches.append([(d["_id"], d["version"]) for d in docs])
        return await super().apply_many(docs, time_budget)


async def test_a_small_companys_event_is_projected_ahead_of_another_companys_backlog(
    settings: Settings, mongo_db: AsyncDatabase[Document]
) -> None:
    busy, idle = "9130350000000077", "9130350000000078"
    # A busy company's three versions of 600 invoices, then one change of an idle company.
    backlog = [invoice_event(str(i), v, realm_id=busy) for v in (1, 2, 3) for i in range(600)]
    await produce_events(settings, *backlog, invoice_event("1", 1, realm_id=idle))
    store = RecordingReadInvoices(mongo_db)
    projector, producer = make_projector(settings, mongo_db, store)
    projector.batch_size = 100
    task = await start(projector, settings)
    try:
        handled = await RunningProjector(projector).wait_handled(len(backlog) + 1)
        per_partition: dict[int, int] = {}
        for record in await consume_all(settings, settings.invoice_events_topic, 1801):
            per_partition[record.partition] = per_partition.get(record.partition, 0) + 1
        await eventually(lambda: committed_offsets(settings), lambda o: o == per_partition)
    finally:
        await stop(task, producer)

    # In offset order it would have come after most of the 18 batches of the backlog.
    first = next(n for n, b in enumerate(store.batches) if (invoice_key(idle, "1"), 1) in b)
    assert first <= 1 and len(store.batches) >= 18
    # Each invoice's versions reached the read model in order, once each.
    seen: dict[str, list[int]] = {}
    for batch in store.batches:
        for key, version in batch:
            seen.setdefault(key, []).append(version)
    assert all(versions == sorted(versions) for versions in seen.values())
    assert handled["dead_lettered"] == 0.0 and handled["stored"] + handled["stale"] == 1801.0
    rows = {row["_id"]: row["version"] async for row in mongo_db["read_invoices"].find({})}
    assert rows == {invoice_key(busy, str(i)): 3 for i in range(600)} | {invoice_key(idle, "1"): 1}
