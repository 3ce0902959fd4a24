"""Test-only admin API under ``/_emulator`` (no auth, never throttled or faulted).

Mutations go through the same ``RealmBooks`` methods as the Python API, so
they bump ``SyncToken``/``LastUpdatedTime``, land in the CDC log and trigger
webhooks exactly like a change made in the QuickBooks UI would.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any

from aiohttp import web

from qbo_emulator import intuit_errors, jsonenc
from qbo_emulator.books import CUSTOMER, INVOICE, PAYMENT, BooksError, NotFoundError
from qbo_emulator.faults import FaultConfigError, FaultRule
from qbo_emulator.intuit_errors import json_response
from qbo_emulator.keys import STATE_KEY

PREFIX = "/_emulator"
Handler = Callable[[web.Request], Awaitable[web.Response]]


class _BadRequest(Exception):
    pass


def setup(app: web.Application) -> None:
    r = app.router
    realm = PREFIX + "/realms/{realm_id}"
    r.add_get(PREFIX + "/health", health)
    r.add_post(realm + "/customers", _wrap(create_customer))
    r.add_get(realm + "/customers/{entity_id}", _wrap(get_customer))
    r.add_post(realm + "/customers/{entity_id}", _wrap(update_customer))
    r.add_post(realm + "/customers/{entity_id}/merge", _wrap(merge_customer))
    r.add_post(realm + "/invoices", _wrap(create_invoice))
    r.add_get(realm + "/invoices/{entity_id}", _wrap(get_invoice))
    r.add_post(realm + "/invoices/{entity_id}", _wrap(update_invoice))
    r.add_post(realm + "/invoices/{entity_id}/void", _wrap(void_invoice))
    r.add_delete(realm + "/invoices/{entity_id}", _wrap(delete_invoice))
    r.add_post(realm + "/payments", _wrap(create_payment))
    r.add_post(realm + "/seed", _wrap(seed))
    r.add_get(PREFIX + "/faults", get_faults)
    r.add_post(PREFIX + "/faults", _wrap(set_faults))
    r.add_delete(PREFIX + "/faults", clear_faults)
    r.add_get(PREFIX + "/stats", stats)
    r.add_post(PREFIX + "/reset", reset)
    r.add_get(PREFIX + "/webhooks", get_webhooks)
    r.add_post(PREFIX + "/webhooks", _wrap(set_webhooks))
    r.add_post(PREFIX + "/webhooks/flush", flush_webhooks)
    r.add_post(PREFIX + "/tokens/expire", _wrap(expire_tokens))
    r.add_post(PREFIX + "/tokens/issue", _wrap(issue_tokens))


def _wrap(handler: Handler) -> Handler:
    """Translate domain errors into Intuit-shaped (books) or plain (admin) 4xx bodies."""

    async def wrapped(request: web.Request) -> web.Response:
        state = request.app[STATE_KEY]
        try:
            return await handler(request)
        except NotFoundError as exc:
            return json_response(
                intuit_errors.object_not_found_fault(exc.entity, exc.entity_id, state.clock()),
                status=404,
            )
        except BooksError as exc:
            return json_response(
                intuit_errors.validation_fault(
                    exc.code, exc.message, exc.detail, state.clock(), exc.element
                ),
                status=400,
            )
        except (_BadRequest, FaultConfigError, ValueError) as exc:
            return json_response({"error": str(exc)}, status=400)

    return wrapped


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        payload = jsonenc.loads(raw)
    except ValueError as exc:
        raise _BadRequest(f"body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise _BadRequest("body must be a JSON object")
    return payload


def _unwrap(payload: Mapping[str, Any], entity: str) -> Mapping[str, Any]:
    """Accept both ``{...fields}`` and QBO's ``{"Invoice": {...fields}}``."""
    inner = payload.get(entity)
    return inner if isinstance(inner, Mapping) else payload


