"""The api's OpenAPI 3.1 document, written as data and served at `/openapi.json`.

Component schemas are JSON Schema 2020-12 (OpenAPI 3.1 uses it as is), so tests validate real
responses against `#/components/schemas/...` with `jsonschema`, and schemathesis fuzzes the
routes from this document. Keep it in step with `routes.py`: a test fails when they drift.
"""

from __future__ import annotations

from typing import Any

from services.api.listing import DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET, SORTS, STATUSES
from services.common.statuses import CommandStatus, ConnectionStatus, InvoiceStatus

LOCAL_CUSTOMER_ID_PATTERN = r"^[A-Za-z0-9._:@-]{1,128}$"
COMMAND_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"
COMMAND_STATUSES = [s.value for s in CommandStatus]
CONNECTION_STATUSES = [s.value for s in ConnectionStatus]
INVOICE_STATUSES = [s.value for s in InvoiceStatus]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(description: str, schema: str, headers: dict[str, Any] | None = None) -> Any:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": _ref(schema)}},
    }
    if headers:
        response["headers"] = headers
    return response


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


_MONEY = {
    "type": "number",
    "description": "An exact decimal amount; parse it as a decimal, never a binary float.",
}
_DATE = {"type": "string", "format": "date"}
_TIMESTAMP = {"type": "string", "format": "date-time"}

_ERRORS = {
    "400": _json("Malformed input (path, query, header or body).", "Error"),
    "401": _json(
        "Missing or wrong bearer token.",
        "Error",
        {"WWW-Authenticate": {"schema": {"type": "string"}}},
    ),
    "500": _json("Unexpected failure; the body carries no internals.", "Error"),
    "503": _json(
        "MongoDB or Kafka does not answer; retry after Retry-After seconds.",
        "Error",
        {"Retry-After": {"schema": {"type": "string"}}},
    ),
}
_NOT_FOUND = _json("Unknown customer or command.", "Error")

