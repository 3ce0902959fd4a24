"""Intuit-shaped error bodies and the JSON response helper.

The accounting API reports problems as a ``Fault`` envelope whose ``code`` is a
string and whose ``Message`` sometimes embeds the HTTP status
(``message=AuthenticationFailed; errorCode=003200; statusCode=401``). Clients
key retry and re-auth decisions off these, so they are reproduced verbatim.

Authentication and authorization failures (401/403) come from Intuit's gateway
in three shapes, all recorded from production:

* ``json`` - the capitalised ``{"Fault": {"Error": [...], "type"}, "time": "<ISO>"}``;
* ``json_lowercase`` - the gateway's serialisation of the same object, lower-case
  keys, ``element: null``, an integer ``time`` in epoch milliseconds and a row of
  null/empty sibling fields (python-quickbooks issue "quickbooks.exceptions.
  AuthorizationException", 2021; intuit/oauth-jsclient issue "Error : Response
  has an Error", 2018);
* ``xml`` - ``<IntuitResponse><Fault type="AuthenticationFault"><Error code="100">``
  "General Authentication Error" (python-quickbooks issue "Application
  authentication failed, code 100", 2018; intuit/oauth-jsclient issue "Can't
  create a customer ... AuthResponse is not JSON", 2023).

Throttling is XML whatever the ``Accept`` header says (intuit/QuickBooks-V3-PHP-SDK
issue "Throttle Limits Exceeded"; ruckus/quickbooks-ruby fixture
``spec/fixtures/too_many_requests_error.xml``).
"""

from __future__ import annotations

from typing import Any, Literal, get_args
from xml.sax.saxutils import escape

from aiohttp import web

from qbo_emulator import jsonenc
from qbo_emulator.timeutil import format_response_time

JSON_CONTENT_TYPE = "application/json"
XML_CONTENT_TYPE = "application/xml"

FaultStyle = Literal["json", "json_lowercase", "xml"]
FAULT_STYLES: frozenset[str] = frozenset(get_args(FaultStyle))

AUTHENTICATION_MESSAGE = "message=AuthenticationFailed; errorCode=003200; statusCode=401"
AUTHORIZATION_MESSAGE = "message=AuthorizationFailed; errorCode=003100; statusCode=403"
THROTTLE_DETAIL = "The request limit was reached.  Try again later"  # two spaces, as Intuit


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None, text: str | None = None
) -> web.Response:
    """A JSON response serialised with the exact-Decimal encoder (`text`: already serialised)."""
    return web.Response(
        body=jsonenc.dumps_bytes(body) if text is None else text.encode("utf-8"),
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
        AUTHENTICATION_MESSAGE,
        detail,
        now,
    )


def authorization_fault(now: float) -> dict[str, Any]:
    """A valid token used against another company (HTTP 403).

    Intuit's gateway answers this one in its lower-case envelope, with a numeric ``time`` in
    milliseconds and the other members present as null or empty, as captured from production.
    """
    return _gateway_body(
        "SERVICE",
        "3100",
        "message=ApplicationAuthorizationFailed; errorCode=003100; statusCode=403",
        None,
        now,
    )


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


def _intuit_xml(now: float, fault_type: str, code: str, message: str, detail: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<IntuitResponse xmlns="http://schema.intuit.com/finance/v3" '
        f'time="{format_response_time(now)}">'
        f'<Fault type="{fault_type}"><Error code="{code}">'
        f"<Message>{escape(message)}</Message>"
        f"<Detail>{escape(detail)}</Detail>"
        "</Error></Fault></IntuitResponse>"
    )


def throttle_xml(now: float) -> str:
    """Intuit's HTTP 429 body (XML regardless of the Accept header).

    Intuit's detail does not say which limit was hit; the emulator's throttle
    keeps its reason for its own stats, not for the body.
    """
    return _intuit_xml(
        now,
        "SERVICE",
        "3001",
        "message=ThrottleExceeded; errorCode=003001; statusCode=429",
        THROTTLE_DETAIL,
    )


def throttle_response(now: float, retry_after: int | None) -> web.Response:
    # Intuit sends no Retry-After; the header appears only when a test asks for it.
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return web.Response(
        text=throttle_xml(now), status=429, content_type=XML_CONTENT_TYPE, headers=headers
    )


def _gateway_body(
    fault_type: str, code: str, message: str, detail: str | None, now: float
) -> dict[str, Any]:
    """The gateway's lower-case serialisation, field for field as recorded."""
    return {
        "warnings": None,
        "intuitObject": None,
        "fault": {
            "error": [{"message": message, "detail": detail, "code": code, "element": None}],
            "type": fault_type,
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


def _gateway_json(
    status: int, fault_type: str, code: str, message: str, detail: str | None, now: float
) -> web.Response:
    return json_response(_gateway_body(fault_type, code, message, detail, now), status=status)


def authentication_response(detail: str, now: float, style: FaultStyle = "json") -> web.Response:
    """HTTP 401 for an expired, revoked, unknown or missing bearer token, in ``style``."""
    if style == "json_lowercase":
        return _gateway_json(401, "AUTHENTICATION", "3200", AUTHENTICATION_MESSAGE, detail, now)
    if style == "xml":
        # The XML variant carries Intuit's generic code 100, not the 3200 of the JSON ones.
        return web.Response(
            text=_intuit_xml(
                now,
                "AuthenticationFault",
                "100",
                "General Authentication Error",
                "AuthenticationErrorGeneral: SRV-110-Authentication Failure , statusCode: 401",
            ),
            status=401,
            content_type=XML_CONTENT_TYPE,
        )
    return json_response(authentication_fault(detail, now), status=401)


def authorization_response(now: float, style: FaultStyle = "json") -> web.Response:
    """HTTP 403: the token is valid but not for this company or resource, in ``style``."""
    if style == "json_lowercase":
        return _gateway_json(403, "SERVICE", "3100", AUTHORIZATION_MESSAGE, None, now)
    if style == "xml":
        return web.Response(
            text=_intuit_xml(
                now,
                "SERVICE",
                "3100",
                AUTHORIZATION_MESSAGE,
                "Token is not authorized for this realm",
            ),
            status=403,
            content_type=XML_CONTENT_TYPE,
        )
    return json_response(
        fault(
            "SERVICE", "3100", AUTHORIZATION_MESSAGE, "Token is not authorized for this realm", now
        ),
        status=403,
    )


SERVICE_UNAVAILABLE_HTML = (
    "<html><head><title>503 Service Temporarily Unavailable</title></head>"
    "<body><center><h1>503 Service Temporarily Unavailable</h1></center></body></html>"
)
