"""Intuit's change notifications (webhooks) turned into `SyncChanges` commands.

Parsing is pure code; `webhook_routes` is the thin HTTP edge around it. What Intuit documents
(developer.intuit.com webhooks pages, the "data objects" page and the 2025-11-12 "Upcoming change
to webhooks payload structure" post), and what this module relies on:

* Every delivery is a POST whose `intuit-signature` header is base64(HMAC-SHA256(verifier token,
  raw body)). The check is the same for both body formats, and it must run on the raw bytes:
  re-serialised JSON would not match.
* Legacy body: `{"eventNotifications": [{"realmId", "dataChangeEvent": {"entities": [{"name",
  "id", "operation", "lastUpdated", "deletedId"?}]}}]}`, one item per realm. Operations are
  Create, Update, Delete, Merge, Void and Emailed; a Merge names the absorbed entity in
  `deletedId`.
* CloudEvents body (mandatory from 2026): a JSON array of events that may mix realms. `type` is
  `qbo.<entity in lower case>.<created|updated|deleted|merged|voided|emailed>.v1`, the realm is in
  `intuitaccountid`, the entity id in `intuitentityid`, `time` may carry nanoseconds, and `data` is
  usually `{}` or absent; a merge carries `{"deletedid": <absorbed id>}` with `intuitentityid`
  the survivor.
* Notifications carry ids only, are batched over a short window, may repeat and are best
  effort, so they become commands to fetch those ids; the CDC poller covers what is lost.
  Intuit expects an answer within seconds and retries a delivery that fails, so the handler
  only publishes and answers; it never calls QBO itself.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import re
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.common import jsoncodec
from services.common.httpbody import BodyRejected, read_body
from services.common.messages import Command, EntityChange, SyncChanges
from services.common.unavailable import unavailable

log = structlog.get_logger(__name__)

WEBHOOK_PATH = "/webhooks/quickbooks"
SIGNATURE_HEADER = "intuit-signature"
MAX_CHANGES_PER_COMMAND = 1000

# The entities this service syncs; notifications about anything else are dropped (and logged).
SYNCED_ENTITIES: Mapping[str, str] = {"invoice": "Invoice", "customer": "Customer"}
OPERATIONS = frozenset({"Create", "Update", "Delete", "Void", "Merge", "Emailed"})
CLOUDEVENT_VERBS: Mapping[str, str] = {
    "created": "Create",
    "updated": "Update",
    "deleted": "Delete",
    "merged": "Merge",
    "voided": "Void",
    "emailed": "Emailed",
}
_CLOUDEVENT_TYPE = re.compile(r"qbo\.([a-z0-9_]+)\.([a-z]+)\.v([0-9]+)")
_QBO_ID = re.compile(r"[0-9]{1,32}")

Publish = Callable[[Sequence[Command]], Awaitable[None]]


class WebhookInvalid(ValueError):
    """The body is not a webhook payload we understand. `reason` is safe to log and return."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class ChangeNotice:
    """One entity change as Intuit announced it, whichever body format carried it."""

    realm_id: str
    entity: str  # Invoice | Customer
    entity_id: str
    operation: str  # Create | Update | Delete | Void | Merge | Emailed
    last_updated: datetime | None
    deleted_id: str | None = None  # Merge only: the absorbed entity


# ---------------------------------------------------------------------------- signature


def verify_signature(body: bytes, signature: str | None, verifier_token: str) -> bool:
    """True when `signature` is base64(HMAC-SHA256(verifier_token, body)); False otherwise."""
    if not signature or not verifier_token:
        return False
    try:
        given = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError):  # not base64, or not even ASCII
        return False
    expected = hmac.new(verifier_token.encode("utf-8"), body, hashlib.sha256).digest()
    return hmac.compare_digest(given, expected)


# ------------------------------------------------------------------------------ parsing


def parse_notifications(body: bytes) -> list[ChangeNotice]:
    """Both of Intuit's bodies -> the Invoice and Customer changes they announce, in order.

    Events about other entities (Payment, Account, ...), or with a type or operation this code
    does not know, are dropped and logged rather than refused: the rest of the batch is still
    good, and refusing would only make Intuit redeliver the same body.
    """
    try:
        document = jsoncodec.loads(body)
    except ValueError as exc:  # JsonRejected: malformed, bad UTF-8, too deep, out of range
        raise WebhookInvalid(f"body is not JSON ({exc})") from None
    ignored: Counter[str] = Counter()
    if isinstance(document, list):
        notices = _cloudevents(document, ignored)
    elif isinstance(document, dict) and "eventNotifications" in document:
        notices = _legacy(document["eventNotifications"], ignored)
    elif isinstance(document, dict) and "specversion" in document:
        notices = _cloudevents([document], ignored)  # a single structured-mode event
    else:
        raise WebhookInvalid("expected a CloudEvents array or an eventNotifications object")
    if ignored:
        log.info("webhook.events_ignored", events=dict(ignored))
    return notices


