"""Asking the sync service to refresh a customer's invoices: the `refreshInvoices` command.

The `queued` status document is written before the command is produced (docs/data-model.md),
so a client that gets a command id can always look it up. With an `Idempotency-Key` the command
id is derived from the key, so a retried request finds the command it already made; if the
first attempt died before Kafka acknowledged the command, the retry publishes it again under
the same id (the sync worker dedupes by command id and a refresh is idempotent anyway).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.api.producer import LazyProducer
from services.api.store import CommandRecords
from services.common.messages import RefreshInvoices, new_command_id
from services.common.mongo import Document

# Printable ASCII without spaces: what fits in a header and a log line unchanged.
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_KEY_NAMESPACE = uuid.UUID("0b7d1c9e-5f57-4c43-9a53-3c1f5b0f2a61")
# A command the sync worker has picked up was certainly published.
_SEEN_BY_WORKER = frozenset({"running", "throttled", "succeeded", "needs_reauth"})
PUBLISH_TIMEOUT_S = 10.0


class PublishFailed(Exception):
    """Kafka did not acknowledge the command; the queued record stays for a retry."""


def command_id_for(local_customer_id: str, idempotency_key: str) -> str:
    """The same key for the same customer always names the same command."""
    return str(
        uuid.uuid5(_KEY_NAMESPACE, f"refreshInvoices\n{local_customer_id}\n{idempotency_key}")
    )


@dataclass(frozen=True)
class RefreshRequested:
    command_id: str
    status: str
    created: bool


def _was_published(doc: Mapping[str, Any]) -> bool:
    return doc.get("published_at") is not None or doc.get("status") in _SEEN_BY_WORKER


def _command_of(doc: Mapping[str, Any]) -> RefreshInvoices:
    return RefreshInvoices(
        command_id=doc["_id"],
        realm_id=doc["realm_id"],
        local_customer_id=doc["local_customer_id"],
        issued_by=doc["issued_by"],
        issued_at=doc["issued_at"],
        correlation_id=doc.get("correlation_id"),
    )


async def request_refresh(
    mapping: Mapping[str, Any],
    *,
    commands: CommandRecords,
    producer: LazyProducer,
    topic: str,
    clock: Callable[[], datetime],
    idempotency_key: str | None = None,
    correlation_id: str | None = None,
) -> RefreshRequested:
    local_customer_id = str(mapping["_id"])
    command = RefreshInvoices(
        command_id=(
            command_id_for(local_customer_id, idempotency_key)
            if idempotency_key
            else new_command_id()
        ),
        realm_id=mapping["realm_id"],
        local_customer_id=local_customer_id,
        issued_by="api",
        correlation_id=correlation_id,
    )
    record: Document = {
        "_id": command.command_id,
        "type": command.type,
        "realm_id": command.realm_id,
        "local_customer_id": local_customer_id,
        "status": "queued",
        "issued_at": command.issued_at,
        "issued_by": command.issued_by,
        "queued_at": clock(),
        "attempts": 0,
    }
    if correlation_id:
        record["correlation_id"] = correlation_id
    if idempotency_key:
        record["idempotency_key"] = idempotency_key
    queued = await commands.queue(record)
    if _was_published(queued.doc):
        return RefreshRequested(command.command_id, str(queued.doc["status"]), queued.created)
    command = _command_of(queued.doc)
    if queued.doc.get("status") == "failed":
        # An earlier attempt could not publish it: it is queued again before it is published,
        # so the worker's own status updates always come after ours.
        await commands.requeue_unpublished(command.command_id)
    try:
        async with asyncio.timeout(PUBLISH_TIMEOUT_S):
            await producer.send_and_wait(topic, command.to_bytes(), key=command.kafka_key())
    except Exception as exc:
        reason = f"could not publish the command: {type(exc).__name__}"
        await commands.fail_unpublished(command.command_id, reason)
        raise PublishFailed(reason) from exc
    await commands.mark_published(command.command_id, clock())
    return RefreshRequested(command.command_id, "queued", queued.created)
