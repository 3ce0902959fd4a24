"""In-memory fakes of the sync service's ports (services/sync/ports.py) and of the Kafka
consumer and producer, behaving like the real adapters for what the service layer uses:
versions guarded as in `InvoiceStore`, facts guarded by SyncToken as in `CustomerMappings`,
outbox entries flushed as in `InvoiceEvents`, statuses moving forward as in `CommandLog`.

QBO is not faked: `Sync` runs the real `QboClient` against the project's emulator on a
loopback port, whose fault rules script pages, 401, 429, 5xx and faults, and whose counters
show every metered call.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
from aiokafka import ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaConnectionError

from qbo_emulator.config import EmulatorConfig
from qbo_emulator.state import EmulatorState
from qbo_emulator.testing import RunningEmulator, running_emulator
from services.common.messages import Command, RefreshInvoices
from services.common.mongo import Document
from services.common.statuses import CommandStatus
from services.sync.handlers import Dependencies
from services.sync.quickbooks.client import QboClient, RetryPolicy
from services.sync.quickbooks.errors import ReauthRequired
from services.sync.quickbooks.mapping import CustomerFacts, InvoiceRecord
from services.sync.store import (
    FINISHED,
    ApplyResult,
    Attempt,
    CustomerMapping,
    Held,
    InvoiceRejection,
    StoredVersions,
)
from services.sync.vault import NotConnected
from services.sync.worker import CommandWorker, WorkerOptions
from tests.fakes import FakeTime

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
TOPIC = "commands"


class FakeInvoices:
    """`InvoiceStore`: one document per invoice, stored only over an older version."""

    def __init__(self) -> None:
        self.docs: dict[str, Document] = {}
        self.writes = 0  # documents written, first versions included

    async def apply(
        self,
        records: Sequence[InvoiceRecord],
        local_ids: dict[str, str | None],
        known: StoredVersions | None = None,
    ) -> ApplyResult:
        written: list[Document] = []
        for record in records:
            held = self.docs.get(record.key)
            if held is not None and not record.is_newer_than(
                held["sync_token"], held["last_updated_time"], held["deleted"]
            ):
                continue
            doc = _document(record, local_ids, held)
            self.docs[record.key] = doc
            written = [d for d in written if d["_id"] != record.key] + [doc]
        self.writes += len(written)
        if known is not None:
            known.remember(written)
        return ApplyResult(len(records), [dict(d) for d in written])

    async def customer_versions(self, realm_id: str, qbo_customer_id: str) -> StoredVersions:
        return StoredVersions(
            {
                key: Held.of(doc)
                for key, doc in self.docs.items()
                if doc["realm_id"] == realm_id and doc["qbo_customer_id"] == qbo_customer_id
            }
        )

    def get_many(self, keys: Iterable[str]) -> list[Document]:
        return [dict(self.docs[k]) for k in keys if k in self.docs]

    def of_realm(self, realm_id: str) -> dict[str, Document]:
        """Stored documents by QBO invoice id."""
        return {d["invoice_id"]: d for d in self.docs.values() if d["realm_id"] == realm_id}


def _document(
    record: InvoiceRecord, local_ids: dict[str, str | None], held: Document | None
) -> Document:
    customer = record.qbo_customer_id
    local_id = local_ids.get(customer or "")
    if record.deleted and customer is None and held is not None:
        # A deletion stub names no customer: the invoice stays its customer's.
        customer, local_id = held["qbo_customer_id"], held["local_customer_id"]
    return {
        "_id": record.key,
        "realm_id": record.realm_id,
        "invoice_id": record.invoice_id,
        "qbo_customer_id": customer,
        "local_customer_id": local_id,
        "total_amt": record.total_amt,
        "balance": record.balance,
        "status": record.status.value,
        "deleted": record.deleted,
        "sync_token": record.sync_token,
        "last_updated_time": record.last_updated_time,
        "version": 1 if held is None else held["version"] + 1,
    }


class FakeMappings:
    """`CustomerMappings`: facts stored only over an older SyncToken (or none)."""

    def __init__(self) -> None:
        self.by_local: dict[str, CustomerMapping] = {}
        self.deleted: set[tuple[str, str]] = set()  # (realm, QBO customer) known deleted
        self.synced_by: dict[str, str] = {}  # local customer -> last command that synced it

    async def save(self, mapping: CustomerMapping) -> None:
        self.by_local[mapping.local_customer_id] = mapping

    async def get(self, local_customer_id: str) -> CustomerMapping | None:
        return self.by_local.get(local_customer_id)

    async def observe(self, realm_id: str, customers: Iterable[CustomerFacts]) -> int:
        changed = 0
        for facts in customers:
            for local_id, m in list(self._of(realm_id, facts.qbo_customer_id)):
                if facts.deleted:
                    if (realm_id, facts.qbo_customer_id) in self.deleted:
                        continue
                    self.deleted.add((realm_id, facts.qbo_customer_id))
                elif m.qbo_sync_token is not None and m.qbo_sync_token >= facts.sync_token:
                    continue
                self.by_local[local_id] = _with_facts(m, facts)
                changed += 1
        return changed

    async def repoint(
        self, realm_id: str, absorbed_id: str, survivor_id: str, survivor: CustomerFacts | None
    ) -> list[str]:
        moved = sorted(local_id for local_id, _ in self._of(realm_id, absorbed_id))
        for local_id in moved:
            m = replace(
                self.by_local[local_id],
                qbo_customer_id=survivor_id,
                merged_from=absorbed_id,
                qbo_sync_token=None,
                active=None,
            )
            self.by_local[local_id] = m if survivor is None else _with_facts(m, survivor)
        return moved

    async def merged_into(self, realm_id: str, survivor_id: str, absorbed_id: str) -> list[str]:
        return sorted(
            local_id
            for local_id, m in self._of(realm_id, survivor_id)
            if m.merged_from == absorbed_id
        )

    async def local_ids(
        self, realm_id: str, qbo_customer_ids: Iterable[str]
    ) -> dict[str, str | None]:
        found: dict[str, str | None] = {}
        for qbo_id in set(qbo_customer_ids):
            owners = sorted(local_id for local_id, _ in self._of(realm_id, qbo_id))
            found[qbo_id] = owners[0] if owners else None
        return found

    async def synced(self, local_customer_id: str, command_id: str) -> None:
        self.synced_by[local_customer_id] = command_id

    def _of(self, realm_id: str, qbo_customer_id: str) -> Iterable[tuple[str, CustomerMapping]]:
        return [
            (local_id, m)
            for local_id, m in self.by_local.items()
            if m.realm_id == realm_id and m.qbo_customer_id == qbo_customer_id
        ]


def _with_facts(mapping: CustomerMapping, facts: CustomerFacts) -> CustomerMapping:
    return replace(
        mapping,
        qbo_sync_token=facts.sync_token if facts.sync_token >= 0 else mapping.qbo_sync_token,
        active=facts.active,
        display_name=facts.display_name or mapping.display_name,
    )


class FakeOutbox:
    """`Outbox`: entries opened before a page's writes, closed after its events."""

    def __init__(self, clock: FakeClock) -> None:
        self.open_entries: dict[str, Document] = {}
        self._clock = clock

    async def open(self, command_id: str | None, keys: Sequence[str]) -> str:
        entry_id = uuid.uuid4().hex
        self.open_entries[entry_id] = {
            "_id": entry_id,
            "command_id": command_id,
            "keys": list(keys),
            "created_at": self._clock(),
        }
        return entry_id

    async def close(self, entry_id: str) -> None:
        self.open_entries.pop(entry_id, None)


