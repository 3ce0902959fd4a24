"""Accounting API v3: query, read by Id, change data capture.

Every call needs a bearer token issued for the realm in the path (401 with the
``AuthenticationFailed`` fault otherwise, 403 for another realm's token) and
``minorversion`` >= 75: Intuit retired minor versions 1-74 in 2025, and the
emulator rejects them outright so a client that forgets the parameter is
caught in tests rather than silently served an old schema.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from qbo_emulator import intuit_errors
from qbo_emulator.books import CUSTOMER, ENTITY_TYPES, INVOICE, NotFoundError
from qbo_emulator.intuit_errors import json_response
from qbo_emulator.keys import ROWS_KEY, STATE_KEY
from qbo_emulator.query import QueryParseError, QueryValidationError, parse_query
from qbo_emulator.query_exec import execute
from qbo_emulator.state import EmulatorState
from qbo_emulator.timeutil import format_response_time, parse_datetime

MIN_MINOR_VERSION = 75
CDC_MAX_LOOKBACK_S = 30 * 24 * 3600
CDC_MAX_OBJECTS = 1000


def setup(app: web.Application) -> None:
    company = "/v3/company/{realm_id}"
    app.router.add_get(company + "/query", query, name="qbo.query")
    app.router.add_post(company + "/query", query, name="qbo.query_post")
    app.router.add_get(company + "/invoice/{entity_id}", read_invoice, name="qbo.read.invoice")
    app.router.add_get(company + "/customer/{entity_id}", read_customer, name="qbo.read.customer")
    app.router.add_get(company + "/cdc", cdc, name="qbo.cdc")


def _guard(request: web.Request, state: EmulatorState, realm_id: str) -> web.Response | None:
    """Authentication, then minorversion - the order Intuit's gateway applies."""
    now = state.clock()
    check = state.tokens.check_access(request.headers.get("Authorization"), realm_id)
    if not check.ok:
        if check.status == 403:
            return json_response(intuit_errors.authorization_fault(now), status=403)
        return json_response(intuit_errors.authentication_fault(check.detail, now), status=401)
    raw = request.query.get("minorversion")
    version: int | None
    try:
        version = int(raw) if raw is not None else None
    except ValueError:
        version = None
    if version is None or version < MIN_MINOR_VERSION:
        shown = "missing" if raw is None else repr(raw)
        return json_response(
            intuit_errors.validation_fault(
                "2010",
                "Request has invalid or unsupported property",
                f"minorversion is {shown}; minor versions below {MIN_MINOR_VERSION} are no "
                f"longer supported, send minorversion={MIN_MINOR_VERSION} or later",
                now,
                element="minorversion",
            ),
            status=400,
        )
    return None


def _envelope(state: EmulatorState, body: dict[str, Any]) -> dict[str, Any]:
    body["time"] = format_response_time(state.clock())
    return body


async def query(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    realm_id = request.match_info["realm_id"]
    denied = _guard(request, state, realm_id)
    if denied is not None:
        return denied
    text = request.query.get("query")
    if request.method == "POST" and not text:
        text = (await request.text()).strip()
    now = state.clock()
    try:
        parsed = parse_query(text or "")
        result = execute(state.realm(realm_id), parsed)
    except QueryParseError as exc:
        return json_response(intuit_errors.query_parse_fault(exc.detail, now), status=400)
    except QueryValidationError as exc:
        return json_response(intuit_errors.query_validation_fault(exc.detail, now), status=400)
    request[ROWS_KEY] = sum(len(v) for v in result.values() if isinstance(v, list))
    return json_response(_envelope(state, {"QueryResponse": result}))


async def _read(request: web.Request, entity: str) -> web.Response:
    state = request.app[STATE_KEY]
    realm_id = request.match_info["realm_id"]
    denied = _guard(request, state, realm_id)
    if denied is not None:
        return denied
    try:
        stored = state.realm(realm_id).get_stored(entity, request.match_info["entity_id"])
    except NotFoundError as exc:
        return json_response(
            intuit_errors.object_not_found_fault(exc.entity, exc.entity_id, state.clock()),
            status=400,
        )
    return json_response(_envelope(state, {entity: stored.data}))


async def read_invoice(request: web.Request) -> web.Response:
    return await _read(request, INVOICE)


async def read_customer(request: web.Request) -> web.Response:
    return await _read(request, CUSTOMER)


async def cdc(request: web.Request) -> web.Response:
    """Change data capture: at most 1000 objects per entity, 30 days back at most."""
    state = request.app[STATE_KEY]
    realm_id = request.match_info["realm_id"]
    denied = _guard(request, state, realm_id)
    if denied is not None:
        return denied
    now = state.clock()
    names = [n.strip() for n in request.query.get("entities", "").split(",") if n.strip()]
    canonical = {e.lower(): e for e in ENTITY_TYPES}
    entities: list[str] = []
    for name in names:
        entity = canonical.get(name.lower())
        if entity is None:
            return _cdc_fault(f"entities: {name} is not supported for CDC", now, "entities")
        if entity not in entities:
            entities.append(entity)
    if not entities:
        return _cdc_fault("entities is required", now, "entities")
    changed_since = request.query.get("changedSince")
    if not changed_since:
        return _cdc_fault("changedSince is required", now, "changedSince")
    try:
        since = parse_datetime(changed_since)
    except ValueError:
        return _cdc_fault(f"changedSince {changed_since!r} is not a date-time", now, "changedSince")
    if since < now - CDC_MAX_LOOKBACK_S:
        return _cdc_fault("changedSince must be within the last 30 days", now, "changedSince")
    changes = state.realm(realm_id).cdc(entities, since, CDC_MAX_OBJECTS)
    responses: list[dict[str, Any]] = []
    request[ROWS_KEY] = sum(len(changes[entity]) for entity in entities)
    for entity in entities:
        rows = changes[entity]
        if rows:
            responses.append(
                {
                    entity: rows,
                    "startPosition": 1,
                    "maxResults": len(rows),
                    "totalCount": len(rows),
                }
            )
        else:
            responses.append({})
    return json_response(_envelope(state, {"CDCResponse": [{"QueryResponse": responses}]}))


def _cdc_fault(detail: str, now: float, element: str) -> web.Response:
    return json_response(
        intuit_errors.validation_fault(
            "2010", "Request has invalid or unsupported property", detail, now, element=element
        ),
        status=400,
    )
