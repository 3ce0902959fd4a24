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

A signed delivery is taken event by event (docs/design.md, "Webhook deliveries"): every valid
event becomes a change, each malformed one is logged with its reason and counted, and the
answer is 2xx, because a non-2xx only makes Intuit send the same bytes again. That holds for a
signed body that is not JSON or of neither shape too: nothing in it can ever be read, the CDC
poll covers the company, and a retry cannot help. Only a bad signature refuses the delivery.
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
from services.common.http_errors import error_response
from services.common.httpbody import BodyRejected, read_body
from services.common.messages import Command, EntityChange, SyncChanges
from services.common.unavailable import unavailable

log = structlog.get_logger(__name__)

WEBHOOK_PATH = "/webhooks/quickbooks"
SIGNATURE_HEADER = "intuit-signature"
MAX_CHANGES_PER_COMMAND = 1000
_MAX_REJECTIONS_SHOWN = 20

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
    """Part of a delivery is not something we understand. `reason` is safe to log and return;
    `code` is a short, stable category for counting (never carries input)."""

    def __init__(self, reason: str, code: str = "invalid") -> None:
        self.reason = reason
        self.code = code
        super().__init__(reason)


@dataclass(frozen=True)
class RejectedEvent:
    """One event of a delivery (or the whole body) that could not be read, and why."""

    where: str  # "body", "eventNotifications[0]", "...entities[2]", "[3]"
    code: str
    reason: str


@dataclass(frozen=True)
class Delivery:
    """What a signed delivery announced: the valid changes, in order, and what was rejected."""

    notices: list[ChangeNotice]
    rejected: list[RejectedEvent]


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


def parse_delivery(body: bytes) -> Delivery:
    """Both of Intuit's bodies -> the Invoice and Customer changes they announce, event by event.

    A malformed event is rejected on its own (legacy body: one entity item, or one realm's
    notification when its realmId or dataChangeEvent is unusable; CloudEvents: one array
    element) and the others are kept. A body that is not JSON, or of neither shape, is one
    rejection of the whole body. Events about other entities (Payment, Account, ...), or with
    a type or operation this code does not know, are valid but not ours: dropped and logged.
    """
    try:
        document = jsoncodec.loads(body)
    except ValueError as exc:  # JsonRejected: malformed, bad UTF-8, too deep, out of range
        return _whole_body(WebhookInvalid(f"body is not JSON ({exc})", "not_json"))
    ignored: Counter[str] = Counter()
    rejected: list[RejectedEvent] = []
    if isinstance(document, list):
        notices = _cloudevents(document, ignored, rejected)
    elif isinstance(document, dict) and "eventNotifications" in document:
        notifications = document["eventNotifications"]
        if not isinstance(notifications, list):
            return _whole_body(WebhookInvalid("eventNotifications must be an array", "shape"))
        notices = _legacy(notifications, ignored, rejected)
    elif isinstance(document, dict) and "specversion" in document:
        notices = _cloudevents([document], ignored, rejected)  # a single structured-mode event
    else:
        return _whole_body(
            WebhookInvalid("expected a CloudEvents array or an eventNotifications object", "shape")
        )
    if ignored:
        log.info("webhook.events_ignored", events=dict(ignored))
    return Delivery(notices, rejected)


def parse_notifications(body: bytes) -> list[ChangeNotice]:
    """The valid changes of a delivery (`parse_delivery` without what it rejected)."""
    return parse_delivery(body).notices


def _whole_body(invalid: WebhookInvalid) -> Delivery:
    return Delivery([], [RejectedEvent("body", invalid.code, invalid.reason)])


