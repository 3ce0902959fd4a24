"""MongoDB repositories of the sync service (collections described in docs/data-model.md).

Written for what FerretDB v1 and MongoDB both support: no transactions, so every write is a
single-document operation with a guard filter, and the "write, then emit an event" pair is held
together by an outbox entry written before the invoices and deleted after their events.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import partial
from typing import Any

import structlog
from pymongo import ReturnDocument, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.common import money, tracing
from services.common.clock import Clock
from services.common.messages import Command
from services.common.mongo import Document, IndexSpec, find_by_ids
from services.common.statuses import CommandStatus
from services.sync.quickbooks.mapping import CustomerFacts, InvoiceRecord
from services.sync.turns import in_slices

log = structlog.get_logger(__name__)

_MAX_REASON = 1000
CLEAN_REALM_S = 60.0  # how long a realm found without rejected invoices is taken as such
_MAX_RAW = 256 * 1024  # an invoice is a few KB; the cap only keeps one entry well under 16 MB

INDEXES = [
    IndexSpec("outbox", [("command_id", 1)], "command_id"),
    IndexSpec("outbox", [("created_at", 1)], "created_at"),
    IndexSpec("invoices", [("realm_id", 1), ("qbo_customer_id", 1)], "realm_customer"),
    IndexSpec("customer_mappings", [("realm_id", 1), ("qbo_customer_id", 1)], "realm_customer"),
    IndexSpec("commands", [("realm_id", 1), ("status", 1)], "realm_status"),
    IndexSpec("rejected_invoices", [("realm_id", 1), ("last_seen_at", -1)], "realm_last_seen"),
]


HELD_FIELDS: Document = {
    "version": 1,
    "sync_token": 1,
    "last_updated_time": 1,
    "deleted": 1,
    "qbo_customer_id": 1,
    "local_customer_id": 1,
}


def to_millis(value: datetime) -> datetime:
    """`value` with the precision a BSON date keeps."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


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

    def live_keys(self) -> set[str]:
        """The keys held that are not deletion tombstones."""
        return {key for key, held in self._held.items() if not held.deleted}


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
        # As stored: a BSON date keeps milliseconds, and the documents returned here are the
        # ones events are built from first (the outbox rebuilds them from the stored copy).
        now = to_millis(self._clock())
        # A page's documents: CPU only, a slice at a time in its turn (services/sync/turns.py).
        inserts: list[Document] = []
        updates: list[UpdateOne] = []
        updated: list[Document] = []
        update_keys: set[str] = set()
        plan = partial(self._plan, local_ids=local_ids, current=current, now=now)
        for part in await in_slices(records, plan):
            inserts += part[0]
            updates += part[1]
            updated += part[2]
            update_keys |= part[3]
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

    def _plan(
        self,
        records: Sequence[InvoiceRecord],
        local_ids: dict[str, str | None],
        current: dict[str, Held],
        now: datetime,
    ) -> tuple[list[Document], list[UpdateOne], list[Document], set[str]]:
        """The documents to insert, and the guarded updates (with the documents they write)."""
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
            # QBO moved the invoice to another customer without a new SyncToken (as a merge
            # might): the copy just read names the customer QBO holds now, and the move gets
            # its own version and event (docs/design.md invariant 12).
            moved = (
                not newer
                and not held.deleted
                and not record.deleted
                and record.qbo_customer_id is not None
                and record.qbo_customer_id != held.qbo_customer_id
                and record.sync_token == held.sync_token
                and record.last_updated_time >= held.last_updated_time
            )
            if newer or relinked or moved:
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
        return inserts, updates, updated, update_keys

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
            **money.stored_fields("total_amt", record.total_amt),
            **money.stored_fields("balance", record.balance),
            "exchange_rate": money.optional_text(record.exchange_rate),
            "home_total_amt": money.optional_text(record.home_total_amt),
            "home_balance": money.optional_text(record.home_balance),
            "status": record.status.value,
            "deleted": record.deleted,
            "sync_token": record.sync_token,
            "last_updated_time": record.last_updated_time,
            "last_updated_text": record.last_updated_time.isoformat(),
            "version": version,
            "raw_json": record.raw_json,
            "stored_at": now,
            **tracing.version_context(version),  # the trace its event names (invariant 4)
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