@dataclass(frozen=True)
class Emitted:
    key: str
    version: int
    deleted: bool


class FakeEvents:
    """`InvoiceEvents`: records each event; `down` makes the next publish fail as Kafka would."""

    def __init__(self, invoices: FakeInvoices, outbox: FakeOutbox, clock: FakeClock) -> None:
        self.emitted: list[Emitted] = []
        self.down = 0  # publishes still to fail
        self._invoices = invoices
        self._outbox = outbox
        self._clock = clock

    async def publish(self, docs: Sequence[Document]) -> int:
        if self.down:
            self.down -= 1
            raise KafkaConnectionError("the brokers are away")
        self.emitted.extend(Emitted(d["_id"], d["version"], d["deleted"]) for d in docs)
        return len(docs)

    async def flush(
        self, command_id: str | None = None, older_than: timedelta | None = None
    ) -> int:
        cutoff = self._clock() - older_than if older_than is not None else None
        emitted = 0
        for entry in list(self._outbox.open_entries.values()):
            if command_id is not None and entry["command_id"] != command_id:
                continue
            if cutoff is not None and entry["created_at"] >= cutoff:
                continue
            emitted += await self.publish(self._invoices.get_many(entry["keys"]))
            await self._outbox.close(entry["_id"])
        return emitted

    def keys(self) -> list[str]:
        return [e.key for e in self.emitted]


