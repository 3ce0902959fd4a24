"""MongoDB repositories of the sync service (collections described in docs/data-model.md).

Written for what FerretDB v1 and MongoDB both support: no transactions, so every write is a
single-document operation with a guard filter, and the "write, then emit an event" pair is held
together by an outbox entry written before the invoices and deleted after their events.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any

import structlog
from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.common.messages import Command
from services.common.money import to_micros
from services.common.mongo import Document, IndexSpec, find_by_ids
from services.sync.quickbooks.mapping import InvoiceRecord

log = structlog.get_logger(__name__)

INDEXES = [
    IndexSpec("outbox", [("command_id", 1)], "command_id"),
    IndexSpec("outbox", [("created_at", 1)], "created_at"),
    IndexSpec("invoices", [("realm_id", 1), ("qbo_customer_id", 1)], "realm_customer"),
    IndexSpec("customer_mappings", [("realm_id", 1), ("qbo_customer_id", 1)], "realm_customer"),
    IndexSpec("commands", [("realm_id", 1), ("status", 1)], "realm_status"),
]

Clock = Callable[[], datetime]

HELD_FIELDS: Document = {
    "version": 1,
    "sync_token": 1,
    "last_updated_time": 1,
    "deleted": 1,
    "qbo_customer_id": 1,
    "local_customer_id": 1,
}


def _day(value: date | None) -> str | None:
    # Dates as ISO strings: BSON has no date-only type and a midnight datetime invites
    # time-zone bugs; ISO strings also sort correctly.
    return value.isoformat() if value else None


@dataclass(frozen=True)
class ApplyResult:
    received: int
    written: list[Document]  # the versions this call stored, as stored (without raw_json)

    @property
    def stored(self) -> int:
        return len(self.written)


@dataclass(frozen=True, slots=True)
class Held:
    """What a write is compared against: the stored version of one invoice."""

    version: int
    sync_token: int
    last_updated_time: datetime
    deleted: bool
    qbo_customer_id: str | None
    local_customer_id: str | None

    @classmethod
    def of(cls, doc: Document) -> Held:
        return cls(
            int(doc["version"]),
            int(doc["sync_token"]),
            doc["last_updated_time"],
            bool(doc["deleted"]),
            doc.get("qbo_customer_id"),
            doc.get("local_customer_id"),
        )


class StoredVersions:
    """One customer's stored versions, read once for a whole refresh instead of once a page.

    Per-page lookups cost a scan of the collection on FerretDB, so a full sync grew with the
    square of the invoice count. This holds only versions that were stored at some point: it
    may fall behind (another writer) but is never ahead, and every write stays guarded, so a
    write based on an outdated entry conflicts and is compared again against a fresh read.
    """

    def __init__(self, held: dict[str, Held]) -> None:
        self._held = held

    def __len__(self) -> int:
        return len(self._held)

    def get(self, key: str) -> Held | None:
        return self._held.get(key)

    def remember(self, docs: Iterable[Document]) -> None:
        self.learn({doc["_id"]: Held.of(doc) for doc in docs})

    def learn(self, held: dict[str, Held]) -> None:
        self._held.update(held)


class InvoiceStore:
    """The write model: one document per QBO invoice, never overwritten by an older version."""

    def __init__(self, db: AsyncDatabase[Document], clock: Clock) -> None:
        self._invoices = db["invoices"]
        self._clock = clock

    async def apply(
        self,
        records: Sequence[InvoiceRecord],
        local_ids: dict[str, str | None],
        known: StoredVersions | None = None,
    ) -> ApplyResult:
        """Store every record that is newer than what is stored; return what was written.

        `local_ids` maps QBO customer ids to local customer ids. `known`, when given, stands in
        for reading the stored versions (a key it lacks is taken as not stored) and learns what
        this call writes. Safe to call again with the same records (a redelivered command):
        nothing is newer the second time.
        """
        newest: dict[str, InvoiceRecord] = {}
        for record in records:  # a page may repeat an invoice; keep its newest version
            held = newest.get(record.key)
            if held is None or record.is_newer_than(
                held.sync_token, held.last_updated_time, held.deleted
            ):
                newest[record.key] = record
        written: list[Document] = []
        pending = list(newest.values())
        raced: set[str] = set()
        for attempt in range(5):
            keys = [r.key for r in pending]
            if known is not None and attempt == 0:
                current = {k: found for k in keys if (found := known.get(k)) is not None}
            else:
                current = await self._held(keys)
                if known is not None:
                    known.learn(current)
            done, conflicted = await self._write(pending, local_ids, current)
            written.extend(done)
            raced |= conflicted
            if not conflicted:
                # A write reported as conflicting may have landed all the same (FerretDB's
                # bulk results are unreliable and its guarded updates are not atomic, so two
                # writers can both see a conflict): hand back what is stored now for those
                # keys, so the stored version gets its event whoever wrote it (invariant 4).
                unsure = raced - {d["_id"] for d in written}
                if unsure:
                    written.extend(await self.get_many(sorted(unsure)))
                if known is not None:
                    known.remember(written)
                return ApplyResult(len(records), written)
            # Someone else wrote some of these meanwhile (a partition moved, a sweeper):
            # compare again against what is now stored.
            pending = [r for r in pending if r.key in conflicted]
        raise RuntimeError(f"invoice writes kept conflicting for {sorted(conflicted)[:5]}")

    async def _write(
        self,
        records: Sequence[InvoiceRecord],
        local_ids: dict[str, str | None],
        current: dict[str, Held],
    ) -> tuple[list[Document], set[str]]:
        if not records:
            return [], set()
        now = self._clock()
        inserts: list[Document] = []
        updates: list[UpdateOne] = []
        updated: list[Document] = []
        update_keys: set[str] = set()
        for record in records:
            local_id = local_ids.get(record.qbo_customer_id or "")
            held = current.get(record.key)
            if held is None:
                inserts.append({"_id": record.key, **self._fields(record, local_id, 1, now)})
                continue
            newer = record.is_newer_than(held.sync_token, held.last_updated_time, held.deleted)
            # A customer mapped after its invoices were stored: same QBO version, new owner.
            relinked = (
                not newer
                and not held.deleted
                and local_id is not None
                and held.local_customer_id != local_id
                and record.sync_token == held.sync_token
            )
            if newer or relinked:
                fields = self._fields(record, local_id, held.version + 1, now)
                if record.deleted and record.qbo_customer_id is None:
                    # A deletion stub names no customer (webhooks and CDC send ids only): the
                    # invoice stays its customer's, so listings can still show it as deleted.
                    fields["qbo_customer_id"] = held.qbo_customer_id
                    fields["local_customer_id"] = held.local_customer_id
                update_keys.add(record.key)
                updated.append({"_id": record.key, **fields})
                updates.append(
                    UpdateOne({"_id": record.key, "version": held.version}, {"$set": fields})
                )
        conflicted: set[str] = set()
        written: list[Document] = []
        if inserts:
            try:
                await self._invoices.insert_many(inserts, ordered=False)
                written.extend(inserts)
            except (BulkWriteError, DuplicateKeyError, KeyError):
                # FerretDB reports bulk write errors with wrong indexes (and no nModified), so
                # don't trust the details: re-check every insert of this batch.
                conflicted |= {d["_id"] for d in inserts}
        if updates:
            try:
                bulk = await self._invoices.bulk_write(updates, ordered=False)
                if bulk.matched_count != len(updates):
                    conflicted |= update_keys
                else:
                    written.extend(updated)
            except (BulkWriteError, KeyError):
                conflicted |= update_keys
        for doc in written:
            doc.pop("raw_json", None)
        return written, conflicted

    def _fields(
        self, record: InvoiceRecord, local_id: str | None, version: int, now: datetime
    ) -> Document:
        return {
            "realm_id": record.realm_id,
            "invoice_id": record.invoice_id,
            "qbo_customer_id": record.qbo_customer_id,
            "local_customer_id": local_id,
            "doc_number": record.doc_number,
            "txn_date": _day(record.txn_date),
            "due_date": _day(record.due_date),
            "currency": record.currency,
            "total_amt_micros": to_micros(record.total_amt),
            "balance_micros": to_micros(record.balance),
            "status": record.status.value,
            "deleted": record.deleted,
            "sync_token": record.sync_token,
            "last_updated_time": record.last_updated_time,
            "last_updated_text": record.last_updated_time.isoformat(),
            "version": version,
            "raw_json": record.raw_json,
            "stored_at": now,
        }

    async def get_many(self, keys: Iterable[str]) -> list[Document]:
        return await find_by_ids(self._invoices, list(keys), {"raw_json": 0})

    async def customer_versions(self, realm_id: str, qbo_customer_id: str) -> StoredVersions:
        cursor = self._invoices.find(
            {"realm_id": realm_id, "qbo_customer_id": qbo_customer_id}, HELD_FIELDS
        )
        return StoredVersions({d["_id"]: Held.of(d) async for d in cursor})

    async def _held(self, keys: list[str]) -> dict[str, Held]:
        return {d["_id"]: Held.of(d) for d in await find_by_ids(self._invoices, keys, HELD_FIELDS)}

    async def keys_for_customer(self, realm_id: str, qbo_customer_id: str) -> list[str]:
        cursor = self._invoices.find(
            {"realm_id": realm_id, "qbo_customer_id": qbo_customer_id}, {"_id": 1}
        )
        return [d["_id"] async for d in cursor]

    async def get(self, realm_id: str, invoice_id: str) -> Document | None:
        return await self._invoices.find_one({"_id": f"{realm_id}:{invoice_id}"})


@dataclass(frozen=True)
class CustomerMapping:
    local_customer_id: str
    realm_id: str
    qbo_customer_id: str
    display_name: str


class CustomerMappings:
    def __init__(self, db: AsyncDatabase[Document], clock: Clock) -> None:
        self._mappings = db["customer_mappings"]
        self._clock = clock

    async def save(self, mapping: CustomerMapping) -> None:
        now = self._clock()
        await self._mappings.update_one(
            {"_id": mapping.local_customer_id},
            {
                "$set": {
                    "local_customer_id": mapping.local_customer_id,
                    "realm_id": mapping.realm_id,
                    "qbo_customer_id": mapping.qbo_customer_id,
                    "display_name": mapping.display_name,
                    "mapped_at": now,
                },
                "$setOnInsert": {"last_synced_at": None},
            },
            upsert=True,
        )

    async def get(self, local_customer_id: str) -> CustomerMapping | None:
        doc = await self._mappings.find_one({"_id": local_customer_id})
        if doc is None:
            return None
        return CustomerMapping(
            doc["local_customer_id"], doc["realm_id"], doc["qbo_customer_id"], doc["display_name"]
        )

    async def local_ids(
        self, realm_id: str, qbo_customer_ids: Iterable[str]
    ) -> dict[str, str | None]:
        ids = sorted(set(qbo_customer_ids))
        found: dict[str, str | None] = dict.fromkeys(ids)
        cursor = self._mappings.find(
            {"realm_id": realm_id, "qbo_customer_id": {"$in": ids}},
            {"qbo_customer_id": 1, "local_customer_id": 1},
        ).sort("local_customer_id", 1)
        async for doc in cursor:
            # Several local customers may share one QBO customer; the first (by id) owns the
            # invoices in events. Deterministic, so redeliveries agree.
            if found.get(doc["qbo_customer_id"]) is None:
                found[doc["qbo_customer_id"]] = doc["local_customer_id"]
        return found

    async def synced(self, local_customer_id: str, command_id: str) -> None:
        await self._mappings.update_one(
            {"_id": local_customer_id},
            {"$set": {"last_synced_at": self._clock(), "last_sync_command_id": command_id}},
        )


class CommandStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    NEEDS_REAUTH = "needs_reauth"
    THROTTLED = "throttled"  # QBO throttles the realm: the command runs again at `resumes_at`


class CommandLog:
    """Status of every command, queryable by command id (docs/data-model.md)."""

    def __init__(self, db: AsyncDatabase[Document], clock: Clock) -> None:
        self._commands = db["commands"]
        self._clock = clock

    async def running(self, command: Command, attempt: int) -> None:
        body = command.to_dict()
        await self._commands.update_one(
            {"_id": command.command_id},
            {
                "$set": {
                    "type": command.type,
                    "realm_id": command.realm_id,
                    "local_customer_id": body.get("local_customer_id"),
                    "issued_at": command.issued_at,
                    "issued_by": command.issued_by,
                    "status": CommandStatus.RUNNING.value,
                    "started_at": self._clock(),
                    "attempts": attempt,
                    "reason": None,
                }
            },
            upsert=True,
        )

    async def finished(
        self,
        command_id: str,
        status: CommandStatus,
        reason: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> None:
        update: Document = {"status": status.value, "finished_at": self._clock(), "reason": reason}
        if result is not None:
            update["result"] = result
        await self._commands.update_one({"_id": command_id}, {"$set": update}, upsert=True)

    async def throttled(self, command_id: str, resumes_at: datetime, reason: str) -> None:
        """Deferred, not failed: the realm is paused until `resumes_at`, then it runs again."""
        await self._commands.update_one(
            {"_id": command_id},
            {
                "$set": {
                    "status": CommandStatus.THROTTLED.value,
                    "resumes_at": resumes_at,
                    "reason": reason,
                }
            },
            upsert=True,
        )

    async def get(self, command_id: str) -> Document | None:
        return await self._commands.find_one({"_id": command_id})


class CdcCheckpoints:
    def __init__(self, db: AsyncDatabase[Document], clock: Clock) -> None:
        self._checkpoints = db["cdc_checkpoints"]
        self._clock = clock

    async def get(self, realm_id: str) -> datetime | None:
        doc = await self._checkpoints.find_one({"_id": realm_id})
        return doc["changed_since"] if doc else None

    async def move(self, realm_id: str, changed_since: datetime) -> None:
        await self._checkpoints.update_one(
            {"_id": realm_id},
            {"$set": {"changed_since": changed_since, "updated_at": self._clock()}},
            upsert=True,
        )


class Outbox:
    """Intent records for "these invoices are being written; their events are owed".

    One entry per written page (not per invoice: FerretDB v1 pays a transaction per updated
    document, so a per-invoice flag would double the cost of every page). An entry is opened
    before the invoice writes and closed after Kafka acknowledged the events. An entry left
    open by a crash is flushed by the redelivered command (same command id) or by the sweep,
    which emits the invoices' current versions: at least once, never lost (invariant 4).
    """

    def __init__(self, db: AsyncDatabase[Document], clock: Clock) -> None:
        self._outbox = db["outbox"]
        self._clock = clock

    async def open(self, command_id: str | None, keys: Sequence[str]) -> str:
        entry_id = uuid.uuid4().hex
        await self._outbox.insert_one(
            {
                "_id": entry_id,
                "command_id": command_id,
                "keys": list(keys),
                "created_at": self._clock(),
            }
        )
        return entry_id

    async def close(self, entry_id: str) -> None:
        await self._outbox.delete_one({"_id": entry_id})

    async def entries(
        self, command_id: str | None = None, older_than: datetime | None = None, limit: int = 100
    ) -> list[Document]:
        query: Document = {}
        if command_id is not None:
            query["command_id"] = command_id
        if older_than is not None:
            query["created_at"] = {"$lt": older_than}
        cursor = self._outbox.find(query).sort("created_at", 1).limit(limit)
        return [d async for d in cursor]