@dataclass(frozen=True)
class CustomerMapping:
    local_customer_id: str
    realm_id: str
    qbo_customer_id: str
    display_name: str
    # The QBO customer as of the last read (None until one was read, e.g. a mapping stored
    # before these fields existed): kept in step by webhooks, CDC and every refresh.
    qbo_sync_token: int | None = None
    active: bool | None = None
    merged_from: str | None = None  # the QBO customer this mapping named before a merge

    @classmethod
    def of(cls, doc: Document) -> CustomerMapping:
        token = doc.get("qbo_sync_token")
        return cls(
            doc["local_customer_id"],
            doc["realm_id"],
            doc["qbo_customer_id"],
            doc.get("display_name") or "",
            int(token) if token is not None else None,
            doc.get("active"),
            doc.get("merged_from"),
        )


def _facts_fields(facts: CustomerFacts, now: datetime) -> Document:
    fields: Document = {
        "active": facts.active,
        "qbo_deleted": facts.deleted,
        "customer_read_at": now,
    }
    if facts.sync_token >= 0:  # a deletion stub carries none: the stored one stays
        fields["qbo_sync_token"] = facts.sync_token
    if facts.display_name is not None:
        fields["display_name"] = facts.display_name
    return fields


class CustomerMappings:
    """`customer_mappings`: local customer -> QBO customer, with the QBO customer's SyncToken,
    Active and DisplayName as of the last read.

    Like invoices, the customer facts never move backwards (docs/design.md invariant 12): every
    write of them is a single-document update guarded by the stored SyncToken, since FerretDB
    v1 has no transactions.
    """

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
                    "qbo_sync_token": mapping.qbo_sync_token,
                    "active": mapping.active,
                    "qbo_deleted": False,
                    "merged_from": mapping.merged_from,
                    "mapped_at": now,
                    "customer_read_at": now,
                },
                "$setOnInsert": {"last_synced_at": None},
            },
            upsert=True,
        )

    async def get(self, local_customer_id: str) -> CustomerMapping | None:
        doc = await self._mappings.find_one({"_id": local_customer_id})
        return None if doc is None else CustomerMapping.of(doc)

    async def observe(self, realm_id: str, customers: Iterable[CustomerFacts]) -> int:
        """Keep every mapping of these QBO customers in step; returns the mappings changed.

        A read is stored only over an older SyncToken (or none): a late or repeated read
        changes nothing. A deletion stub carries no SyncToken; a deletion is final instead.
        """
        now = self._clock()
        changed = 0
        for facts in customers:
            guard: Document = {"realm_id": realm_id, "qbo_customer_id": facts.qbo_customer_id}
            if facts.deleted:
                guard["qbo_deleted"] = {"$ne": True}
            else:
                guard["$or"] = [
                    {"qbo_sync_token": None},
                    {"qbo_sync_token": {"$lt": facts.sync_token}},
                ]
            result = await self._mappings.update_many(guard, {"$set": _facts_fields(facts, now)})
            changed += result.modified_count
        return changed

    async def repoint(
        self, realm_id: str, absorbed_id: str, survivor_id: str, survivor: CustomerFacts | None
    ) -> list[str]:
        """A merge: every mapping of the absorbed QBO customer names the survivor from now on.

        One guarded update per mapping (still naming the absorbed customer), so a redelivered
        merge finds nothing left to move. The survivor's facts replace the absorbed one's: the
        SyncTokens of two customers cannot be compared. Returns the local ids moved.
        """
        now = self._clock()
        cursor = self._mappings.find(
            {"realm_id": realm_id, "qbo_customer_id": absorbed_id}, {"_id": 1}
        )
        candidates = [d["_id"] async for d in cursor]
        fields: Document = {
            "qbo_customer_id": survivor_id,
            "merged_from": absorbed_id,
            "merged_at": now,
            "qbo_sync_token": None,
            "active": None,
            "qbo_deleted": False,
        }
        if survivor is not None:
            fields.update(_facts_fields(survivor, now))
        moved: list[str] = []
        for local_id in sorted(candidates):
            result = await self._mappings.update_one(
                {"_id": local_id, "realm_id": realm_id, "qbo_customer_id": absorbed_id},
                {"$set": fields},
            )
            if result.matched_count:
                moved.append(local_id)
        return moved

    async def merged_into(self, realm_id: str, survivor_id: str, absorbed_id: str) -> list[str]:
        """Local customers that follow `survivor_id` because of the merge of `absorbed_id`."""
        cursor = self._mappings.find(
            {"realm_id": realm_id, "qbo_customer_id": survivor_id, "merged_from": absorbed_id},
            {"_id": 1},
        )
        return sorted([d["_id"] async for d in cursor])

    async def local_ids(
        self, realm_id: str, qbo_customer_ids: Iterable[str]
    ) -> dict[str, str | None]:
        ids = sorted(set(qbo_customer_ids))
        found: dict[str, str | None] = dict.fromkeys(ids)
        if not ids:
            return found
        # A page of a refresh names one customer: an equality, which FerretDB hands to its
        # backend (an `$in` it does not); the realm's equality narrows the other case.
        wanted = ids[0] if len(ids) == 1 else {"$in": ids}
        cursor = self._mappings.find(
            {"realm_id": realm_id, "qbo_customer_id": wanted},
            {"qbo_customer_id": 1, "local_customer_id": 1},
        )
        async for doc in cursor:
            # Several local customers may share one QBO customer; the first (by id) owns the
            # invoices in events. Deterministic, so redeliveries agree.
            held = found.get(doc["qbo_customer_id"])
            if held is None or doc["local_customer_id"] < held:
                found[doc["qbo_customer_id"]] = doc["local_customer_id"]
        return found

    async def synced(self, local_customer_id: str, command_id: str) -> None:
        await self._mappings.update_one(
            {"_id": local_customer_id},
            {"$set": {"last_synced_at": self._clock(), "last_sync_command_id": command_id}},
        )


