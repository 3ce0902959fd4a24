"""Commands on the commands topic, as typed values.

The JSON contracts live in `schemas/`; these classes are how Python code builds and reads them.
Parsing validates against the schema first, so a handler only ever sees a well-formed command.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from services.common import jsoncodec
from services.common.schemas import MessageInvalid, SchemaSet, default_schemas


def new_command_id() -> str:
    return str(uuid.uuid4())


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, kw_only=True)
class Command:
    type: ClassVar[str]
    realm_id: str
    issued_by: str
    command_id: str = field(default_factory=new_command_id)
    issued_at: str = field(default_factory=utc_now_iso)
    correlation_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        body = {"type": self.type, **asdict(self)}
        return {k: v for k, v in body.items() if v is not None}

    def kafka_key(self) -> bytes:
        # Keyed by realm: every command of a realm lands on one partition, so one worker owns
        # that realm's QBO calls, token refreshes and rate budget (docs/design.md invariant 1).
        return self.realm_id.encode()

    def to_bytes(self, schemas: SchemaSet | None = None) -> bytes:
        body = self.to_dict()
        (schemas or default_schemas()).validate_command(body)
        return jsoncodec.dumpb(body)


@dataclass(frozen=True, kw_only=True)
class RefreshInvoices(Command):
    type: ClassVar[str] = "RefreshInvoices"
    local_customer_id: str


@dataclass(frozen=True, kw_only=True)
class MapCustomer(Command):
    type: ClassVar[str] = "MapCustomer"
    local_customer_id: str
    display_name: str | None = None
    qbo_customer_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class EntityChange:
    """One entity QBO reported as changed (by webhook or CDC), inside a `SyncChanges`."""

    entity: str  # Invoice | Customer
    id: str
    operation: str  # Create | Update | Delete | Void | Merge | Emailed
    last_updated: str | None  # QBO's own time of the change, when it gave one
    deleted_id: str | None = None  # Merge only: the entity that was absorbed

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "entity": self.entity,
            "id": self.id,
            "operation": self.operation,
            "last_updated": self.last_updated,
        }
        if self.deleted_id is not None:
            body["deleted_id"] = self.deleted_id
        return body


@dataclass(frozen=True, kw_only=True)
class SyncChanges(Command):
    """Fetch just these changed entities of one realm (ids only; QBO sends no data)."""

    type: ClassVar[str] = "SyncChanges"
    changes: tuple[EntityChange, ...]

    def __post_init__(self) -> None:
        # `parse_command` hands over the JSON list of objects; keep one typed, hashable shape.
        items: Iterable[Any] = self.changes
        object.__setattr__(
            self,
            "changes",
            tuple(c if isinstance(c, EntityChange) else EntityChange(**c) for c in items),
        )

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        body["changes"] = [c.to_dict() for c in self.changes]
        return body


COMMAND_TYPES: dict[str, type[Command]] = {
    c.type: c for c in (RefreshInvoices, MapCustomer, SyncChanges)
}


def parse_command(raw: bytes | None, schemas: SchemaSet | None = None) -> Command:
    """Bytes from Kafka -> a validated command. Raises `MessageInvalid` with a clear reason.

    Any other outcome would let one record stop its partition (docs/design.md invariant 9), so every
    failure of reading untrusted bytes, expected or not, becomes `MessageInvalid`.
    """
    if raw is None:
        raise MessageInvalid("command", "empty record (tombstone)")
    try:
        document = jsoncodec.loads(raw)
    except ValueError as exc:  # JsonRejected: malformed, bad UTF-8, too deep, out of range
        raise MessageInvalid("command", f"not JSON: {exc}") from None
    kind = (schemas or default_schemas()).validate_command(document)
    body = {k: v for k, v in document.items() if k != "type"}
    try:
        return COMMAND_TYPES[kind](**body)
    except (TypeError, ValueError) as exc:
        raise MessageInvalid("command", f"does not fit {kind}: {exc}") from None