_CUSTOMER_PARAM = {
    "name": "localCustomerId",
    "in": "path",
    "required": True,
    "description": "The customer's id in the host application.",
    "schema": {"type": "string", "pattern": LOCAL_CUSTOMER_ID_PATTERN},
    "example": "cust-42",
}
_SECURED: list[dict[str, list[str]]] = [{"bearerAuth": []}]

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "qbo-sync read API",
        "version": "1.0.0",
        "description": (
            "Invoices of your customers as last seen in QuickBooks Online, the refresh "
            "command, and the status of each customer's QBO connection. Amounts are exact "
            "JSON numbers. Every /api route needs `Authorization: Bearer <token>`; in local "
            "development the token `dev-token` is accepted when API_TOKENS is empty."
        ),
    },
    "servers": [{"url": "/"}],
    "components": {
        "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error", "message"],
                "properties": {
                    "error": {"type": "string", "description": "A stable, machine-read code."},
                    "message": {"type": "string"},
                },
                "additionalProperties": False,
            },
            "Invoice": {
                "type": "object",
                "required": [
                    "invoice_id",
                    "realm_id",
                    "qbo_customer_id",
                    "doc_number",
                    "txn_date",
                    "due_date",
                    "currency",
                    "total_amt",
                    "balance",
                    "exchange_rate",
                    "home_total_amt",
                    "home_balance",
                    "status",
                    "overdue",
                    "partially_paid",
                    "deleted",
                    "version",
                    "last_updated_time",
                ],
                "properties": {
                    "invoice_id": {"type": "string"},
                    "realm_id": {"type": "string"},
                    "qbo_customer_id": _nullable({"type": "string"}),
                    "doc_number": _nullable({"type": "string"}),
                    "txn_date": _nullable(_DATE),
                    "due_date": _nullable(_DATE),
                    "currency": _nullable(
                        {
                            "type": "string",
                            "pattern": "^[A-Z]{3}$",
                            "description": "The currency of total_amt and balance.",
                        }
                    ),
                    "total_amt": _MONEY,
                    "balance": _MONEY,
                    "exchange_rate": _nullable(
                        {
                            "type": "number",
                            "exclusiveMinimum": 0,
                            "description": (
                                "Multicurrency companies only: home-currency units per one "
                                "unit of `currency`, as recorded on the invoice in QBO. Null "
                                "when QBO sent none."
                            ),
                        }
                    ),
                    "home_total_amt": _nullable(
                        {
                            **_MONEY,
                            "description": (
                                "total_amt in the company's home currency, as QBO computed it "
                                "(invoices in a foreign currency of a multicurrency company). "
                                "Null: total_amt is already in the home currency."
                            ),
                        }
                    ),
                    "home_balance": _nullable(
                        {
                            **_MONEY,
                            "description": (
                                "balance in the company's home currency, as QBO computed it. "
                                "Null: balance is already in the home currency."
                            ),
                        }
                    ),
                    "status": {"enum": INVOICE_STATUSES},
                    "overdue": {
                        "type": "boolean",
                        "description": "Open with a due date before today (UTC).",
                    },
                    "partially_paid": {
                        "type": "boolean",
                        "description": (
                            "Open with a payment applied: 0 < balance < total_amt. Independent "
                            "of `overdue` (an invoice may be both); `status` stays `open`."
                        ),
                    },
                    "deleted": {"type": "boolean"},
                    "version": {"type": "integer", "minimum": 0},
                    "last_updated_time": _nullable(_TIMESTAMP),
                },
                "additionalProperties": False,
            },
            "Totals": {
                "type": "object",
                "description": (
                    "Over every invoice the filter matches, not only this page. `count` counts "
                    "them all; the amounts leave out voided and deleted invoices. `currency` is "
                    "null when the invoices disagree."
                ),
                "required": ["count", "total_amt", "balance", "overdue_balance", "currency"],
                "properties": {
                    "count": {"type": "integer", "minimum": 0},
                    "total_amt": _MONEY,
                    "balance": _MONEY,
                    "overdue_balance": _MONEY,
                    "currency": _nullable({"type": "string"}),
                },
                "additionalProperties": False,
            },
            "Page": {
                "type": "object",
                "required": ["limit", "offset", "next_cursor", "has_more"],
                "properties": {
                    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                    "offset": {"type": "integer", "minimum": 0},
                    "next_cursor": _nullable({"type": "string"}),
                    "has_more": {"type": "boolean"},
                },
                "additionalProperties": False,
            },
            "InvoiceList": {
                "type": "object",
                "required": [
                    "customer_id",
                    "status",
                    "sort",
                    "as_of",
                    "invoices",
                    "totals",
                    "page",
                ],
                "properties": {
                    "customer_id": {"type": "string", "pattern": LOCAL_CUSTOMER_ID_PATTERN},
                    "status": {"enum": list(STATUSES)},
                    "sort": {"enum": list(SORTS)},
                    "as_of": {**_DATE, "description": "The day `overdue` was judged on (UTC)."},
                    "invoices": {"type": "array", "items": _ref("Invoice")},
                    "totals": _ref("Totals"),
                    "page": _ref("Page"),
                },
                "additionalProperties": False,
            },
            "RefreshRequest": {
                "type": "object",
                "properties": {
                    "correlation_id": {"type": "string", "minLength": 1, "maxLength": 128}
                },
                "additionalProperties": False,
            },
            "CommandAccepted": {
                "type": "object",
                "required": ["command_id", "status", "status_url"],
                "properties": {
                    "command_id": {"type": "string", "pattern": COMMAND_ID_PATTERN},
                    "status": {"enum": COMMAND_STATUSES},
                    "status_url": {"type": "string"},
                },
                "additionalProperties": False,
            },
            "CommandResult": {
                "type": "object",
                "properties": {
                    "fetched": {"type": "integer", "minimum": 0},
                    "stored": {"type": "integer", "minimum": 0},
                    "events": {"type": "integer", "minimum": 0},
                },
            },
            "CommandStatus": {
                "type": "object",
                "required": [
                    "command_id",
                    "type",
                    "realm_id",
                    "local_customer_id",
                    "status",
                    "reason",
                    "issued_at",
                    "issued_by",
                    "queued_at",
                    "started_at",
                    "finished_at",
                    "attempts",
                    "result",
                ],
                "properties": {
                    "command_id": {"type": "string", "pattern": COMMAND_ID_PATTERN},
                    "type": {"type": "string"},
                    "realm_id": {"type": "string"},
                    "local_customer_id": _nullable({"type": "string"}),
                    "status": {"enum": COMMAND_STATUSES},
                    "reason": _nullable({"type": "string"}),
                    "issued_at": _nullable(_TIMESTAMP),
                    "issued_by": _nullable({"type": "string"}),
                    "queued_at": _nullable(_TIMESTAMP),
                    "started_at": _nullable(_TIMESTAMP),
                    "finished_at": _nullable(_TIMESTAMP),
                    "attempts": {"type": "integer", "minimum": 0},
                    "result": _nullable(_ref("CommandResult")),
                    # Only while `throttled`: when the command runs again.
                    "resumes_at": _nullable(_TIMESTAMP),
                },
                "additionalProperties": False,
            },
            "CustomerMapping": {
                "type": "object",
                "required": [
                    "local_customer_id",
                    "realm_id",
                    "qbo_customer_id",
                    "display_name",
                    "active",
                    "qbo_sync_token",
                    "merged_from",
                    "customer_read_at",
                    "mapped_at",
                    "last_synced_at",
                    "last_sync_command_id",
                ],
                "properties": {
                    "local_customer_id": {"type": "string"},
                    "realm_id": {"type": "string"},
                    "qbo_customer_id": _nullable({"type": "string"}),
                    "display_name": _nullable(
                        {"type": "string", "description": "QBO's DisplayName as last read."}
                    ),
                    "active": _nullable(
                        {
                            "type": "boolean",
                            "description": (
                                "QBO's Active as last read: false for a customer made inactive "
                                "or merged away; null until the customer was read."
                            ),
                        }
                    ),
                    "qbo_sync_token": _nullable(
                        {
                            "type": "string",
                            "pattern": "^[0-9]+$",
                            "description": "QBO's SyncToken of the customer as last read.",
                        }
                    ),
                    "merged_from": _nullable(
                        {
                            "type": "string",
                            "description": (
                                "The QBO customer this mapping named before QBO merged it into "
                                "`qbo_customer_id`."
                            ),
                        }
                    ),
                    "customer_read_at": _nullable(
                        {**_TIMESTAMP, "description": "When the QBO customer was last read."}
                    ),
                    "mapped_at": _nullable(_TIMESTAMP),
                    "last_synced_at": _nullable(
                        {**_TIMESTAMP, "description": "End of the last successful refresh."}
                    ),
                    "last_sync_command_id": _nullable({"type": "string"}),
                },
                "additionalProperties": False,
            },
            "Connection": {
                "type": "object",
                "required": [
                    "realm_id",
                    "status",
                    "needs_reauth",
                    "reauth_reason",
                    "refresh_token_hard_expires_at",
                    "updated_at",
                    "reconnect_url",
                ],
                "properties": {
                    "realm_id": {"type": "string"},
                    "status": {"enum": CONNECTION_STATUSES},
                    "needs_reauth": {"type": "boolean"},
                    "reauth_reason": _nullable({"type": "string"}),
                    "refresh_token_hard_expires_at": _nullable(_TIMESTAMP),
                    "updated_at": _nullable(_TIMESTAMP),
                    "reconnect_url": _nullable(
                        {
                            "type": "string",
                            "description": (
                                "Where the company re-connects (when not active): a connect "
                                "link signed for the connection's own user, valid 15 minutes."
                            ),
                        }
                    ),
                },
                "additionalProperties": False,
            },
            "CustomerStatus": {
                "type": "object",
                "required": ["customer", "connection"],
                "properties": {
                    "customer": _ref("CustomerMapping"),
                    "connection": _nullable(_ref("Connection")),
                },
                "additionalProperties": False,
            },
            "Health": {
                "type": "object",
                "required": ["status"],
                "properties": {"status": {"const": "ok"}},
                "additionalProperties": False,
            },
            "Readiness": {
                "type": "object",
                "required": ["status", "checks"],
                "properties": {
                    "status": {"enum": ["ready", "unavailable"]},
                    "checks": {
                        "type": "object",
                        "required": ["kafka", "mongo"],
                        "properties": {
                            "kafka": {"enum": ["ok", "unreachable"]},
                            "mongo": {"enum": ["ok", "unreachable"]},
                            "projector": {"enum": ["off", "running", "stopped"]},
                        },
                        "additionalProperties": False,
                    },
                },
                "additionalProperties": False,
            },
        },
    },
    "paths": {
        "/api/customers/{localCustomerId}/invoices": {
            "get": {
                "operationId": "listInvoices",
                "summary": "A customer's invoices, with totals, filtered, sorted and paged.",
                "security": _SECURED,
                "parameters": [
                    _CUSTOMER_PARAM,
                    {
                        "name": "status",
                        "in": "query",
                        "description": (
                            "overdue = open with a due date before today (UTC); "
                            "partially_paid = open with a payment applied (0 < balance < "
                            "total_amt), overdue or not. Both are subsets of open."
                        ),
                        "schema": {"enum": list(STATUSES), "default": "all"},
                    },
                    {
                        "name": "sort",
                        "in": "query",
                        "description": "A leading '-' sorts descending; ties by invoice.",
                        "schema": {"enum": list(SORTS), "default": "due_date"},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_LIMIT,
                            "default": DEFAULT_LIMIT,
                        },
                    },
                    {
                        "name": "offset",
                        "in": "query",
                        "description": "Rows to skip; not together with cursor.",
                        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET},
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "description": "`page.next_cursor` of the previous page (same sort).",
                        "schema": {"type": "string", "maxLength": 1024},
                    },
                ],
                "responses": {
                    "200": _json("One page of invoices and the totals.", "InvoiceList"),
                    "404": _NOT_FOUND,
                    **_ERRORS,
                },
            }
        },
        "/api/customers/{localCustomerId}/refreshInvoices": {
            "post": {
                "operationId": "refreshInvoices",
                "summary": "Ask the sync service to fetch the customer's invoices from QBO.",
                "security": _SECURED,
                "parameters": [
                    _CUSTOMER_PARAM,
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "description": "Retries with the same key get the same command.",
                        "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
                    },
                ],
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": _ref("RefreshRequest")}},
                },
                "responses": {
                    "202": {
                        **_json(
                            "The command is queued (or was, for a repeated Idempotency-Key).",
                            "CommandAccepted",
                            {"Location": {"schema": {"type": "string"}}},
                        ),
                        "links": {
                            "GetCommand": {
                                "operationId": "getCommand",
                                "parameters": {"commandId": "$response.body#/command_id"},
                            }
                        },
                    },
                    "404": _NOT_FOUND,
                    "413": _json("The body is too large.", "Error"),
                    **_ERRORS,
                    "503": _json(
                        "Kafka did not take the command, or MongoDB does not answer; retry "
                        "after Retry-After seconds with the same Idempotency-Key.",
                        "Error",
                        {"Retry-After": {"schema": {"type": "string"}}},
                    ),
                },
            }
        },
        "/api/commands/{commandId}": {
            "get": {
                "operationId": "getCommand",
                "summary": "Status of a command.",
                "security": _SECURED,
                "parameters": [
                    {
                        "name": "commandId",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": COMMAND_ID_PATTERN},
                    }
                ],
                "responses": {
                    "200": _json("The command's status record.", "CommandStatus"),
                    "404": _NOT_FOUND,
                    **_ERRORS,
                },
            }
        },
        "/api/customers/{localCustomerId}": {
            "get": {
                "operationId": "getCustomer",
                "summary": "The customer's mapping, last sync and QBO connection status.",
                "security": _SECURED,
                "parameters": [_CUSTOMER_PARAM],
                "responses": {
                    "200": _json("Mapping and connection.", "CustomerStatus"),
                    "404": _NOT_FOUND,
                    **_ERRORS,
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "The process is up.",
                "responses": {"200": _json("Up.", "Health")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readiness",
                "summary": "Kafka and MongoDB answer.",
                "responses": {
                    "200": _json("Ready.", "Readiness"),
                    "503": _json("A dependency does not answer.", "Readiness"),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics.",
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document.",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        "/": {
            "get": {
                "operationId": "dashboard",
                "summary": "The dashboard page (?customer=<id>#token=<token>).",
                "responses": {
                    "200": {
                        "description": "HTML.",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/static/{asset}": {
            "get": {
                "operationId": "dashboardAsset",
                "summary": "The dashboard's script and style sheet.",
                "parameters": [
                    {
                        "name": "asset",
                        "in": "path",
                        "required": True,
                        "schema": {"enum": ["app.js", "style.css"]},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The file.",
                        "content": {
                            "text/javascript": {"schema": {"type": "string"}},
                            "text/css": {"schema": {"type": "string"}},
                        },
                    },
                    "404": _json("No such asset.", "Error"),
                },
            }
        },
    },
}
