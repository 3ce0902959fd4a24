"""MongoDB access of the api: the read model it owns, and what it reads from the sync service.

Everything here works on FerretDB v1 as well as MongoDB: single-document writes with guard
filters, no transactions, no `$expr`, no aggregation beyond plain finds.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.api.listing import InvoiceListQuery, combine, status_filter
from services.api.readmodel import Totals
from services.common.mongo import Document, IndexSpec, ensure_indexes, find_by_ids

READ_INVOICES = "read_invoices"
# One document per customer (`<realm_id>:<qbo_customer_id>`) whose `revision` changes after
# every projected batch that touched its invoices: what cached listings are validated against.
READ_CUSTOMERS = "read_customers"
INDEXES = [
    IndexSpec(READ_INVOICES, [("realm_id", 1), ("qbo_customer_id", 1)], "realm_customer"),
    IndexSpec(READ_INVOICES, [("local_customer_id", 1)], "local_customer"),
]

# The only connection fields the api may read: never the sealed tokens (docs/data-model.md).
CONNECTION_FIELDS = {
    "_id": 1,
    "status": 1,
    "user_id": 1,
    "reauth_reason": 1,
    "refresh_token_hard_expires_at": 1,
    "updated_at": 1,
}
_TOTALS_FIELDS = {"status": 1, "deleted": 1, "due_date": 1, "currency": 1}
_TOTALS_FIELDS |= {"total_amt": 1, "balance": 1, "total_amt_micros": 1, "balance_micros": 1}


class Applied(StrEnum):
    STORED = "stored"
    STALE = "stale"  # the read model already holds this version or a newer one


FIRST_VERSION = 1  # the write model's version of an invoice's first stored copy


class ReadInvoices:
    """The `read_invoices` collection, written only by the projector."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._collection = db[READ_INVOICES]
        self._customers = db[READ_CUSTOMERS]
        self._db = db

    async def prepare(self) -> None:
        await ensure_indexes(self._db, INDEXES)

    async def apply(self, doc: Document) -> Applied:
        """Store `doc` unless the stored version is the same or newer (order-safe, idempotent).

        The filter matches only an older version; when a same-or-newer one is stored the upsert
        tries to insert a second document with the same `_id` and the server refuses it, so a
        stale event changes nothing in a single round trip, without `$expr` or transactions.
        """
        fields = {k: v for k, v in doc.items() if k != "_id"}
        try:
            await self._collection.update_one(
                {"_id": doc["_id"], "version": {"$lt": doc["version"]}},
                {"$set": fields},
                upsert=True,
            )
        except DuplicateKeyError:
            return Applied.STALE
        return Applied.STORED

    async def apply_many(
        self, docs: Sequence[Document], time_budget: float | None = None
    ) -> list[Applied | None]:
        """Store each invoice's newest version among `docs` unless the stored one is the same or
        newer; answer what happened to each doc, in order (a doc superseded within `docs` is
        STALE). Idempotent and order-safe like `apply`, at a fraction of its cost per doc.

        First versions are inserted without a read (nothing older can be stored); a later one
        is first written over its predecessor (`_advance`); for those that found something else,
        one read of the stored versions, one `insert_many` for the invoices not stored yet, and
        a compare-and-set only for those whose stored version is older (on FerretDB v1 a `$lt`
        guard scans the collection; equalities, the insert and the read do not).
        Once `time_budget` seconds have gone by, no more updates are started: the docs from the
        first one not done onwards are left unwritten and answered None, for the caller to apply
        later (so a batch need not outlast Kafka's max.poll.interval).
        """
        started = time.monotonic()
        newest: dict[str, int] = {}  # key -> index in docs of its newest version
        for i, doc in enumerate(docs):
            held = newest.get(doc["_id"])
            if held is None or doc["version"] > docs[held]["version"]:
                newest[doc["_id"]] = i
        applied: list[Applied | None] = [Applied.STALE] * len(docs)
        # An invoice's first version (the write model numbers them from 1) can find nothing
        # older in the read model, only nothing, the same or newer: it is inserted without
        # reading first (invariant 3). On FerretDB that read is one lookup per key, most of the
        # cost of projecting a refresh's new invoices.
        first = {k for k, i in newest.items() if docs[i]["version"] == FIRST_VERSION}
        cut = len(docs)  # the docs from here on are left for later

        def out_of_time(n: int) -> bool:
            # At least one update per loop, so a batch always makes progress.
            return bool(n) and time_budget is not None and time.monotonic() - started > time_budget

        # A later version nearly always follows the one stored just before it (the write model
        # numbers versions one by one, and an invoice's events come in order): it is first
        # tried as a compare-and-set on that predecessor, one round trip instead of a read and
        # a write. Only those that find something else stored are read.
        later = sorted(i for k, i in newest.items() if k not in first)
        replaced: list[Document] = []
        for n, i in enumerate(later):
            if out_of_time(n):
                cut = i
                break
            before = await self._advance(docs[i])
            if before is not None:
                applied[i] = Applied.STORED
                replaced.append(before)
        unsure = [i for i in later if i < cut and applied[i] is not Applied.STORED]
        stored_docs = await self.held([docs[i]["_id"] for i in unsure])
        stored = {doc["_id"]: int(doc["version"]) for doc in stored_docs}
        older = [i for i in unsure if docs[i]["_id"] in stored]
        older = [i for i in older if stored[docs[i]["_id"]] < docs[i]["version"]]
        for n, i in enumerate(older):
            if out_of_time(n):
                cut = i
                break
            # (A later version stored by `_advance` past this cut is left for later all the
            # same: read again, it counts as stale.)
            applied[i] = await self._replace(docs[i], stored[docs[i]["_id"]])
        inserts = [i for i in [*unsure, *(newest[k] for k in first)] if i < cut]
        inserts = [i for i in inserts if docs[i]["_id"] not in stored]
        if inserts:
            try:
                await self._collection.insert_many([docs[i] for i in inserts], ordered=False)
            except (BulkWriteError, DuplicateKeyError, KeyError):
                # Someone else (a rebuild, the partition's previous owner) inserted some of these
                # meanwhile, or the batch is delivered again. FerretDB reports bulk write errors
                # with wrong indexes (or unparsable ones: KeyError), so re-check every insert of
                # the batch against what is stored.
                await self._settle(docs, inserts, applied, first)
            else:
                for i in inserts:
                    applied[i] = Applied.STORED
        applied[cut:] = [None] * (len(docs) - cut)
        # Every customer of the batch gets a new revision, written or stale alike (a stale doc
        # may be a redelivery after a crash that wrote it but never stamped its customer), and
        # so does the customer an invoice was moved away from.
        await self._touch([*(docs[i] for i in newest.values() if i < cut), *stored_docs, *replaced])
        return applied

    async def _touch(self, docs: Iterable[Document]) -> None:
        customers = sorted({key for doc in docs if (key := customer_key(doc)) is not None})
        if customers:
            revision = uuid.uuid4().hex
            await self._customers.bulk_write(
                [
                    UpdateOne({"_id": c}, {"$set": {"revision": revision}}, upsert=True)
                    for c in customers
                ],
                ordered=False,
            )

    async def revision(self, customer: Document) -> str | None:
        """The customer's current revision; None when the projector never stamped it."""
        key = customer_key(customer)
        doc = await self._customers.find_one({"_id": key}) if key is not None else None
        return str(doc["revision"]) if doc is not None else None

    async def _advance(self, doc: Document) -> Document | None:
        """Store `doc` over its predecessor (`version` - 1) if that is what is stored: a
        compare-and-set on equalities, which FerretDB hands to its backend. Answers the document
        replaced (its customer may be another: the touch needs it), or None."""
        fields = {k: v for k, v in doc.items() if k != "_id"}
        # No projection: FerretDB v1 does not implement one in findAndModify.
        return await self._collection.find_one_and_update(
            {"_id": doc["_id"], "version": doc["version"] - 1}, {"$set": fields}
        )

    async def _replace(self, doc: Document, held: int) -> Applied:
        """Store `doc` over the version just read as stored: a compare-and-set on equalities,
        which FerretDB hands to its backend (the `$lt` guard of `apply` it cannot). If that
        version changed meanwhile, `apply` decides against whatever is stored now."""
        fields = {k: v for k, v in doc.items() if k != "_id"}
        result = await self._collection.update_one(
            {"_id": doc["_id"], "version": held}, {"$set": fields}
        )
        return Applied.STORED if result.matched_count == 1 else await self.apply(doc)

    async def _settle(
        self,
        docs: Sequence[Document],
        indexes: list[int],
        applied: list[Applied | None],
        unread: Collection[str],
    ) -> None:
        """After a refused `insert_many`: what each insert of `indexes` amounts to. The keys of
        `unread` (first versions) were not read before the insert, so one found stored may be
        this batch's copy or one that was there before (a redelivered batch): it counts as
        stale. Either way that version is stored; only the metric may undercount `stored`."""
        stored = await self.versions([docs[i]["_id"] for i in indexes])
        for i in indexes:
            held = stored.get(docs[i]["_id"])
            if held is not None and docs[i]["_id"] in unread:
                continue  # stale (the same version, or a newer one)
            if held == docs[i]["version"]:
                # This version is stored: by our insert or, just as well, by another projector.
                applied[i] = Applied.STORED
            elif held is None or held < docs[i]["version"]:
                applied[i] = await self.apply(docs[i])

    async def without_sort_keys(self) -> int:
        """Documents written before amounts had exact text and sort keys (integer micros only),
        or before the `partially_paid` flag. They are read correctly, but sort among the nulls
        by total or balance (or escape the partially_paid filter) until the read model is
        rebuilt (`python -m services.api.projector --rebuild`); nothing rewrites them behind
        the operator's back."""
        return await self._collection.count_documents(
            {
                "$or": [
                    {"total_amt_key": {"$exists": False}},
                    # Projected before `partially_paid` was stored: shown right, but missed by
                    # the partially_paid filter until the rebuild.
                    {"partially_paid": {"$exists": False}},
                ]
            }
        )

    async def held(self, keys: Sequence[str]) -> list[Document]:
        """The stored version and customer of each of `keys` that is stored."""
        return await find_by_ids(
            self._collection, keys, {"version": 1, "realm_id": 1, "qbo_customer_id": 1}
        )

    async def versions(self, keys: Sequence[str]) -> dict[str, int]:
        """The stored version of each of `keys` that is stored."""
        return {doc["_id"]: int(doc["version"]) for doc in await self.held(keys)}

    async def page(
        self, customer: Document, query: InvoiceListQuery, today: date
    ) -> tuple[list[Document], bool]:
        """One page of a customer's invoices and whether more follow."""
        keyset = query.sort.after(query.cursor.value, query.cursor.last_id) if query.cursor else {}
        cursor = (
            self._collection.find(combine(customer, status_filter(query.status, today), keyset))
            .sort(query.sort.mongo())
            .skip(query.offset)
            .limit(query.limit + 1)
        )
        rows = await cursor.to_list()
        return rows[: query.limit], len(rows) > query.limit

    async def totals(self, customer: Document, status: str, today: date) -> Totals:
        """Exact sums over every matching invoice, added up here in integers: FerretDB v1 has no
        conditional accumulators for the overdue part, and a customer's invoices are few."""
        totals = Totals()
        cursor = self._collection.find(
            combine(customer, status_filter(status, today)), _TOTALS_FIELDS
        )
        async for doc in cursor:
            totals.add(doc, today)
        return totals

    async def get(self, key: str) -> Document | None:
        return await self._collection.find_one({"_id": key})

    async def drop(self) -> None:
        await self._collection.drop()
        await self._customers.drop()


