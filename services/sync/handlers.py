"""Command handlers: plain functions taking a command and the adapters they need.

Every handler is idempotent: a redelivered command stores nothing new (versions are compared)
and re-emits only what is still pending in the outbox.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import structlog
from bson.errors import InvalidDocument

from services.common import jsoncodec
from services.common.messages import EntityChange, MapCustomer, RefreshInvoices, SyncChanges
from services.common.mongo import Document
from services.sync.overlap import Overlapped, read_ahead
from services.sync.ports import (
    Checkpoints,
    Connections,
    EventPublisher,
    Invoices,
    Mappings,
    OutboxEntries,
    QboReader,
    Rejections,
)
from services.sync.quickbooks.mapping import (
    CustomerFacts,
    InvoiceRecord,
    UnmappableCustomer,
    UnmappableInvoice,
    customer_facts,
    deleted_stub,
    invoice_record,
    parse_qbo_datetime,
)
from services.sync.quickbooks.query import Select
from services.sync.store import ApplyResult, CustomerMapping, InvoiceRejection, StoredVersions
from services.sync.turns import in_slices

log = structlog.get_logger(__name__)

PAGE_SIZE = 1000  # Intuit's maximum MAXRESULTS
IDS_PER_QUERY = 200  # keeps `Id IN (…)` queries well inside URL limits
# A refresh's pages being stored and emitted at once (services/sync/overlap.py); across realms
# `Dependencies.page_writes` bounds them.
PAGES_WRITTEN_AT_ONCE = 2
CDC_MAX_LOOKBACK = timedelta(days=30)  # Intuit refuses older changedSince values
CDC_FULL = 1000  # Intuit returns at most 1000 objects per entity per CDC call
CDC_ENTITIES = ("Invoice", "Customer")
_QBO_ID = re.compile(r"[0-9]{1,32}")
# What the database may refuse about one document (BSON cannot encode it); anything else, such
# as a lost connection, fails the command and is retried as before.
UNSTORABLE: tuple[type[Exception], ...] = (InvalidDocument, OverflowError, UnicodeEncodeError)


def _objects(answer: Any, entity: str) -> list[Any]:
    found = answer.get(entity, []) if isinstance(answer, dict) else []
    return found if isinstance(found, list) else []


class CommandRejected(Exception):
    """The command cannot succeed as sent (not a transient failure). `reason` is stored."""

    def __init__(
        self, reason: str, details: dict[str, Any] | None = None, code: str = "rejected"
    ) -> None:
        self.reason = reason
        self.details = details or {}
        self.code = code
        super().__init__(reason)


@dataclass
class Dependencies:
    """What the handlers need, as ports (`services/sync/ports.py`): the real adapters are
    wired in `app.py`, in-memory fakes in unit tests."""

    qbo: QboReader
    vault: Connections
    invoices: Invoices
    mappings: Mappings
    events: EventPublisher
    outbox: OutboxEntries
    checkpoints: Checkpoints
    rejected: Rejections
    clock: Callable[[], datetime]
    cdc_overlap: timedelta = field(default=timedelta(seconds=60))
    # Listing pages (refreshes, CDC) written and emitted at once across realms; a webhook's
    # few invoices never wait for one (docs/design.md invariant 8).
    page_writes: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(4))


def _invoice_id(obj: Any) -> str | None:
    value = obj.get("Id") if isinstance(obj, dict) else None
    return value if isinstance(value, str) and _QBO_ID.fullmatch(value) else None


def _raw(obj: Any) -> str:
    try:
        text = jsoncodec.dumps(obj)
    except (TypeError, ValueError):
        text = repr(obj)
    # A lone surrogate cannot be stored in BSON; escaped, it is still the same JSON.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass
class Page:
    """One page of QBO invoices: the records to store, and those that cannot be stored."""

    records: list[InvoiceRecord] = field(default_factory=list)
    rejected: list[InvoiceRejection] = field(default_factory=list)


async def _mapped(realm_id: str, objects: Sequence[Any]) -> Page:
    """The records of a page of QBO invoices, mapped a slice at a time in the page's turn at
    the event loop (services/sync/turns.py)."""
    page = Page()
    for part in await in_slices(objects, partial(_records, realm_id)):
        page.records.extend(part.records)
        page.rejected.extend(part.rejected)
    return page


def _records(realm_id: str, objects: Sequence[Any]) -> Page:
    page = Page()
    for obj in objects:
        try:
            page.records.append(invoice_record(realm_id, obj))
        except Exception as exc:
            # One odd invoice must not block the customer's or the company's others (docs/design.md
            # invariant 9): it is recorded with the reason and its JSON, for a human.
            reason = str(exc) if isinstance(exc, UnmappableInvoice) else f"{type(exc).__name__}"
            page.rejected.append(
                InvoiceRejection(realm_id, _invoice_id(obj), reason or "unmappable", _raw(obj))
            )
    return page


async def _store_and_emit(
    deps: Dependencies,
    realm_id: str,
    page: Page,
    command_id: str | None,
    source: str,
    known: StoredVersions | None = None,
) -> tuple[int, int]:
    if page.rejected:
        await deps.rejected.record(page.rejected, source, command_id)
    records = page.records
    if not records:
        return 0, 0
    customers = {r.qbo_customer_id for r in records if r.qbo_customer_id}
    # Side by side where nothing orders them: the outbox entry only has to be written before
    # the invoices (invariant 4), and a page's round trips are what a webhook waits for while
    # other realms load the database. An entry left open by a failed lookup is the sweep's.
    local_ids, entry = await asyncio.gather(
        deps.mappings.local_ids(realm_id, customers),
        deps.outbox.open(command_id, [r.key for r in records]),
    )
    applied = await _apply_isolating(deps, records, local_ids, known, source, command_id)
    emitted = await deps.events.publish(applied.written)
    await asyncio.gather(
        deps.outbox.close(entry), deps.rejected.resolve([d["_id"] for d in applied.written])
    )
    return applied.stored, emitted


async def _apply_isolating(
    deps: Dependencies,
    records: list[InvoiceRecord],
    local_ids: dict[str, str | None],
    known: StoredVersions | None,
    source: str,
    command_id: str | None,
) -> ApplyResult:
    """Store the page; should the database refuse one of its documents, store the others one
    by one and record the refused ones, rather than fail the page for ever."""
    try:
        return await deps.invoices.apply(records, local_ids, known)
    except UNSTORABLE as exc:
        log.warning("invoices.page_refused", records=len(records), error=repr(exc)[:300])
    written: list[Document] = []
    refused: list[InvoiceRejection] = []
    for record in records:
        try:
            written.extend((await deps.invoices.apply([record], local_ids, known)).written)
        except UNSTORABLE as exc:
            reason = f"the database refused it: {type(exc).__name__}: {exc}"[:1000]
            refused.append(
                InvoiceRejection(record.realm_id, record.invoice_id, reason, record.raw_json)
            )
    await deps.rejected.record(refused, source, command_id)
    return ApplyResult(len(records), written)


async def refresh_invoices(
    command: RefreshInvoices, deps: Dependencies, owed: bool = True
) -> dict[str, int]:
    """The spec's fetchInvoicesForCustomer: every invoice of one mapped customer, page by page.

    `owed` False: no earlier attempt of this command started, so it left no events owed.
    """
    mapping = await deps.mappings.get(command.local_customer_id)
    if mapping is None:
        raise CommandRejected(
            f"customer {command.local_customer_id} is not mapped to QBO", code="not_mapped"
        )
    if mapping.realm_id != command.realm_id:
        raise CommandRejected(
            f"customer {command.local_customer_id} is mapped in realm {mapping.realm_id}, "
            f"not {command.realm_id}"
        )
    # Precondition: a usable connection (refreshes an expired access token first; raises
    # ReauthRequired or NotConnected otherwise).
    await deps.vault.access_token(command.realm_id)

    # Events owed by an earlier attempt of this command that died between write and produce.
    emitted = await deps.events.flush(command_id=command.command_id) if owed else 0
    counts = await _sync_customer_invoices(
        deps, command.realm_id, mapping.qbo_customer_id, command.command_id, "refresh"
    )
    # The customer's own SyncToken, Active and DisplayName, read at every refresh.
    facts = await _read_customers(deps, command.realm_id, [mapping.qbo_customer_id])
    await deps.mappings.observe(command.realm_id, facts.values())
    await deps.mappings.synced(command.local_customer_id, command.command_id)
    result = {
        "fetched": counts.fetched,
        "stored": counts.stored,
        "events": emitted + counts.events,
    }
    if counts.reconciled:
        result["reconciled"] = counts.reconciled
    log.info(
        "refresh.done",
        realm_id=command.realm_id,
        local_customer_id=command.local_customer_id,
        **result,
    )
    return result


@dataclass
class Counts:
    fetched: int = 0
    stored: int = 0
    events: int = 0
    reconciled: int = 0  # stored keys QBO's listing no longer returned, re-read by Id

    def add(self, stored: int, events: int) -> None:
        self.stored += stored
        self.events += events


async def _sync_customer_invoices(
    deps: Dependencies, realm_id: str, qbo_customer_id: str, command_id: str, source: str
) -> Counts:
    """Every invoice of one QBO customer, page by page; then the store equals QBO for it.

    Invoices stored for the customer that the listing did not return are re-read by Id
    (docs/design.md invariant 12): gone from QBO -> deletion tombstone; now another
    customer's -> stored as that version. Nothing missing, no extra QBO call.
    """
    select = Select("Invoice").where("CustomerRef", "=", qbo_customer_id).order_by("Id")
    # One read of what is stored for this customer, not one per page (see StoredVersions).
    known = await deps.invoices.customer_versions(realm_id, qbo_customer_id)
    stored_before = known.live_keys()
    returned: set[str] = set()
    counts = Counts()
    pages = read_ahead(deps.qbo.query_pages(realm_id, select, page_size=PAGE_SIZE))
    writes: Overlapped[tuple[int, int]] = Overlapped(PAGES_WRITTEN_AT_ONCE)
    try:
        async for objects in pages:
            counts.fetched += len(objects)
            page = await _mapped(realm_id, objects)
            returned.update(r.key for r in page.records)
            returned.update(r.key for r in page.rejected if r.invoice_id is not None)
            await writes.submit(_write_page(deps, realm_id, page, command_id, source, known))
        for stored, emitted in await writes.drain():
            counts.add(stored, emitted)
    except BaseException:
        await writes.cancel()  # an interrupted page's open outbox entry is flushed later
        raise
    missing = sorted(stored_before - returned)
    if missing:
        counts.reconciled = len(missing)
        counts.add(*await _reconcile(deps, realm_id, missing, command_id, source))
    return counts


async def _write_page(
    deps: Dependencies,
    realm_id: str,
    page: Page,
    command_id: str,
    source: str,
    known: StoredVersions,
) -> tuple[int, int]:
    async with deps.page_writes:
        return await _store_and_emit(deps, realm_id, page, command_id, source, known)


async def _reconcile(
    deps: Dependencies, realm_id: str, keys: Sequence[str], command_id: str, source: str
) -> tuple[int, int]:
    """Re-read stored invoices by Id (`Id IN (...)`, batched) and store what QBO holds now: an
    invoice it no longer has becomes a deletion tombstone (the stub keeps its customer), one it
    moved is stored as its new version, which names the new customer."""
    stored = emitted = 0
    ids = [key.split(":", 1)[1] for key in keys]
    for start in range(0, len(ids), IDS_PER_QUERY):
        batch = ids[start : start + IDS_PER_QUERY]
        found = await deps.qbo.query(
            realm_id,
            Select("Invoice").where("Id", "IN", batch).order_by("Id").render(max_results=PAGE_SIZE),
        )
        page = await _mapped(realm_id, _objects(found, "Invoice"))
        present = {r.invoice_id for r in page.records} | {
            r.invoice_id for r in page.rejected if r.invoice_id is not None
        }
        now = deps.clock()
        gone = [i for i in batch if i not in present]
        if gone:
            log.info("reconcile.deleted", realm_id=realm_id, invoice_ids=gone[:20], count=len(gone))
        page.records.extend(deleted_stub(realm_id, invoice_id, now) for invoice_id in gone)
        s, e = await _store_and_emit(deps, realm_id, page, command_id, source)
        stored, emitted = stored + s, emitted + e
    return stored, emitted


async def _read_customers(
    deps: Dependencies, realm_id: str, ids: Sequence[str]
) -> dict[str, CustomerFacts]:
    """The named customers as QBO holds them now, inactive ones included (a Customer query
    without a condition on Active returns active customers only)."""
    facts: dict[str, CustomerFacts] = {}
    wanted = sorted(set(ids))
    for start in range(0, len(wanted), IDS_PER_QUERY):
        batch = wanted[start : start + IDS_PER_QUERY]
        select = Select("Customer").where("Active", "IN", [True, False])
        select = (
            select.where("Id", "=", batch[0])
            if len(batch) == 1
            else select.where("Id", "IN", batch)
        )
        found = await deps.qbo.query(realm_id, select.order_by("Id").render(max_results=PAGE_SIZE))
        facts.update(_customer_facts(realm_id, _objects(found, "Customer")))
    return facts


def _customer_facts(realm_id: str, objects: Sequence[Any]) -> dict[str, CustomerFacts]:
    facts: dict[str, CustomerFacts] = {}
    for obj in objects:
        try:
            read = customer_facts(obj)
        except UnmappableCustomer as exc:
            # One odd customer must not stop the others or the invoices (invariant 9).
            log.error("customer.unreadable", realm_id=realm_id, reason=str(exc)[:300])
            continue
        facts[read.qbo_customer_id] = read
    return facts


async def map_customer(command: MapCustomer, deps: Dependencies) -> CustomerMapping:
    """Find the QBO customer by id, exact DisplayName, or a search; never guess."""
    realm_id = command.realm_id
    await deps.vault.access_token(realm_id)
    if command.qbo_customer_id:
        found = await deps.qbo.query(
            realm_id, Select("Customer").where("Id", "=", command.qbo_customer_id).render()
        )
        customers = found.get("Customer", [])
        if not customers:
            raise CommandRejected(
                f"QBO customer {command.qbo_customer_id} does not exist", code="not_found"
            )
        match = customers[0]
    else:
        name = command.display_name or ""  # the schema requires a name when there is no id
        exact = await deps.qbo.query(
            realm_id, Select("Customer").where("DisplayName", "=", name).render()
        )
        matches = exact.get("Customer", [])
        if len(matches) > 1:
            raise CommandRejected(
                "several QBO customers have this name", _candidates(matches), code="ambiguous"
            )
        if not matches:
            words = [w for w in name.replace("%", " ").split() if len(w) > 1]
            term = max(words, key=len) if words else name
            search = await deps.qbo.query(
                realm_id,
                Select("Customer")
                .where("DisplayName", "LIKE", f"%{term}%")
                .order_by("DisplayName")
                .render(max_results=10),
            )
            raise CommandRejected(
                f"no QBO customer is named {name!r}",
                _candidates(search.get("Customer", [])),
                code="not_found",
            )
        match = matches[0]
    facts = _customer_facts(realm_id, [match]).get(str(match.get("Id")))
    mapping = CustomerMapping(
        local_customer_id=command.local_customer_id,
        realm_id=realm_id,
        qbo_customer_id=str(match["Id"]),
        display_name=str(match.get("DisplayName", "")),
        qbo_sync_token=facts.sync_token if facts is not None else None,
        active=facts.active if facts is not None else None,
    )
    await deps.mappings.save(mapping)
    log.info(
        "customer.mapped",
        realm_id=realm_id,
        local_customer_id=mapping.local_customer_id,
        qbo_customer_id=mapping.qbo_customer_id,
    )
    return mapping


def _candidates(customers: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "candidates": [
            {"qbo_customer_id": str(c.get("Id")), "display_name": c.get("DisplayName")}
            for c in customers[:10]
        ]
    }


async def sync_changes(
    command: SyncChanges, deps: Dependencies, owed: bool = True
) -> dict[str, int]:
    """Fetch only the invoices a webhook named (reads are metered; writes are not).

    `owed` False: no earlier attempt of this command started, so it left no events owed.
    """
    realm_id = command.realm_id
    page = Page()
    records = page.records
    to_fetch: list[str] = []
    customers: list[EntityChange] = []
    for change in command.changes:
        if change.entity == "Customer":
            customers.append(change)
            continue
        if change.operation == "Delete":
            when = parse_qbo_datetime(change.last_updated) if change.last_updated else deps.clock()
            records.append(deleted_stub(realm_id, change.id, when))
        elif change.id not in to_fetch:
            to_fetch.append(change.id)
    deleted = {r.invoice_id for r in records}
    to_fetch = [i for i in to_fetch if i not in deleted]
    for start in range(0, len(to_fetch), IDS_PER_QUERY):
        ids = to_fetch[start : start + IDS_PER_QUERY]
        found = await deps.qbo.query(
            realm_id,
            Select("Invoice").where("Id", "IN", ids).order_by("Id").render(max_results=PAGE_SIZE),
        )
        fetched = await _mapped(realm_id, _objects(found, "Invoice"))
        records.extend(fetched.records)
        page.rejected.extend(fetched.rejected)
    flushed = await deps.events.flush(command_id=command.command_id) if owed else 0
    stored, emitted = await _store_and_emit(
        deps, realm_id, page, command.command_id, "sync_changes"
    )
    result = {
        "fetched": len(records) + len(page.rejected),
        "stored": stored,
        "events": emitted + flushed,
        "rejected": len(page.rejected),
    }
    if customers:
        counts = await _customer_changes(deps, realm_id, customers, command.command_id)
        result["customers"] = len(customers)
        result["fetched"] += counts.fetched
        result["stored"] += counts.stored
        result["events"] += counts.events
        if counts.reconciled:
            result["reconciled"] = counts.reconciled
    return result


async def _customer_changes(
    deps: Dependencies, realm_id: str, changes: Sequence[EntityChange], command_id: str
) -> Counts:
    """Customer notices: keep the mappings' facts in step; carry out merges.

    A merge (`id` survives, `deleted_id` was absorbed; docs/design.md invariant 12) re-points
    every mapping of the absorbed customer to the survivor, then re-reads by Id the invoices
    stored under the absorbed customer, which QBO moved to the survivor (or deleted). When a
    local customer now follows the survivor, the survivor's own invoices are listed too, so
    its listing is whole. Each step is guarded, so a redelivered merge stores nothing new.
    """
    merges = [c for c in changes if c.operation == "Merge" and c.deleted_id is not None]
    ids = [c.id for c in changes] + [c.deleted_id for c in merges if c.deleted_id is not None]
    facts = await _read_customers(deps, realm_id, ids)
    # The absorbed customer's mappings turn inactive first, then move to the survivor.
    await deps.mappings.observe(realm_id, facts.values())
    counts = Counts()
    for merge in merges:
        absorbed, survivor = merge.deleted_id or "", merge.id
        moved = await deps.mappings.repoint(realm_id, absorbed, survivor, facts.get(survivor))
        log.info(
            "customer.merged",
            realm_id=realm_id,
            absorbed=absorbed,
            survivor=survivor,
            local_customer_ids=moved,
        )
        if await deps.mappings.merged_into(realm_id, survivor, absorbed):
            listed = await _sync_customer_invoices(deps, realm_id, survivor, command_id, "merge")
            counts.fetched += listed.fetched
            counts.reconciled += listed.reconciled
            counts.add(listed.stored, listed.events)
        known = await deps.invoices.customer_versions(realm_id, absorbed)
        left = sorted(known.live_keys())
        if left:
            counts.reconciled += len(left)
            counts.add(*await _reconcile(deps, realm_id, left, command_id, "merge"))
    return counts


async def poll_changes(realm_id: str, deps: Dependencies) -> dict[str, int]:
    """CDC: everything that changed since the checkpoint; the checkpoint moves after the writes."""
    now = deps.clock()
    since = await deps.checkpoints.get(realm_id)
    if since is None:
        # A new connection starts from now: its history arrives by refresh commands.
        await deps.checkpoints.move(realm_id, now)
        return {"fetched": 0, "stored": 0, "events": 0}
    start = since - deps.cdc_overlap
    oldest_allowed = now - CDC_MAX_LOOKBACK + timedelta(minutes=5)
    if start < oldest_allowed:
        log.warning("cdc.window_clamped", realm_id=realm_id, since=since.isoformat())
        start = oldest_allowed
    fetched = stored = emitted = 0
    while True:
        changes = await deps.qbo.cdc(realm_id, list(CDC_ENTITIES), start)
        # Customers: the mappings' facts. CDC cannot tell a merge (the absorbed customer just
        # turns inactive); merges are carried out from their notice (docs/design.md).
        customers = _objects(changes, "Customer")
        await deps.mappings.observe(realm_id, _customer_facts(realm_id, customers).values())
        invoices = _objects(changes, "Invoice")
        page = await _mapped(realm_id, invoices)
        async with deps.page_writes:
            s, e = await _store_and_emit(deps, realm_id, page, None, "cdc")
        fetched, stored, emitted = fetched + len(invoices), stored + s, emitted + e
        # A full answer of either entity may have left changes out: narrow the window to start
        # at the newest change of the fullest-behind entity and ask again (the overlap re-reads
        # that instant, and the other entity's changes once more; writes are guarded).
        full = {
            entity: newest
            for entity, objects in (("Invoice", invoices), ("Customer", customers))
            if len(objects) >= CDC_FULL and (newest := _newest_change(objects)) is not None
        }
        if not full:
            await deps.checkpoints.move(realm_id, now)
            break
        newest = min(full.values())
        if newest > start:
            start = newest
            await deps.checkpoints.move(realm_id, newest)
            continue
        # More than 1000 changes of one entity share one second (CDC's resolution), so CDC
        # cannot page past them: read that second through the query API, which pages, then go
        # on with CDC from the next second. The query API does not list deletions, so a
        # deletion beyond CDC's first 1000 of that same second relies on its webhook
        # (`cdc.second_full`).
        second = start.replace(microsecond=0)
        for entity in sorted(e for e, t in full.items() if t <= start):
            log.warning(
                "cdc.second_full", realm_id=realm_id, entity=entity, second=second.isoformat()
            )
            f, s, e = await _read_second(deps, realm_id, entity, second)
            fetched, stored, emitted = fetched + f, stored + s, emitted + e
        start = second + timedelta(seconds=1)
        await deps.checkpoints.move(realm_id, start)
    return {"fetched": fetched, "stored": stored, "events": emitted}


def _newest_change(objects: Sequence[Any]) -> datetime | None:
    """The newest `MetaData.LastUpdatedTime` among CDC objects; unreadable ones are skipped
    (they are recorded where they are mapped)."""
    newest: datetime | None = None
    for obj in objects:
        meta = obj.get("MetaData") if isinstance(obj, Mapping) else None
        try:
            changed = parse_qbo_datetime(
                meta.get("LastUpdatedTime") if isinstance(meta, Mapping) else None
            )
        except UnmappableInvoice:
            continue
        newest = changed if newest is None or changed > newest else newest
    return newest


async def _read_second(
    deps: Dependencies, realm_id: str, entity: str, second: datetime
) -> tuple[int, int, int]:
    """Every `entity` changed within `second`, through the query API's pages: (fetched, stored,
    emitted)."""
    select = Select(entity)
    if entity == "Customer":
        select = select.where("Active", "IN", [True, False])  # inactive ones too
    select = (
        select.where("MetaData.LastUpdatedTime", ">=", second)
        .where("MetaData.LastUpdatedTime", "<", second + timedelta(seconds=1))
        .order_by("Id")
    )
    fetched = stored = emitted = 0
    async for objects in deps.qbo.query_pages(realm_id, select, page_size=PAGE_SIZE):
        fetched += len(objects)
        if entity == "Customer":
            await deps.mappings.observe(realm_id, _customer_facts(realm_id, objects).values())
            continue
        page = await _mapped(realm_id, objects)
        async with deps.page_writes:
            s, e = await _store_and_emit(deps, realm_id, page, None, "cdc")
        stored, emitted = stored + s, emitted + e
    return fetched, stored, emitted
