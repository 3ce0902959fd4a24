"""`POST /api/customers/{id}/refreshInvoices` and `GET /api/commands/{id}`: asking for a
refresh (`refresh.py` queues and publishes it) and following the command it made."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from services.api import models
from services.api.handlers.customers import MappedCustomers, customer_id
from services.api.metrics import ApiMetrics
from services.api.refresh import IDEMPOTENCY_KEY, Publisher, PublishFailed, request_refresh
from services.api.responses import JSON, ApiError, invalid_body, not_found
from services.api.store import CommandRecords
from services.common.httpbody import BodyRejected, read_json
from services.common.statuses import CommandStatus
from services.common.unavailable import RETRY_AFTER_S

log = structlog.get_logger(__name__)

_COMMAND_ID = re.compile(models.COMMAND_ID_PATTERN)
_MAX_BODY_BYTES = 16 * 1024


def render_command(doc: Mapping[str, Any]) -> models.Command:
    """A command status record; only the documented fields leave the api."""
    result = doc.get("result")
    status = doc.get("status") or CommandStatus.QUEUED
    throttled: dict[str, Any] = {}
    if status == CommandStatus.THROTTLED:
        # The realm is paused at QBO's request; the command runs again at this time.
        throttled = {"resumes_at": doc.get("resumes_at")}
    return models.Command(
        command_id=doc["_id"],
        type=doc.get("type") or "unknown",
        realm_id=doc.get("realm_id") or "",
        local_customer_id=doc.get("local_customer_id"),
        status=status,
        reason=doc.get("reason"),
        issued_at=doc.get("issued_at"),
        issued_by=doc.get("issued_by"),
        queued_at=doc.get("queued_at"),
        started_at=doc.get("started_at"),
        finished_at=doc.get("finished_at"),
        attempts=doc.get("attempts") or 0,
        result=models.CommandResult.model_validate(dict(result))
        if isinstance(result, Mapping)
        else None,
        **throttled,
    )


async def _refresh_request(request: Request) -> models.RefreshRequest:
    """The optional JSON body of refreshInvoices: `{"correlation_id": "..."}`."""
    try:
        body = await read_json(request, max_bytes=_MAX_BODY_BYTES, empty={})
    except BodyRejected as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    try:
        return models.RefreshRequest.model_validate(body)
    except ValidationError as exc:
        raise invalid_body(exc) from None


@dataclass(frozen=True)
class Commands:
    """The refresh command and the command status records."""

    customers: MappedCustomers
    commands: CommandRecords
    publisher: Publisher
    metrics: ApiMetrics

    async def refresh_invoices(self, request: Request) -> Response:
        local_customer_id = customer_id(request)
        key = request.headers.get("idempotency-key")
        if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
            raise ApiError(400, "bad_idempotency_key", "Idempotency-Key: 1-255 printable ASCII")
        body = await _refresh_request(request)
        mapping = await self.customers.mapping(local_customer_id)
        try:
            requested = await request_refresh(
                mapping,
                commands=self.commands,
                publisher=self.publisher,
                idempotency_key=key,
                correlation_id=body.correlation_id,
            )
        except PublishFailed as exc:
            log.warning("api.refresh_not_published", customer=local_customer_id, error=str(exc))
            raise ApiError(
                503,
                "unavailable",
                "the command could not be queued; retry (same Idempotency-Key)",
                {"Retry-After": RETRY_AFTER_S},
            ) from None
        if requested.created:
            self.metrics.commands.labels("RefreshInvoices").inc()
        log.info(
            "api.refresh_requested",
            customer=local_customer_id,
            command_id=requested.command_id,
            created=requested.created,
        )
        status_url = f"/api/commands/{requested.command_id}"
        accepted = models.CommandAccepted(
            command_id=requested.command_id, status=requested.status, status_url=status_url
        )
        return JSON(accepted, status_code=202, headers={"Location": status_url})

    async def get(self, request: Request) -> Response:
        command_id = str(request.path_params["commandId"])
        if not _COMMAND_ID.fullmatch(command_id):
            raise ApiError(400, "bad_command_id", "command ids are lower-case UUIDs")
        doc = await self.commands.get(command_id)
        if doc is None:
            raise not_found(f"no command {command_id}")
        return JSON(render_command(doc))
