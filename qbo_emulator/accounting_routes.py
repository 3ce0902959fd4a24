"""Accounting API v3: query, read by Id, change data capture.

Every call needs a bearer token issued for the realm in the path (401 with the
``AuthenticationFailed`` fault otherwise, 403 for another realm's token, in the
body style the emulator is configured for). ``minorversion`` below 75, missing or
unreadable is served as 75: Intuit retired minor versions 1-74 on 2025-08-01 and
serves such requests with 75 rather than refusing them (developer.intuit.com,
"Minor versions of our API"; Intuit blog "Changes to our Accounting API that may
impact your application", 2025-01-21). What a client sent is counted in
``stats.minor_versions`` so a test can still see that it asks for 75.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from qbo_emulator import intuit_errors, jsonenc
from qbo_emulator.books import CUSTOMER, ENTITY_TYPES, INVOICE, PAYMENT, NotFoundError
from qbo_emulator.intuit_errors import json_response
from qbo_emulator.keys import ROWS_KEY, STATE_KEY
from qbo_emulator.query import QueryParseError, QueryValidationError, parse_query
from qbo_emulator.query_exec import execute
from qbo_emulator.state import EmulatorState
from qbo_emulator.timeutil import format_response_time, parse_datetime

MIN_MINOR_VERSION = 75
CDC_MAX_LOOKBACK_S = 30 * 24 * 3600
CDC_MAX_OBJECTS = 1000

#: Entities Intuit's CDC accepts (Intuit's ChangeDataCapture reference: every
#: entity except JournalCode, TimeActivity, TaxAgency, TaxCode and TaxRate). The
#: emulator keeps books only for ENTITY_TYPES; the others always come back empty.
CDC_ENTITIES: tuple[str, ...] = (
    "Account",
    "Bill",
    "BillPayment",
    "Budget",
    "Class",
    "CreditMemo",
    "Customer",
    "Department",
    "Deposit",
    "Employee",
    "Estimate",
    "Invoice",
    "Item",
    "JournalEntry",
    "Payment",
    "PaymentMethod",
    "Purchase",
    "PurchaseOrder",
    "RefundReceipt",
    "SalesReceipt",
    "Term",
    "Transfer",
    "Vendor",
    "VendorCredit",
)


def setup(app: web.Application) -> None:
    company = "/v3/company/{realm_id}"
    app.router.add_get(company + "/query", query, name="qbo.query")
    app.router.add_post(company + "/query", query, name="qbo.query_post")
    app.router.add_get(company + "/invoice/{entity_id}", read_invoice, name="qbo.read.invoice")
    app.router.add_get(company + "/customer/{entity_id}", read_customer, name="qbo.read.customer")
    app.router.add_get(company + "/payment/{entity_id}", read_payment, name="qbo.read.payment")
    app.router.add_get(company + "/cdc", cdc, name="qbo.cdc")
    app.router.add_get(
        company + "/companyinfo/{company_id}", read_company_info, name="qbo.read.companyinfo"
    )


def _guard(request: web.Request, state: EmulatorState, realm_id: str) -> web.Response | None:
    """Authentication, then minorversion - the order Intuit's gateway applies."""
    now = state.clock()
    check = state.tokens.check_access(request.headers.get("Authorization"), realm_id)
    if not check.ok:
        if check.status == 403:
            # Always the lower-case body recorded for another company's token.
            return json_response(intuit_errors.authorization_fault(now), status=403)
        return intuit_errors.authentication_response(check.detail, now, state.config.auth_style)
    state.stats.record_minor_version(request.query.get("minorversion"))
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
    answer = _envelope(state, {"QueryResponse": result})
    return json_response(answer, text=await jsonenc.dumps_in_slices(answer))


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


async def read_payment(request: web.Request) -> web.Response:
    return await _read(request, PAYMENT)


async def read_company_info(request: web.Request) -> web.Response:
    """``GET /v3/company/{realm}/companyinfo/{realm}``: the company's own record.

    Apps read it right after consent to learn the company's name; a token of another company
    gets the 403 above, which is how a client proves a token belongs to a realm.
    """
    state = request.app[STATE_KEY]
    realm_id = request.match_info["realm_id"]
    denied = _guard(request, state, realm_id)
    if denied is not None:
        return denied
    if request.match_info["company_id"] != realm_id:
        return json_response(
            intuit_errors.object_not_found_fault(
                "CompanyInfo", request.match_info["company_id"], state.clock()
            ),
            status=400,
        )
    books = state.realm(realm_id)
    info = {
        "CompanyName": books.company_name,
        "LegalName": books.company_name,
        "Country": "US",
        "SupportedLanguages": "en",
        "domain": "QBO",
        "sparse": False,
        "Id": "1",
        "SyncToken": "0",
        "MetaData": {"CreateTime": books.created_text, "LastUpdatedTime": books.created_text},
    }
    return json_response(_envelope(state, {"CompanyInfo": info}))


async def cdc(request: web.Request) -> web.Response:
    """Change data capture: at most 1000 objects per entity, 30 days back at most."""
    state = request.app[STATE_KEY]
    realm_id = request.match_info["realm_id"]
    denied = _guard(request, state, realm_id)
    if denied is not None:
        return denied
    now = state.clock()
    names = [n.strip() for n in request.query.get("entities", "").split(",") if n.strip()]
    canonical = {e.lower(): e for e in CDC_ENTITIES}
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
    kept = [e for e in entities if e in ENTITY_TYPES]
    changes = state.realm(realm_id).cdc(kept, since, CDC_MAX_OBJECTS)
    # One QueryResponse per entity asked for, in the order asked; an entity with
    # no changes is an empty object. Intuit's CDC pages carry startPosition and
    # maxResults but no totalCount (python-quickbooks tests/unit/test_cdc.py).
    responses: list[dict[str, Any]] = []
    request[ROWS_KEY] = sum(len(rows) for rows in changes.values())
    for entity in entities:
        rows = changes.get(entity)
        if rows:
            responses.append({entity: rows, "startPosition": 1, "maxResults": len(rows)})
        else:
            responses.append({})
    answer = _envelope(state, {"CDCResponse": [{"QueryResponse": responses}]})
    return json_response(answer, text=await jsonenc.dumps_in_slices(answer, levels=5))


def _cdc_fault(detail: str, now: float, element: str) -> web.Response:
    return json_response(
        intuit_errors.validation_fault(
            "2010", "Request has invalid or unsupported property", detail, now, element=element
        ),
        status=400,
    )
