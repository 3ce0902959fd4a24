"""The api's OpenAPI 3.1 document, served at `/openapi.json`.

The paths (operations, parameters, status codes, descriptions) are written here as data; the
`components.schemas` are generated from the models in `models.py`, so the document describes
exactly the bodies the handlers build and the request bodies they validate. Component schemas
are JSON Schema 2020-12 (OpenAPI 3.1 uses it as is), so tests validate real responses against
them with `jsonschema`, and schemathesis fuzzes the routes from this document. A test fails
when the routes served and the paths documented drift apart.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode
from pydantic_core import CoreSchema

from services.api.listing import DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET, SORTS, STATUSES
from services.api.models import (
    COMMAND_ID_PATTERN,
    IDEMPOTENCY_KEY_PATTERN,
    LOCAL_CUSTOMER_ID_PATTERN,
    REQUESTS,
    RESPONSES,
    Body,
)

_REF_TEMPLATE = "#/components/schemas/{model}"


class _Schemas(GenerateJsonSchema):
    # A member's title would only repeat its name.
    def field_title_should_be_set(self, schema: CoreSchema) -> bool:
        return False


def component_schemas(
    responses: tuple[type[Body], ...] = RESPONSES, requests: tuple[type[Body], ...] = REQUESTS
) -> dict[str, Any]:
    """One component per model, the models they reference (pydantic's `$defs`) hoisted beside
    them. Responses are described as they are written, request bodies as they are read."""
    components: dict[str, Any] = {}
    modes: tuple[tuple[tuple[type[Body], ...], JsonSchemaMode], ...] = (
        (responses, "serialization"),
        (requests, "validation"),
    )
    for models, mode in modes:
        for model in models:
            schema = model.model_json_schema(
                ref_template=_REF_TEMPLATE, mode=mode, schema_generator=_Schemas
            )
            for name, part in {**schema.pop("$defs", {}), model.__name__: schema}.items():
                if components.setdefault(name, part) != part:
                    raise ValueError(f"two different schemas are named {name}")
    return components


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF_TEMPLATE.format(model=name)}


def _json(description: str, schema: str, headers: dict[str, Any] | None = None) -> Any:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": _ref(schema)}},
    }
    if headers:
        response["headers"] = headers
    return response


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
        "schemas": component_schemas(),
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
                    "200": _json("The command's status record.", "Command"),
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