def _legacy(notifications: Any, ignored: Counter[str]) -> list[ChangeNotice]:
    if not isinstance(notifications, list):
        raise WebhookInvalid("eventNotifications must be an array")
    notices: list[ChangeNotice] = []
    for i, notification in enumerate(notifications):
        where = f"eventNotifications[{i}]"
        _require_object(notification, where)
        realm_id = _qbo_id(notification.get("realmId"), f"{where}.realmId")
        event = notification.get("dataChangeEvent")
        _require_object(event, f"{where}.dataChangeEvent")
        entities = event.get("entities")
        if not isinstance(entities, list):
            raise WebhookInvalid(f"{where}.dataChangeEvent.entities must be an array")
        for j, item in enumerate(entities):
            at = f"{where}.dataChangeEvent.entities[{j}]"
            _require_object(item, at)
            name = _text(item.get("name"), f"{at}.name")
            operation = _text(item.get("operation"), f"{at}.operation")
            entity = SYNCED_ENTITIES.get(name.lower())
            if entity is None or operation not in OPERATIONS:
                ignored[f"{name}.{operation}"] += 1
                continue
            notices.append(
                ChangeNotice(
                    realm_id=realm_id,
                    entity=entity,
                    entity_id=_qbo_id(item.get("id"), f"{at}.id"),
                    operation=operation,
                    last_updated=_timestamp(item.get("lastUpdated")),
                    deleted_id=_merged_away(operation, item.get("deletedId"), f"{at}.deletedId"),
                )
            )
    return notices


def _cloudevents(events: list[Any], ignored: Counter[str]) -> list[ChangeNotice]:
    notices: list[ChangeNotice] = []
    for i, event in enumerate(events):
        where = f"[{i}]"
        _require_object(event, where)
        kind = _text(event.get("type"), f"{where}.type")
        match = _CLOUDEVENT_TYPE.fullmatch(kind.lower())
        entity = SYNCED_ENTITIES.get(match[1]) if match else None
        operation = CLOUDEVENT_VERBS.get(match[2]) if match else None
        # Only v1 is known; a later version may mean something else, and CDC will catch up.
        if match is None or entity is None or operation is None or match[3] != "1":
            ignored[kind] += 1
            continue
        data = event.get("data")
        notices.append(
            ChangeNotice(
                realm_id=_qbo_id(event.get("intuitaccountid"), f"{where}.intuitaccountid"),
                entity=entity,
                entity_id=_qbo_id(event.get("intuitentityid"), f"{where}.intuitentityid"),
                operation=operation,
                last_updated=_timestamp(event.get("time")),
                deleted_id=_merged_away(
                    operation,
                    data.get("deletedid") if isinstance(data, dict) else None,
                    f"{where}.data.deletedid",
                ),
            )
        )
    return notices