FINISHED = [
    s.value for s in (CommandStatus.SUCCEEDED, CommandStatus.FAILED, CommandStatus.NEEDS_REAUTH)
]
# Matches a command record that has not finished yet (or none at all, with an upsert).
_UNFINISHED: Document = {"status": {"$nin": FINISHED}}


@dataclass(frozen=True)
class Attempt:
    """One attempt of a command, as recorded when it started."""

    number: int
    started_at: datetime
    ran_before: bool = False


class CommandLog:
    """Status of every command, queryable by command id (docs/data-model.md).

    Statuses only move forward: queued -> running -> succeeded | failed | needs_reauth. Every
    write is filtered on "not finished yet"; when the record has finished, the upsert would
    insert a second document with the same `_id` and the server refuses it, so a late or
    duplicate write changes nothing. The terminal write repeats the attempt's `attempts` and
    `started_at`: FerretDB v1 applies an update by rewriting the whole document it read, so a
    concurrent write could otherwise put back a copy without them. Only the sync worker
    updates these records; the api inserts the `queued` one and never touches it again.
    """

    def __init__(self, db: AsyncDatabase[Document], clock: Clock) -> None:
        self._commands = db["commands"]
        self._clock = clock

    async def running(self, command: Command, attempt: int) -> Attempt | None:
        """Record that an attempt starts; None when the command has already finished.

        The answer also says whether an attempt of it ever started before (`ran_before`): only
        such an attempt can have left outbox entries open, so a command that never ran has no
        events owed and needs no look into the outbox (one command less per webhook change).
        """
        body = command.to_dict()
        started_at = self._clock()
        try:
            before = await self._commands.find_one_and_update(
                {"_id": command.command_id, **_UNFINISHED},
                {
                    "$set": {
                        "type": command.type,
                        "realm_id": command.realm_id,
                        "local_customer_id": body.get("local_customer_id"),
                        "issued_at": command.issued_at,
                        "issued_by": command.issued_by,
                        "status": CommandStatus.RUNNING.value,
                        "started_at": started_at,
                        "reason": None,
                    },
                    # A redelivery starts counting again; the record keeps the highest count.
                    "$max": {"attempts": attempt},
                },
                # No projection: FerretDB v1 does not implement one in findAndModify.
                upsert=True,
                return_document=ReturnDocument.BEFORE,
            )
        except DuplicateKeyError:
            return None
        ran_before = before is not None and before.get("started_at") is not None
        return Attempt(attempt, started_at, ran_before)

    async def finished(
        self,
        command_id: str,
        status: CommandStatus,
        reason: str | None = None,
        result: dict[str, Any] | None = None,
        attempt: Attempt | None = None,
    ) -> bool:
        """Record the outcome; False when the command had already finished (the first wins)."""
        update: Document = {"status": status.value, "finished_at": self._clock(), "reason": reason}
        if result is not None:
            update["result"] = result
        if attempt is not None:
            update["started_at"] = attempt.started_at
        changes: Document = {"$set": update}
        if attempt is not None:
            changes["$max"] = {"attempts": attempt.number}
        try:
            await self._commands.update_one(
                {"_id": command_id, **_UNFINISHED}, changes, upsert=True
            )
        except DuplicateKeyError:
            return False
        return True

    async def throttled(self, command_id: str, resumes_at: datetime, reason: str) -> None:
        """Deferred, not failed: the realm is paused until `resumes_at`, then it runs again.
        Like every status write, it never moves a finished command back."""
        try:
            await self._commands.update_one(
                {"_id": command_id, **_UNFINISHED},
                {
                    "$set": {
                        "status": CommandStatus.THROTTLED.value,
                        "resumes_at": resumes_at,
                        "reason": reason,
                    }
                },
                upsert=True,
            )
        except DuplicateKeyError:
            pass  # finished meanwhile (another worker after a partition move): it stays so

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

    async def oldest(self) -> datetime | None:
        """When the oldest open entry was opened (the outbox age in `/metrics`), or None."""
        doc = await self._outbox.find_one({}, {"created_at": 1}, sort=[("created_at", 1)])
        return doc["created_at"] if doc is not None else None