def customer_key(doc: Document) -> str | None:
    """`<realm_id>:<qbo_customer_id>` of an invoice or a customer filter, if it names both."""
    realm, customer = doc.get("realm_id"), doc.get("qbo_customer_id")
    if isinstance(realm, str) and isinstance(customer, str):
        return f"{realm}:{customer}"
    return None


class SyncRecords:
    """Read-only views of collections the sync service writes."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._mappings = db["customer_mappings"]
        self._connections = db["connections"]

    async def mapping(self, local_customer_id: str) -> Document | None:
        return await self._mappings.find_one({"_id": local_customer_id})

    async def connection(self, realm_id: str) -> Document | None:
        return await self._connections.find_one({"_id": realm_id}, CONNECTION_FIELDS)


@dataclass(frozen=True)
class QueuedCommand:
    doc: Document
    created: bool  # False when an earlier request with the same idempotency key made it


class CommandRecords:
    """`commands` status documents: the api inserts `queued` before it publishes a command and
    never writes it again; the sync worker updates it (running, succeeded, failed, needs_reauth).
    One writer after the insert, because FerretDB v1 applies an update by rewriting the whole
    document it read: two writers of one record can undo each other's fields."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._commands = db["commands"]

    async def queue(self, doc: Document) -> QueuedCommand:
        """Insert a queued command, or return the one already stored under the same id."""
        try:
            await self._commands.insert_one(doc)
        except DuplicateKeyError:
            existing = await self._commands.find_one({"_id": doc["_id"]})
            if existing is not None:
                return QueuedCommand(existing, created=False)
            raise  # inserted by someone and removed since: let the caller answer 5xx/retry
        return QueuedCommand(doc, created=True)

    async def get(self, command_id: str) -> Document | None:
        return await self._commands.find_one({"_id": command_id})