class FakeCheckpoints:
    """`CdcCheckpoints`, remembering every move."""

    def __init__(self) -> None:
        self.moves: dict[str, list[datetime]] = {}

    async def get(self, realm_id: str) -> datetime | None:
        moves = self.moves.get(realm_id)
        return moves[-1] if moves else None

    async def move(self, realm_id: str, changed_since: datetime) -> None:
        self.moves.setdefault(realm_id, []).append(changed_since)


class FakeRejections:
    """`RejectedInvoices`: one entry per invoice, gone once the invoice is stored."""

    def __init__(self) -> None:
        self.entries: dict[str, Document] = {}

    async def record(
        self, rejections: Sequence[InvoiceRejection], source: str, command_id: str | None
    ) -> None:
        for r in rejections:
            seen = self.entries.get(r.key, {}).get("times_seen", 0)
            self.entries[r.key] = {
                "invoice_id": r.invoice_id,
                "reason": r.reason,
                "source": source,
                "command_id": command_id,
                "times_seen": seen + 1,
            }

    async def resolve(self, keys: Sequence[str]) -> None:
        for key in keys:
            self.entries.pop(key, None)


class FakeVault:
    """`TokenVault` (also the QBO client's token source), handing out the emulator's tokens.
    A realm is active unless the test marked it disconnected or needing re-authorisation."""

    def __init__(self, emulator: EmulatorState) -> None:
        self._emulator = emulator
        self.tokens: dict[str, str] = {}
        self.needs_reauth: set[str] = set()
        self.disconnected: set[str] = set()
        self.refreshes = 0

    def connect(self, realm_id: str) -> None:
        self.tokens[realm_id] = str(self._emulator.issue_tokens(realm_id)["access_token"])

    async def access_token(self, realm_id: str) -> str:
        if realm_id in self.needs_reauth:
            raise ReauthRequired(realm_id=realm_id)
        if realm_id in self.disconnected or realm_id not in self.tokens:
            raise NotConnected(realm_id)
        return self.tokens[realm_id]

    async def refresh_after_401(self, realm_id: str, rejected: str) -> str:
        self.refreshes += 1
        self.connect(realm_id)
        return await self.access_token(realm_id)

    async def active_realms(self) -> list[str]:
        return sorted(set(self.tokens) - self.disconnected - self.needs_reauth)


