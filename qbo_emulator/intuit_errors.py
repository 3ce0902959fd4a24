"""Intuit-shaped error bodies and the JSON response helper.

The accounting API reports problems as a ``Fault`` envelope whose ``code`` is a
string and whose ``Message`` sometimes embeds the HTTP status
(``message=AuthenticationFailed; errorCode=003200; statusCode=401``). Clients
key retry and re-auth decisions off these, so they are reproduced verbatim.
Throttling is the odd one out: Intuit's gateway answers 429 in XML even when the
client asked for JSON.
"""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape

from aiohttp import web

from qbo_emulator import jsonenc
from qbo_emulator.timeutil import format_response_time

JSON_CONTENT_TYPE = "application/json"


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON response serialised with the exact-Decimal encoder."""
    return web.Response(
        body=jsonenc.dumps_bytes(body),
        status=status,
        content_type=JSON_CONTENT_TYPE,
        charset="utf-8",
        headers=headers,
    )


def fault(
    fault_type: str, code: str, message: str, detail: str, now: float, element: str | None = None
) -> dict[str, Any]:
    """A single-error ``Fault`` envelope as the v3 API returns it."""
    error: dict[str, Any] = {"Message": message, "Detail": detail, "code": code}
    if element is not None:
        error["element"] = element
    return {"Fault": {"Error": [error], "type": fault_type}, "time": format_response_time(now)}


def authentication_fault(detail: str, now: float) -> dict[str, Any]:
    """What an expired, revoked or unknown bearer token gets (HTTP 401)."""
    return fault(
        "AUTHENTICATION",
        "3200",
        "message=AuthenticationFailed; errorCode=003200; statusCode=401",
        detail,
        now,
    )


def authorization_fault(now: float) -> dict[str, Any]:
    """A valid token used against another company (HTTP 403).

    Intuit's gateway answers this one in its lower-case envelope, with a numeric ``time`` in
    milliseconds and the other members present as null or empty, as captured from production.
    """
    return {
        "warnings": None,
        "intuitObject": None,
        "fault": {
            "error": [
                {
                    "message": "message=ApplicationAuthorizationFailed; errorCode=003100; "
                    "statusCode=403",
                    "detail": None,
                    "code": "3100",
                    "element": None,
                }
            ],
            "type": "SERVICE",
        },
        "report": None,
        "queryResponse": None,
        "batchItemResponse": [],
        "attachableResponse": [],
        "syncErrorResponse": None,
        "requestId": None,
        "time": int(now * 1000),
        "status": None,
        "cdcresponse": [],
    }


def validation_fault(
    code: str, message: str, detail: str, now: float, element: str | None = None
) -> dict[str, Any]:
    """Request-level problems (bad query, missing object, stale SyncToken) - HTTP 400."""
    return fault("ValidationFault", code, message, detail, now, element)


def query_parse_fault(detail: str, now: float) -> dict[str, Any]:
    return validation_fault("4000", "Error parsing query", f"QueryParserError: {detail}", now)


def query_validation_fault(detail: str, now: float) -> dict[str, Any]:
    return validation_fault("4001", "Invalid query", f"QueryValidationError: {detail}", now)


def object_not_found_fault(entity: str, entity_id: str, now: float) -> dict[str, Any]:
    return validation_fault(
        "610",
        "Object Not Found",
        f"Object Not Found : Something you're trying to use has been made inactive. "
        f"Check the fields with accounts, customers, items, vendors or employees. "
        f"({entity} Id={entity_id})",
        now,
    )


def system_fault(now: float) -> dict[str, Any]:
    """Generic HTTP 500 body."""
    return fault(
        "SystemFault",
        "10000",
        "An application error has occurred while processing your request",
        "System Failure Error: An unexpected error occurred while accessing or saving your data.",
        now,
    )


def throttle_xml(detail: str, now: float) -> str:
    """Intuit's HTTP 429 body (XML regardless of the Accept header)."""
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<IntuitResponse xmlns="http://schema.intuit.com/finance/v3" '
        f'time="{format_response_time(now)}">'
        '<Fault type="SERVICE"><Error code="3001">'
        "<Message>message=ThrottleExceeded; errorCode=003001; statusCode=429</Message>"
        f"<Detail>{escape(detail)}</Detail>"
        "</Error></Fault></IntuitResponse>"
    )


def throttle_response(detail: str, now: float, retry_after: int | None) -> web.Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return web.Response(
        text=throttle_xml(detail, now),
        status=429,
        content_type="application/xml",
        headers=headers,
    )


SERVICE_UNAVAILABLE_HTML = (
    "<html><head><title>503 Service Temporarily Unavailable</title></head>"
    "<body><center><h1>503 Service Temporarily Unavailable</h1></center></body></html>"
)
