"""Cross-cutting request handling: ``intuit_tid``, counters, throttle, faults.

Order matters and mirrors production: the per-realm throttle admits the
request first (so an injected ``slow`` fault occupies a concurrency slot, the
way a slow Intuit backend does), then any fault rule may take over, then the
handler runs. Admin routes (``/_emulator``) bypass all of it.
"""

from __future__ import annotations

import asyncio
import secrets

from aiohttp import web
from aiohttp.typedefs import Handler

from qbo_emulator import intuit_errors
from qbo_emulator.faults import FaultRule
from qbo_emulator.keys import ROWS_KEY, STATE_KEY
from qbo_emulator.state import EmulatorState

ADMIN_PREFIX = "/_emulator"
ACCOUNTING_PREFIX = "/v3/company/"
TID_HEADER = "intuit_tid"

MALFORMED_JSON = b'{"QueryResponse":{"Invoice":[{"Id":"1","SyncToken":"0","TotalAmt":12'


def new_tid(now: float) -> str:
    """Intuit transaction ids look like ``1-6743f0a1-3c5e9d2b7a18f04e6d9c1b20``."""
    return f"1-{int(now) & 0xFFFFFFFF:08x}-{secrets.token_hex(12)}"


@web.middleware
async def intuit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    if request.path.startswith(ADMIN_PREFIX):
        return await handler(request)
    tid = new_tid(state.clock())
    realm_id = request.match_info.get("realm_id")
    route_name = request.match_info.route.name
    if route_name and route_name.startswith("qbo."):
        state.stats.record_request(realm_id, route_name[4:].removesuffix("_post"))
    throttled = realm_id is not None and request.path.startswith(ACCOUNTING_PREFIX)
    try:
        if throttled:
            assert realm_id is not None
            decision = state.throttle.try_acquire(realm_id)
            if not decision.allowed:
                state.stats.record_throttled(realm_id)
                # Intuit sends no Retry-After with a throttling 429.
                response: web.StreamResponse = intuit_errors.throttle_response(state.clock(), None)
                response.headers[TID_HEADER] = tid
                return response
        try:
            response = await _handle(request, handler, state, realm_id)
            if throttled:
                # Inside the throttle slot: a slow answer holds a concurrency slot, as at Intuit.
                await _latency(request, state)
        finally:
            if throttled:
                assert realm_id is not None
                state.throttle.release(realm_id)
    except web.HTTPException as exc:
        exc.headers[TID_HEADER] = tid
        raise
    response.headers[TID_HEADER] = tid
    return response


async def _latency(request: web.Request, state: EmulatorState) -> None:
    delay = state.latency_s(request.get(ROWS_KEY, 0))
    if delay > 0:
        await asyncio.sleep(delay)


async def _handle(
    request: web.Request, handler: Handler, state: EmulatorState, realm_id: str | None
) -> web.StreamResponse:
    rule = state.faults.pick(request.path, realm_id)
    if rule is None:
        return await handler(request)
    state.stats.record_fault(rule.kind)
    if rule.kind == "slow":
        await asyncio.sleep(rule.delay_s)
        return await handler(request)
    return await _fault_response(request, rule, state)


async def _fault_response(
    request: web.Request, rule: FaultRule, state: EmulatorState
) -> web.StreamResponse:
    now = state.clock()
    if rule.kind == "401":
        style = rule.body or state.config.auth_style
        return intuit_errors.authentication_response("Token expired: injected fault", now, style)
    if rule.kind == "403":
        return intuit_errors.authorization_response(now, rule.body or state.config.auth_style)
    if rule.kind == "429":
        return intuit_errors.throttle_response(now, rule.retry_after)
    if rule.kind == "500":
        return intuit_errors.json_response(intuit_errors.system_fault(now), status=500)
    if rule.kind == "503":
        headers = {"Retry-After": str(rule.retry_after)} if rule.retry_after is not None else None
        return web.Response(
            text=intuit_errors.SERVICE_UNAVAILABLE_HTML,
            status=503,
            content_type="text/html",
            headers=headers,
        )
    if rule.kind == "malformed_json":
        return web.Response(body=MALFORMED_JSON, status=200, content_type="application/json")
    # drop_connection: vanish without a status line, like a reset TCP connection.
    # aiohttp then fails to write the placeholder below and quietly moves on.
    transport = request.transport
    if transport is not None:
        transport.abort()
    return web.Response(status=500, text="connection dropped")