class FakeClock:
    """The handlers' wall clock, moved by the test."""

    def __init__(self, now: datetime = EPOCH) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class FakeCommandLog:
    """`CommandLog`: statuses only move forward; a finished command is not started again."""

    def __init__(self) -> None:
        self.history: dict[str, list[str]] = {}
        self.docs: dict[str, dict[str, Any]] = {}

    def _set(self, command_id: str, status: str, **fields: Any) -> None:
        self.history.setdefault(command_id, []).append(status)
        self.docs.setdefault(command_id, {}).update(status=status, **fields)

    async def running(self, command: Command, attempt: int) -> Attempt | None:
        if self.status(command.command_id) in FINISHED:
            return None
        ran_before = "running" in self.history.get(command.command_id, [])
        self._set(command.command_id, "running", attempts=attempt)
        return Attempt(attempt, datetime.now(UTC), ran_before)

    async def finished(
        self,
        command_id: str,
        status: CommandStatus,
        reason: str | None = None,
        result: dict[str, Any] | None = None,
        attempt: Attempt | None = None,
    ) -> bool:
        if self.status(command_id) in FINISHED:
            return False
        self._set(command_id, status.value, reason=reason, result=result)
        return True

    async def throttled(self, command_id: str, resumes_at: datetime, reason: str) -> None:
        self._set(command_id, "throttled", resumes_at=resumes_at, reason=reason)

    def status(self, command_id: str) -> str | None:
        return self.docs.get(command_id, {}).get("status")