async def health(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def create_customer(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    fields = _unwrap(await _body(request), CUSTOMER)
    created = state.create_customer(request.match_info["realm_id"], fields)
    return json_response({CUSTOMER: created}, status=201)


async def get_customer(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    found = state.get_customer(request.match_info["realm_id"], request.match_info["entity_id"])
    return json_response({CUSTOMER: found})


async def update_customer(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    fields = _unwrap(await _body(request), CUSTOMER)
    updated = state.update_customer(
        request.match_info["realm_id"], request.match_info["entity_id"], fields
    )
    return json_response({CUSTOMER: updated})


async def merge_customer(request: web.Request) -> web.Response:
    """Merge the customer into ``{"into": <survivor id>}``, as renaming it to the survivor's
    name does in QBO. ``?notify=false`` loses the Merge webhook (CDC still sees the changes)."""
    state = request.app[STATE_KEY]
    payload = await _body(request)
    survivor = payload.get("into")
    if not isinstance(survivor, str) or not survivor:
        raise _BadRequest("into must be the surviving customer's Id")
    merged = state.merge_customers(
        request.match_info["realm_id"],
        request.match_info["entity_id"],
        survivor,
        notify=_notify(request),
    )
    return json_response(merged)


def _notify(request: web.Request) -> bool:
    """``?notify=false`` makes a change whose webhook is lost (CDC and reads still see it)."""
    value = request.query.get("notify", "true").lower()
    if value not in {"true", "false"}:
        raise _BadRequest("notify must be true or false")
    return value == "true"


async def create_invoice(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    fields = _unwrap(await _body(request), INVOICE)
    created = state.create_invoice(request.match_info["realm_id"], fields)
    return json_response({INVOICE: created}, status=201)


async def create_payment(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    fields = _unwrap(await _body(request), PAYMENT)
    created = state.create_payment(request.match_info["realm_id"], fields)
    return json_response({PAYMENT: created}, status=201)


async def get_invoice(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    found = state.get_invoice(request.match_info["realm_id"], request.match_info["entity_id"])
    return json_response({INVOICE: found})


async def update_invoice(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    fields = _unwrap(await _body(request), INVOICE)
    updated = state.update_invoice(
        request.match_info["realm_id"], request.match_info["entity_id"], fields, _notify(request)
    )
    return json_response({INVOICE: updated})


async def void_invoice(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    voided = state.void_invoice(request.match_info["realm_id"], request.match_info["entity_id"])
    return json_response({INVOICE: voided})


async def delete_invoice(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    deleted = state.delete_invoice(
        request.match_info["realm_id"], request.match_info["entity_id"], _notify(request)
    )
    return json_response({INVOICE: deleted})


def _int(payload: Mapping[str, Any], key: str, default: int) -> int:
    value = payload.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _BadRequest(f"{key} must be an integer")
    return value


async def seed(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    payload = await _body(request)
    names = payload.get("customer_names")
    if names is not None and (
        not isinstance(names, list) or not all(isinstance(n, str) for n in names)
    ):
        raise _BadRequest("customer_names must be a list of strings")
    result = state.seed(
        request.match_info["realm_id"],
        _int(payload, "customers", 0),
        _int(payload, "invoices_per_customer", 0),
        names,
        notify=bool(payload.get("notify", False)),
    )
    return json_response(result)


async def get_faults(request: web.Request) -> web.Response:
    faults = request.app[STATE_KEY].faults
    return json_response(
        {"seed": faults.seed, "rules": [r.to_dict() for r in faults.rules], "fired": faults.fired}
    )


async def set_faults(request: web.Request) -> web.Response:
    """Body: ``{"rules": [...], "seed": 1, "append": false}`` or a single rule object."""
    state = request.app[STATE_KEY]
    payload = await _body(request)
    raw_rules: Any = payload.get("rules")
    if raw_rules is None and "kind" in payload:
        raw_rules = [payload]
    if not isinstance(raw_rules, list) or not all(isinstance(r, dict) for r in raw_rules):
        raise _BadRequest("rules must be a list of objects")
    seed_value = payload.get("seed")
    if seed_value is not None and (isinstance(seed_value, bool) or not isinstance(seed_value, int)):
        raise _BadRequest("seed must be an integer")
    rules = [FaultRule.from_dict(r) for r in raw_rules]
    state.set_faults(rules, seed=seed_value, append=bool(payload.get("append", False)))
    return await get_faults(request)


async def clear_faults(request: web.Request) -> web.Response:
    request.app[STATE_KEY].faults.clear()
    return json_response({"rules": []})


async def stats(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    body = state.stats.to_dict()
    counters = state.webhooks.counters
    body["webhooks"] = {
        "queued": counters.queued,
        "deliveries": counters.deliveries,
        "events_sent": counters.events_sent,
        "dropped": counters.dropped,
        "failed": counters.failed,
        "pending": len(state.webhooks.pending),
    }
    body["books"] = {
        realm_id: {"customers": books.count(CUSTOMER), "invoices": books.count(INVOICE)}
        for realm_id, books in state.realms.items()
    }
    return json_response(body)


async def reset(request: web.Request) -> web.Response:
    request.app[STATE_KEY].reset()
    return json_response({"status": "reset"})


async def get_webhooks(request: web.Request) -> web.Response:
    hooks = request.app[STATE_KEY].webhooks
    return json_response(
        {
            "settings": hooks.settings.to_dict(),
            "deliveries": [d.to_dict() for d in hooks.deliveries],
        }
    )


_WEBHOOK_FIELDS: dict[str, type | tuple[type, ...]] = {
    "url": (str, type(None)),
    "format": str,
    "enabled": bool,
    "drop_next": int,
    "drop_probability": (int, float, Decimal),
    "flush_interval_s": (int, float, Decimal),
    "max_batch": int,
    "timeout_s": (int, float, Decimal),
}


async def set_webhooks(request: web.Request) -> web.Response:
    """Body: ``{"url": ..., "format": "legacy"|"cloudevents", "enabled": true, ...}``."""
    state = request.app[STATE_KEY]
    payload = await _body(request)
    changes: dict[str, Any] = {}
    for key, value in payload.items():
        if key == "seed":
            state.webhooks.reseed(None if value is None else int(value))
            continue
        expected = _WEBHOOK_FIELDS.get(key)
        if expected is None:
            raise _BadRequest(f"unknown webhook setting {key!r}")
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            raise _BadRequest(f"bad value for {key!r}")
        if isinstance(value, Decimal):
            value = float(value)
        changes[key] = value
    state.configure_webhooks(**changes)
    return await get_webhooks(request)


async def flush_webhooks(request: web.Request) -> web.Response:
    """Wait until queued notifications have been sent (or dropped)."""
    state = request.app[STATE_KEY]
    await state.webhooks.wait_idle()
    return json_response({"pending": len(state.webhooks.pending)})


async def expire_tokens(request: web.Request) -> web.Response:
    """Body: ``{"realm_id": "...", "refresh_tokens": false}``; no realm = all realms."""
    state = request.app[STATE_KEY]
    payload = await _body(request)
    realm_id = payload.get("realm_id") or request.query.get("realm_id")
    realm = None if realm_id is None else str(realm_id)
    result = {"access_tokens": state.expire_access_tokens(realm)}
    if payload.get("refresh_tokens"):
        result["refresh_tokens"] = state.expire_refresh_tokens(realm)
    return json_response(result)


async def issue_tokens(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    payload = await _body(request)
    realm_id = payload.get("realm_id")
    return json_response(state.issue_tokens(None if realm_id is None else str(realm_id)))