def _legacy(
    notifications: list[Any], ignored: Counter[str], rejected: list[RejectedEvent]
) -> list[ChangeNotice]:
    notices: list[ChangeNotice] = []
    for i, notification in enumerate(notifications):
        where = f"eventNotifications[{i}]"
        try:
            _require_object(notification, where)
            realm_id = _qbo_id(notification.get("realmId"), f"{where}.realmId")
            event = notification.get("dataChangeEvent")
            _require_object(event, f"{where}.dataChangeEvent")
            entities = event.get("entities")
            if not isinstance(entities, list):
                raise WebhookInvalid(f"{where}.dataChangeEvent.entities must be an array", "shape")
        except WebhookInvalid as exc:
            rejected.append(RejectedEvent(where, exc.code, exc.reason))
            continue
        for j, item in enumerate(entities):
            at = f"{where}.dataChangeEvent.entities[{j}]"
            try:
                notice = _legacy_entity(realm_id, item, at, ignored)
            except WebhookInvalid as exc:
                rejected.append(RejectedEvent(at, exc.code, exc.reason))
                continue
            if notice is not None:
                notices.append(notice)
    return notices


def _legacy_entity(realm_id: str, item: Any, at: str, ignored: Counter[str]) -> ChangeNotice | None:
    _require_object(item, at)
    name = _text(item.get("name"), f"{at}.name")
    operation = _text(item.get("operation"), f"{at}.operation")
    entity = SYNCED_ENTITIES.get(name.lower())
    if entity is None or operation not in OPERATIONS:
        ignored[f"{name}.{operation}"] += 1
        return None
    return ChangeNotice(
        realm_id=realm_id,
        entity=entity,
        entity_id=_qbo_id(item.get("id"), f"{at}.id"),
        operation=operation,
        last_updated=_timestamp(item.get("lastUpdated")),
        deleted_id=_merged_away(operation, item.get("deletedId"), f"{at}.deletedId"),
    )


def _cloudevents(
    events: list[Any], ignored: Counter[str], rejected: list[RejectedEvent]
) -> list[ChangeNotice]:
    notices: list[ChangeNotice] = []
    for i, event in enumerate(events):
        where = f"[{i}]"
        try:
            notice = _cloudevent(event, where, ignored)
        except WebhookInvalid as exc:
            rejected.append(RejectedEvent(where, exc.code, exc.reason))
            continue
        if notice is not None:
            notices.append(notice)
    return notices


