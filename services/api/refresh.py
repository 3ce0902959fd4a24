"""Asking the sync service to refresh a customer's invoices: the `refreshInvoices` command.

The `queued` status document is written before the command is produced (docs/data-model.md),
so a client that gets a command id can always look it up. With an `Idempotency-Key` the command
id is derived from the key, so a retried request finds the command it already made.

One key makes one command, published once, however many requests carry it at the same time:
publishing is claimed by inserting an attempt record (`CommandPublications`), and the requests
that lose the claim wait for the winner's outcome instead of publishing too. A retry publishes
again only after an attempt failed (Kafka did not acknowledge it) or was abandoned (its request
died before it knew). Should a command still be published twice (an acknowledgement lost on
the way back), the sync worker does not run a command whose record says it finished.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from opentelemetry.trace import SpanKind

from services.api.models import IDEMPOTENCY_KEY_PATTERN
from services.api.producer import LazyProducer
from services.api.store import CommandPublications, CommandRecords, Outcome
from services.common import tracing
from services.common.messages import RefreshInvoices, new_command_id
from services.common.mongo import Document
from services.common.statuses import CommandStatus

# Printable ASCII without spaces: what fits in a header and a log line unchanged.
IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
_KEY_NAMESPACE = uuid.UUID("0b7d1c9e-5f57-4c43-9a53-3c1f5b0f2a61")
PUBLISH_TIMEOUT_S = 5.0
# An attempt with no outcome this long after its claim belongs to a request that died.
ABANDONED_AFTER = timedelta(seconds=PUBLISH_TIMEOUT_S + 5)
# How often a request that lost the claim looks at the winner's attempt, and for how long.
WAIT_POLL_S = 0.05
WAIT_LIMIT_S = ABANDONED_AFTER.total_seconds() + 2


class PublishFailed(Exception):
    """Kafka did not acknowledge the command; a retry with the same key publishes it."""


def command_id_for(local_customer_id: str, idempotency_key: str) -> str:
    """The same key for the same customer always names the same command."""
    return str(
        uuid.uuid5(_KEY_NAMESPACE, f"refreshInvoices\n{local_customer_id}\n{idempotency_key}")
    )


@dataclass(frozen=True)
class RefreshRequested:
    command_id: str
    status: CommandStatus
    created: bool


def _command_of(doc: Mapping[str, Any]) -> RefreshInvoices:
    return RefreshInvoices(
        command_id=doc["_id"],
        realm_id=doc["realm_id"],
        local_customer_id=doc["local_customer_id"],
        issued_by=doc["issued_by"],
        issued_at=doc["issued_at"],
        correlation_id=doc.get("correlation_id"),
    )


@dataclass(frozen=True)
class Publisher:
    """What publishing a command needs; built once by the routes."""

    publications: CommandPublications
    producer: LazyProducer
    topic: str
    clock: Callable[[], datetime]

    async def publish_once(self, command: RefreshInvoices, created: bool) -> None:
        """Return once the command is published, by this request or by a concurrent one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_LIMIT_S
        # The request that made the record tries first; the others look at what was done.
        latest = None if created else await self.publications.latest(command.command_id)
        waited = False
        while True:
            if latest is not None and latest.outcome is Outcome.PUBLISHED:
                return
            if latest is not None and latest.outcome is Outcome.FAILED and waited:
                # The attempt we waited for was refused just now: so would ours be, most likely.
                raise PublishFailed(latest.reason or "could not publish the command")
            if (
                latest is None
                or latest.outcome is Outcome.FAILED
                or self.clock() - latest.claimed_at > ABANDONED_AFTER
            ):
                number = 0 if latest is None else latest.number + 1
                if await self.publications.claim(command.command_id, number, self.clock()):
                    await self._publish(command, number)
                    return
            elif loop.time() > deadline:
                raise PublishFailed("another request is still publishing the command")
            else:
                waited = True
                await asyncio.sleep(WAIT_POLL_S)
            latest = await self.publications.latest(command.command_id)

    async def _publish(self, command: RefreshInvoices, number: int) -> None:
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                with tracing.span("send commands", SpanKind.PRODUCER, {"commands": 1}):
                    await self.producer.send_and_wait(
                        self.topic,
                        command.to_bytes(),
                        key=command.kafka_key(),
                        headers=tracing.kafka_headers(),
                    )
        except Exception as exc:
            reason = f"could not publish the command: {type(exc).__name__}"
            await self.publications.settle(
                command.command_id, number, Outcome.FAILED, self.clock(), reason
            )
            raise PublishFailed(reason) from exc
        await self.publications.settle(command.command_id, number, Outcome.PUBLISHED, self.clock())


async def request_refresh(
    mapping: Mapping[str, Any],
    *,
    commands: CommandRecords,
    publisher: Publisher,
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
        "status": CommandStatus.QUEUED.value,
        "issued_at": command.issued_at,
        "issued_by": command.issued_by,
        "queued_at": publisher.clock(),
        "attempts": 0,
    }
    if correlation_id:
        record["correlation_id"] = correlation_id
    if idempotency_key:
        record["idempotency_key"] = idempotency_key
    queued = await commands.queue(record)
    status = CommandStatus(queued.doc.get("status") or CommandStatus.QUEUED)
    if status != CommandStatus.QUEUED:
        # The sync worker has picked it up: it was certainly published.
        return RefreshRequested(command.command_id, status, queued.created)
    await publisher.publish_once(_command_of(queued.doc), queued.created)
    return RefreshRequested(command.command_id, CommandStatus.QUEUED, queued.created)
