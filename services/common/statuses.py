"""The statuses both services write and read, spelled once (docs/data-model.md).

The sync service writes them (commands, connections, invoices), the api renders and filters
them, and the OpenAPI document lists them from here.
"""

from __future__ import annotations

from enum import StrEnum


class CommandStatus(StrEnum):
    """A command's record moves only forward: queued -> running | throttled -> a finished one."""

    QUEUED = "queued"
    RUNNING = "running"
    THROTTLED = "throttled"  # QBO throttles the realm: the command runs again at `resumes_at`
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    NEEDS_REAUTH = "needs_reauth"


class ConnectionStatus(StrEnum):
    ACTIVE = "active"
    NEEDS_REAUTH = "needs_reauth"
    DISCONNECTED = "disconnected"


class InvoiceStatus(StrEnum):
    OPEN = "open"
    PAID = "paid"
    VOIDED = "voided"
    DELETED = "deleted"