def _cloudevent(event: Any, where: str, ignored: Counter[str]) -> ChangeNotice | None:
    _require_object(event, where)
    kind = _text(event.get("type"), f"{where}.type")
    match = _CLOUDEVENT_TYPE.fullmatch(kind.lower())
    entity = SYNCED_ENTITIES.get(match[1]) if match else None
    operation = CLOUDEVENT_VERBS.get(match[2]) if match else None
    # Only v1 is known; a later version may mean something else, and CDC will catch up.
    if match is None or entity is None or operation is None or match[3] != "1":
        ignored[kind] += 1
        return None
    data = event.get("data")
    return ChangeNotice(
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


def _require_object(value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise WebhookInvalid(f"{where} must be an object", "not_an_object")


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise WebhookInvalid(f"{where} must be a non-empty string", "missing_field")
    return value


def _qbo_id(value: Any, where: str) -> str:
    # Realm and entity ids are decimal strings; anything else must not reach a QBO query.
    if not isinstance(value, str) or not _QBO_ID.fullmatch(value):
        raise WebhookInvalid(f"{where} must be a QBO id (a string of digits)", "bad_id")
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


def webhook_routes(
    verifier_token: str,
    publish: Publish,
    max_body_bytes: int = 1_048_576,
    *,
    publish_timeout_s: float = 5.0,
    rejections: Counter[str] | None = None,
) -> list[Route]:
    """`POST /webhooks/quickbooks`: verify, parse event by event, publish `SyncChanges`, answer.

    `publish` must not return before the commands are durable (Kafka acks): a 200 tells Intuit
    it may forget the notification. When publishing fails or takes longer than
    `publish_timeout_s` the answer is 503, so Intuit delivers again; duplicates are harmless
    because the worker only stores what is newer. Malformed events of a signed delivery are
    counted in `rejections` by reason code (sync `/stats`) once the delivery is answered 2xx,
    so a delivery Intuit sends again after a 503 is counted once.
    """
    if not verifier_token:
        raise ValueError("the webhook verifier token is empty; every delivery would be refused")
    receiver = WebhookReceiver(
        verifier_token,
        publish,
        max_body_bytes,
        publish_timeout_s,
        rejections if rejections is not None else Counter(),
    )
    return [Route(WEBHOOK_PATH, receiver.receive, methods=["POST"])]


@dataclass(frozen=True)
class WebhookReceiver:
    """One delivery: its signed body, the commands it makes, and the answer Intuit gets."""

    verifier_token: str
    publish: Publish
    max_body_bytes: int
    publish_timeout_s: float
    rejections: Counter[str]

    async def receive(self, request: Request) -> Response:
        delivery_id = str(uuid.uuid4())  # also the commands' correlation id, to trace a POST
        bound = log.bind(delivery_id=delivery_id)
        body = await self._signed_body(request, bound)
        if isinstance(body, Response):
            return body
        delivery = parse_delivery(body)
        for rejected in delivery.rejected:
            bound.warning(
                "webhook.event_rejected",
                where=rejected.where,
                code=rejected.code,
                reason=rejected.reason,
                size=len(body),
            )
        commands = group_into_commands(delivery.notices, correlation_id=f"webhook:{delivery_id}")
        realms = sorted({c.realm_id for c in commands})
        if commands and not await self._queued(commands, realms, bound):
            return unavailable("the changes could not be queued; retry later")
        self.rejections.update(r.code for r in delivery.rejected)
        changes = sum(len(c.changes) for c in commands)
        bound.info(
            "webhook.accepted",
            realm_ids=realms,
            changes=changes,
            commands=len(commands),
            rejected=len(delivery.rejected),
        )
        return JSONResponse(_answer(delivery, changes, len(commands)))

    async def _signed_body(self, request: Request, bound: Any) -> bytes | Response:
        """The body, or the 4xx for one too large or not signed with the verifier token."""
        try:
            body = await read_body(request, self.max_body_bytes)
        except BodyRejected as exc:
            bound.warning("webhook.body_rejected", reason=exc.code, limit=self.max_body_bytes)
            if exc.status == 413:
                return error_response(
                    413, "payload_too_large", f"the body exceeds {self.max_body_bytes} bytes"
                )
            return Response(status_code=exc.status)
        if not verify_signature(body, request.headers.get(SIGNATURE_HEADER), self.verifier_token):
            missing = SIGNATURE_HEADER not in request.headers
            bound.warning("webhook.rejected", reason="missing" if missing else "mismatch")
            return error_response(
                401, "invalid_signature", f"the {SIGNATURE_HEADER} header is not valid"
            )
        return body

    async def _queued(self, commands: Sequence[Command], realms: list[str], bound: Any) -> bool:
        """Whether Kafka acknowledged the commands within the time Intuit waits."""
        try:
            async with asyncio.timeout(self.publish_timeout_s):
                await self.publish(commands)
        except Exception as exc:  # whatever broke, Intuit only needs "try again"
            bound.error(
                "webhook.publish_failed",
                realm_ids=realms,
                commands=len(commands),
                error_type=type(exc).__name__,
                exc_info=True,
            )
            return False
        return True


def _answer(delivery: Delivery, changes: int, commands: int) -> dict[str, Any]:
    answer: dict[str, Any] = {"accepted": changes, "commands": commands}
    if delivery.rejected:
        # Intuit ignores the body; this is for whoever replays a delivery by hand.
        answer["rejected"] = [
            {"where": r.where, "error": r.code, "message": r.reason}
            for r in delivery.rejected[:_MAX_REJECTIONS_SHOWN]
        ]
        answer["rejected_count"] = len(delivery.rejected)
    return answer