class Outcome(StrEnum):
    PUBLISHED = "published"
    FAILED = "failed"


@dataclass(frozen=True)
class Publication:
    """One attempt to publish a command; `outcome` is None while it is under way."""

    command_id: str
    number: int
    claimed_at: datetime
    outcome: Outcome | None
    reason: str | None = None


class CommandPublications:
    """`command_publications`: who publishes a command, one document per attempt.

    Attempt n of a command is the document `<command_id>#<n>`. Inserting it is the claim: the
    server accepts one insert of an `_id`, so of any number of concurrent requests exactly one
    publishes (a guarded update would not do: FerretDB v1 lets several guarded updates of one
    document succeed at once). Only the claimant writes its attempt's outcome afterwards.
    """

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._publications = db["command_publications"]

    async def latest(self, command_id: str) -> Publication | None:
        """The newest attempt (attempts are few: one, plus one per failed or abandoned one)."""
        latest = None
        number = 0
        while doc := await self._publications.find_one({"_id": f"{command_id}#{number}"}):
            outcome = doc.get("outcome")
            latest = Publication(
                command_id,
                number,
                doc["claimed_at"],
                Outcome(outcome) if outcome else None,
                doc.get("reason"),
            )
            number += 1
        return latest

    async def claim(self, command_id: str, number: int, at: datetime) -> bool:
        """Take attempt `number`; False when another request took it first."""
        try:
            await self._publications.insert_one(
                {
                    "_id": f"{command_id}#{number}",
                    "command_id": command_id,
                    "number": number,
                    "claimed_at": at,
                    "outcome": None,
                }
            )
        except DuplicateKeyError:
            return False
        return True

    async def settle(
        self,
        command_id: str,
        number: int,
        outcome: Outcome,
        at: datetime,
        reason: str | None = None,
    ) -> None:
        await self._publications.update_one(
            {"_id": f"{command_id}#{number}"},
            {"$set": {"outcome": outcome.value, "settled_at": at, "reason": reason}},
        )