def _require_object(value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise WebhookInvalid(f"{where} must be an object")


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise WebhookInvalid(f"{where} must be a non-empty string")
    return value


def _qbo_id(value: Any, where: str) -> str:
    # Realm and entity ids are decimal strings; anything else must not reach a QBO query.
    if not isinstance(value, str) or not _QBO_ID.fullmatch(value):
        raise WebhookInvalid(f"{where} must be a QBO id (a string of digits)")
    return value


def _merged_away(operation: str, value: Any, where: str) -> str | None:
    if operation != "Merge" or value is None:
        return None
    return _qbo_id(value, where)


def _timestamp(value: Any) -> datetime | None:
    """Intuit's change time, or None. It is only a hint, so an odd value is not fatal."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())  # 3.11: Z, -0700, nanoseconds
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None  # a zone-less time could be hours off; better no hint than a wrong one
    return parsed.astimezone(UTC)


# ----------------------------------------------------------------------------- grouping


def group_into_commands(
    notices: Iterable[ChangeNotice],
    *,
    issued_by: str = "webhook",
    correlation_id: str | None = None,
) -> list[SyncChanges]:
    """One `SyncChanges` per realm (more when a realm has over 1000 changes), keyed by realm.

    A change announced twice (same entity, id, operation and merged id) is kept once, with the
    latest time Intuit gave: the worker fetches current state anyway, and the latest time is
    the one that tells it whether what it stored is already new enough.
    """
    by_realm: dict[str, dict[tuple[str, str, str, str | None], ChangeNotice]] = {}
    for notice in notices:
        if notice.entity not in SYNCED_ENTITIES.values():
            continue
        changes = by_realm.setdefault(notice.realm_id, {})
        key = (notice.entity, notice.entity_id, notice.operation, notice.deleted_id)
        seen = changes.get(key)
        if seen is None or _later(notice.last_updated, seen.last_updated):
            changes[key] = notice  # an existing key keeps its place: first-seen order
    commands: list[SyncChanges] = []
    for realm_id, changes in by_realm.items():
        items = [_entity_change(n) for n in changes.values()]
        for start in range(0, len(items), MAX_CHANGES_PER_COMMAND):
            commands.append(
                SyncChanges(
                    realm_id=realm_id,
                    issued_by=issued_by,
                    correlation_id=correlation_id,
                    changes=tuple(items[start : start + MAX_CHANGES_PER_COMMAND]),
                )
            )
    return commands


def _later(candidate: datetime | None, current: datetime | None) -> bool:
    return candidate is not None and (current is None or candidate > current)


def _entity_change(notice: ChangeNotice) -> EntityChange:
    return EntityChange(
        entity=notice.entity,
        id=notice.entity_id,
        operation=notice.operation,
        last_updated=_iso(notice.last_updated) if notice.last_updated else None,
        deleted_id=notice.deleted_id,
    )


def _iso(moment: datetime) -> str:
    micros = moment.microsecond
    spec = "seconds" if micros == 0 else "milliseconds" if micros % 1000 == 0 else "microseconds"
    return moment.astimezone(UTC).isoformat(timespec=spec).replace("+00:00", "Z")


# --------------------------------------------------------------------------------- HTTP


def _error(status: int, code: str, message: str) -> Response:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def webhook_routes(
    verifier_token: str,
    publish: Publish,
    max_body_bytes: int = 1_048_576,
    *,
    publish_timeout_s: float = 5.0,
) -> list[Route]:
    """`POST /webhooks/quickbooks`: verify, parse, publish `SyncChanges`, then answer.

    `publish` must not return before the commands are durable (Kafka acks): a 200 tells Intuit
    it may forget the notification. When publishing fails or takes longer than
    `publish_timeout_s` the answer is 503, so Intuit delivers again; duplicates are harmless
    because the worker only stores what is newer.
    """
    if not verifier_token:
        raise ValueError("the webhook verifier token is empty; every delivery would be refused")

    async def receive(request: Request) -> Response:
        delivery_id = str(uuid.uuid4())  # also the commands' correlation id, to trace a POST
        bound = log.bind(delivery_id=delivery_id)
        try:
            body = await read_body(request, max_body_bytes)
        except BodyRejected as exc:
            bound.warning("webhook.body_rejected", reason=exc.code, limit=max_body_bytes)
            if exc.status == 413:
                return _error(413, "payload_too_large", f"the body exceeds {max_body_bytes} bytes")
            return Response(status_code=exc.status)
        if not verify_signature(body, request.headers.get(SIGNATURE_HEADER), verifier_token):
            missing = SIGNATURE_HEADER not in request.headers
            bound.warning("webhook.rejected", reason="missing" if missing else "mismatch")
            return _error(401, "invalid_signature", f"the {SIGNATURE_HEADER} header is not valid")
        try:
            notices = parse_notifications(body)
        except WebhookInvalid as exc:
            bound.warning("webhook.invalid", reason=exc.reason, size=len(body))
            return _error(400, "invalid_payload", exc.reason)
        commands = group_into_commands(notices, correlation_id=f"webhook:{delivery_id}")
        changes = sum(len(c.changes) for c in commands)
        realms = sorted({c.realm_id for c in commands})
        if commands:
            try:
                async with asyncio.timeout(publish_timeout_s):
                    await publish(commands)
            except Exception as exc:  # whatever broke, Intuit only needs "try again"
                bound.error(
                    "webhook.publish_failed",
                    realm_ids=realms,
                    commands=len(commands),
                    error_type=type(exc).__name__,
                    exc_info=True,
                )
                return unavailable("the changes could not be queued; retry later")
        bound.info("webhook.accepted", realm_ids=realms, changes=changes, commands=len(commands))
        return JSONResponse({"accepted": changes, "commands": len(commands)})

    return [Route(WEBHOOK_PATH, receive, methods=["POST"])]