class FakeConsumer:
    """What the worker uses of AIOKafkaConsumer: per-partition logs read from a position,
    pause/resume, commits, and a rebalance listener the test can trigger."""

    def __init__(self, partitions: int = 2) -> None:
        tps = [TopicPartition(TOPIC, p) for p in range(partitions)]
        self.logs: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {t: [] for t in tps}
        self.positions = dict.fromkeys(tps, 0)
        self.assigned = set(tps)
        self.paused_tps: set[TopicPartition] = set()
        self.committed: dict[TopicPartition, int] = {}
        self.listener: ConsumerRebalanceListener | None = None

    def add(self, tp: TopicPartition, key: str, value: bytes) -> int:
        offset = len(self.logs[tp])
        self.logs[tp].append(
            ConsumerRecord(TOPIC, tp.partition, offset, 0, 0, key.encode(), value, None, 0, 0, [])
        )
        return offset

    def subscribe(self, topics: list[str], listener: ConsumerRebalanceListener) -> None:
        self.listener = listener

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def paused(self) -> set[TopicPartition]:
        return set(self.paused_tps)

    def pause(self, *tps: TopicPartition) -> None:
        self.paused_tps.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused_tps.difference_update(tps)

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {tp.partition for tp in self.logs}

    async def getmany(
        self, timeout_ms: int, max_records: int
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        batches = {}
        for tp in sorted(self.assigned - self.paused_tps):
            records = self.logs[tp][self.positions[tp] : self.positions[tp] + max_records]
            if records:
                batches[tp] = records
                self.positions[tp] += len(records)
        await asyncio.sleep(0)
        return batches

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            if tp not in self.assigned:
                raise IllegalStateError(f"{tp} is not assigned")
            assert offset >= self.committed.get(tp, 0), "a commit never goes back"
            self.committed[tp] = offset

    async def revoke(self, tps: Collection[TopicPartition]) -> None:
        """An eager rebalance: the listener runs, then the partitions are gone."""
        assert self.listener is not None
        await self.listener.on_partitions_revoked(set(tps))
        self.assigned -= set(tps)
        self.paused_tps -= set(tps)


class FakeProducer:
    """The dead-letter producer: what was sent, with its headers."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, dict[str, bytes]]] = []

    async def send_and_wait(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Any = None
    ) -> None:
        self.sent.append((topic, value, dict(headers or [])))

    def reasons(self) -> list[str]:
        return [headers["dlq.reason"].decode() for _, _, headers in self.sent]


@dataclass
class Sync:
    """The sync service's layer over fakes: handlers and worker with the real QBO client,
    talking to an emulator whose clock and the handlers' clock the test moves."""

    emulator: RunningEmulator
    deps: Dependencies
    invoices: FakeInvoices
    mappings: FakeMappings
    events: FakeEvents
    outbox: FakeOutbox
    checkpoints: FakeCheckpoints
    rejected: FakeRejections
    vault: FakeVault
    clock: FakeClock
    qbo: QboClient
    time: FakeTime = field(default_factory=FakeTime)
    commands: FakeCommandLog = field(default_factory=FakeCommandLog)
    consumer: FakeConsumer = field(default_factory=FakeConsumer)
    producer: FakeProducer = field(default_factory=FakeProducer)
    backoffs: list[float] = field(default_factory=list)

    @property
    def books(self) -> EmulatorState:
        return self.emulator.state

    def calls(self, realm_id: str, endpoint: str | None = None) -> int:
        """Requests the emulator answered for the realm (what Intuit meters)."""
        return self.books.stats.request_count(realm_id, endpoint)

    def worker(self, **options: Any) -> CommandWorker:
        worker = CommandWorker(
            self.consumer,
            self.producer,
            self.deps,
            self.commands,
            replace(WorkerOptions(TOPIC, "dlq"), **options),
            sleep=self.time.sleep,
            clock=self.time.clock,
        )
        worker.subscribe()
        return worker


@contextlib.asynccontextmanager
async def sync_layer(**retry: Any) -> AsyncIterator[Sync]:
    """A fresh emulator and fakes; the QBO client's back-off sleeps return at once (recorded)."""
    clock = FakeClock()
    # Intuit's per-second limit would count every call of a test in one second of the frozen
    # clock: throttling is scripted with fault rules instead.
    config = EmulatorConfig(throttle_per_second=10_000, throttle_per_minute=100_000)
    state = EmulatorState(config, clock=lambda: clock.now.timestamp())
    backoffs: list[float] = []

    async def no_wait(delay: float) -> None:
        backoffs.append(delay)

    async with running_emulator(state) as emulator, aiohttp.ClientSession() as http:
        vault = FakeVault(state)
        qbo = QboClient(http, emulator.base_url, vault, retry=RetryPolicy(**retry), sleep=no_wait)
        invoices, outbox = FakeInvoices(), FakeOutbox(clock)
        events = FakeEvents(invoices, outbox, clock)
        mappings, checkpoints, rejected = FakeMappings(), FakeCheckpoints(), FakeRejections()
        deps = Dependencies(
            qbo=qbo,
            vault=vault,
            invoices=invoices,
            mappings=mappings,
            events=events,
            outbox=outbox,
            checkpoints=checkpoints,
            rejected=rejected,
            clock=clock,
            cdc_overlap=timedelta(seconds=60),
        )
        yield Sync(
            emulator,
            deps,
            invoices,
            mappings,
            events,
            outbox,
            checkpoints,
            rejected,
            vault,
            clock,
            qbo,
            backoffs=backoffs,
        )


# -- the world the tests build -----------------------------------------------------------------

REALM = "9130350000000001"


def mapped_customer(sync: Sync, local_id: str = "cust-1", name: str = "Acme Ltd") -> str:
    """A QBO customer, mapped to `local_id`; returns its QBO id."""
    qbo_id = str(sync.books.create_customer(REALM, {"DisplayName": name})["Id"])
    sync.mappings.by_local[local_id] = CustomerMapping(local_id, REALM, qbo_id, name)
    return qbo_id


def add_invoices(sync: Sync, qbo_customer_id: str, *amounts: Decimal) -> list[str]:
    return [
        str(
            sync.books.create_invoice(
                REALM,
                {"CustomerRef": {"value": qbo_customer_id}, "TotalAmt": a, "Balance": a},
            )["Id"]
        )
        for a in amounts
    ]


def keys(*invoice_ids: str) -> list[str]:
    return sorted(f"{REALM}:{i}" for i in invoice_ids)


def refresh_command() -> RefreshInvoices:
    return RefreshInvoices(realm_id=REALM, issued_by="api", local_customer_id="cust-1")


AMOUNTS = [Decimal("1.10"), Decimal("10.1234567"), Decimal("5.125"), Decimal("7"), Decimal("0.01")]
