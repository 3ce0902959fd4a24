"""A Kafka record -> the read-model document it stands for, or `Rejected` with the reason."""

from __future__ import annotations

from datetime import datetime

from aiokafka import ConsumerRecord

from services.api.readmodel import UnprojectableEvent, invoice_key, read_invoice
from services.common import jsoncodec
from services.common.mongo import Document
from services.common.schemas import INVOICE_UPDATED, MessageInvalid, SchemaSet


class Rejected(Exception):
    """A record that will never project; `error_type` goes to the `dlq.error_type` header."""

    def __init__(self, reason: str, error_type: str) -> None:
        self.reason = reason
        self.error_type = error_type
        super().__init__(reason)


def parse_event(
    record: ConsumerRecord[bytes, bytes], schemas: SchemaSet, projected_at: datetime
) -> Document:
    """A record -> the read-model document it stands for, or `Rejected` with the reason."""
    if record.value is None:
        raise Rejected("empty record (tombstone)", "EmptyRecord")
    try:
        event = jsoncodec.loads(record.value)
    except ValueError as exc:  # JsonRejected: malformed, bad UTF-8, too deep, out of range
        raise Rejected(f"not JSON: {exc}", "InvalidJSON") from None
    try:
        schemas.validate(INVOICE_UPDATED, event)
    except MessageInvalid as exc:
        where = f" at {exc.path}" if exc.path else ""
        raise Rejected(f"{exc.reason}{where}", "SchemaViolation") from None
    try:
        doc = read_invoice(event, projected_at)
    except UnprojectableEvent as exc:
        raise Rejected(str(exc), "UnprojectableEvent") from None
    if record.key is not None:
        expected = invoice_key(doc["realm_id"], doc["invoice_id"])
        if record.key != expected.encode():
            # The key decides the partition, and so the order of an invoice's versions.
            raise Rejected(f"record key does not match the event (expected {expected})", "BadKey")
    return doc