@dataclass(frozen=True)
class InvoiceRejection:
    """An invoice QBO sent that cannot be stored faithfully, and why (kept for an operator)."""

    realm_id: str
    invoice_id: str | None  # None when QBO's object has no usable Id
    reason: str
    raw_json: str  # Intuit's object as received (ASCII-escaped, so any text can be stored)

    @property
    def key(self) -> str:
        if self.invoice_id is not None:
            return f"{self.realm_id}:{self.invoice_id}"
        digest = hashlib.sha256(self.raw_json.encode()).hexdigest()[:16]
        return f"{self.realm_id}:unidentified:{digest}"


class RejectedInvoices:
    """`rejected_invoices`: one document per invoice that could not be stored (docs/design.md
    invariant 9). The rest of its page is stored, and the CDC checkpoint still moves, so one odd
    invoice no longer holds back a whole company; this collection is where it stays visible
    until QuickBooks is fixed. Storing a later version of the invoice removes its entry.
    """

    def __init__(
        self,
        db: AsyncDatabase[Document],
        clock: Clock,
        clean_for: float = CLEAN_REALM_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rejected = db["rejected_invoices"]
        self._clock = clock
        self.counts: Counter[str] = Counter()  # rejections seen by this process, per realm
        # Per realm: when it was last found with (False) or without (True) entries.
        self._clean: dict[str, tuple[float, bool]] = {}
        self._clean_for = clean_for
        self._monotonic = monotonic

    async def record(
        self, rejections: Sequence[InvoiceRejection], source: str, command_id: str | None
    ) -> None:
        now = self._clock()
        for rejection in rejections:
            self._clean[rejection.realm_id] = (self._monotonic(), False)
            self.counts[rejection.realm_id] += 1
            log.error(
                "invoice.rejected",
                realm_id=rejection.realm_id,
                invoice_id=rejection.invoice_id,
                reason=rejection.reason,
                source=source,
                command_id=command_id,
            )
            await self._rejected.update_one(
                {"_id": rejection.key},
                {
                    "$set": {
                        "realm_id": rejection.realm_id,
                        "invoice_id": rejection.invoice_id,
                        "reason": rejection.reason[:_MAX_REASON],
                        "raw_json": rejection.raw_json[:_MAX_RAW],
                        "raw_truncated": len(rejection.raw_json) > _MAX_RAW,
                        "source": source,
                        "command_id": command_id,
                        "last_seen_at": now,
                    },
                    "$setOnInsert": {"first_seen_at": now},
                    "$inc": {"times_seen": 1},
                },
                upsert=True,
            )

    async def resolve(self, keys: Sequence[str]) -> None:
        """Forget the entries of invoices that have now been stored.

        Nearly every realm has no entry at all, so a realm found without any is remembered for
        `clean_for` seconds and its writes clear nothing meanwhile (one count per realm and
        period instead of one delete per page). Entries are recorded by the realm's owner,
        which forgets the realm's clean state when it records one; an entry recorded by
        another process during a partition move can outlive its invoice's next store by that
        long (docs/design.md invariant 9).
        """
        if not keys:
            return
        now = self._monotonic()
        pending: list[str] = []
        for realm_id in sorted({key.split(":", 1)[0] for key in keys}):
            known = self._clean.get(realm_id)
            if known is None or now - known[0] >= self._clean_for:
                none = await self._rejected.find_one({"realm_id": realm_id}, {"_id": 1}) is None
                known = self._clean[realm_id] = (now, none)
            if not known[1]:
                pending.extend(k for k in keys if k.split(":", 1)[0] == realm_id)
        if pending:
            await self._rejected.delete_many({"_id": {"$in": pending}})

    async def list(self, realm_id: str | None = None, limit: int = 100) -> list[Document]:
        query: Document = {"realm_id": realm_id} if realm_id is not None else {}
        cursor = self._rejected.find(query).sort("last_seen_at", -1).limit(limit)
        return [d async for d in cursor]
