"""What the handlers and the worker need from the outside world, as small Protocols.

Each names exactly the methods the service layer calls, so the layer can run over the real
adapters (`store.py`, `events.py`, `vault.py`, `quickbooks/client.py`, wired in `app.py`) or
over in-memory fakes in unit tests (`tests/unit/sync/fakes.py`). mypy checks both against
these: `app.py` builds `Dependencies` from the real classes, the tests from the fakes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from services.common.messages import Command
from services.common.mongo import Document
from services.common.statuses import CommandStatus
from services.sync.quickbooks.mapping import CustomerFacts, InvoiceRecord
from services.sync.quickbooks.query import Select
from services.sync.store import (
    ApplyResult,
    Attempt,
    CustomerMapping,
    InvoiceRejection,
    StoredVersions,
)


class QboReader(Protocol):
    """QBO's read API for one realm at a time (`QboClient`). Every HTTP-level retry happens
    behind it (docs/design.md invariant 13): what it raises is final for the command."""

    async def query(self, realm_id: str, statement: str) -> dict[str, Any]: ...

    def query_pages(
        self, realm_id: str, select: Select, page_size: int = ...
    ) -> AsyncIterator[list[dict[str, Any]]]: ...

    async def cdc(
        self, realm_id: str, entities: Sequence[str], changed_since: datetime
    ) -> dict[str, list[dict[str, Any]]]: ...


class Connections(Protocol):
    """The realms' QBO connections (`TokenVault`)."""

    async def access_token(self, realm_id: str) -> str:
        """A usable access token; raises `ReauthRequired` or `NotConnected` otherwise."""
        ...

    async def active_realms(self) -> list[str]: ...


class Invoices(Protocol):
    """The write model of invoices (`InvoiceStore`): never overwritten by an older version."""

    async def apply(
        self,
        records: Sequence[InvoiceRecord],
        local_ids: dict[str, str | None],
        known: StoredVersions | None = None,
    ) -> ApplyResult: ...

    async def customer_versions(self, realm_id: str, qbo_customer_id: str) -> StoredVersions: ...


class Mappings(Protocol):
    """Local customer -> QBO customer, with the QBO customer's facts (`CustomerMappings`)."""

    async def save(self, mapping: CustomerMapping) -> None: ...

    async def get(self, local_customer_id: str) -> CustomerMapping | None: ...

    async def observe(self, realm_id: str, customers: Iterable[CustomerFacts]) -> int: ...

    async def repoint(
        self, realm_id: str, absorbed_id: str, survivor_id: str, survivor: CustomerFacts | None
    ) -> list[str]: ...

    async def merged_into(self, realm_id: str, survivor_id: str, absorbed_id: str) -> list[str]: ...

    async def local_ids(
        self, realm_id: str, qbo_customer_ids: Iterable[str]
    ) -> dict[str, str | None]: ...

    async def synced(self, local_customer_id: str, command_id: str) -> None: ...


class EventPublisher(Protocol):
    """InvoiceUpdated events (`InvoiceEvents`)."""

    async def publish(self, docs: Sequence[Document]) -> int:
        """One event per stored version; returns once every one is acknowledged."""
        ...

    async def flush(
        self, command_id: str | None = None, older_than: timedelta | None = None
    ) -> int:
        """Emit the current versions behind open outbox entries (of one command, or stale)."""
        ...


class OutboxEntries(Protocol):
    """Writes whose events are owed (`Outbox`, docs/design.md invariant 4)."""

    async def open(self, command_id: str | None, keys: Sequence[str]) -> str: ...

    async def close(self, entry_id: str) -> None: ...


class Checkpoints(Protocol):
    """Where each realm's CDC window starts (`CdcCheckpoints`)."""

    async def get(self, realm_id: str) -> datetime | None: ...

    async def move(self, realm_id: str, changed_since: datetime) -> None: ...


class Rejections(Protocol):
    """Invoices that cannot be stored, kept for a human (`RejectedInvoices`, invariant 9)."""

    async def record(
        self, rejections: Sequence[InvoiceRejection], source: str, command_id: str | None
    ) -> None: ...

    async def resolve(self, keys: Sequence[str]) -> None: ...


class CommandRecords(Protocol):
    """The status of every command (`CommandLog`): statuses only move forward."""

    async def running(self, command: Command, attempt: int) -> Attempt | None:
        """Record that an attempt starts; None when the command has already finished."""
        ...

    async def finished(
        self,
        command_id: str,
        status: CommandStatus,
        reason: str | None,
        result: dict[str, Any] | None,
        attempt: Attempt | None,
        /,
    ) -> bool:
        """Record the outcome (`result` when it succeeded, the `attempt` that ends it); False
        when the command had already finished."""
        ...

    async def throttled(self, command_id: str, resumes_at: datetime, reason: str) -> None: ...
