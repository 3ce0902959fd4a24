"""The bytes the api writes for invoices, totals, commands and customers, pinned.

The expected texts (`wire_bytes.json`) were written by the hand renderers the models
replaced, and the models must write them byte for byte: exact amounts (odd, negative, 20
integer digits, micros of the earlier form), nulls, multicurrency members, timestamps kept as
stored or given a `Z`, a `resumes_at` only while throttled, a command record's extra fields
left out. Every body written is valid against the schema the OpenAPI document generates for it.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from services.api.handlers.commands import render_command
from services.api.handlers.customers import render_customer
from services.api.models import Body
from services.api.openapi import OPENAPI
from services.api.readmodel import Totals, render_invoice
from services.common import jsoncodec

DOC_URI = "urn:qbo-sync:openapi"
TODAY = date(2030, 3, 15)
INVOICES: list[dict[str, Any]] = [
    {
        "invoice_id": "1",
        "realm_id": "9130350000000001",
        "qbo_customer_id": "58",
        "doc_number": "1001",
        "txn_date": "2020-01-01",
        "due_date": "2020-01-31",
        "currency": "USD",
        "total_amt": "0.10",
        "balance": "0.10",
        "status": "open",
        "deleted": False,
        "version": 1,
        "last_updated_time": "2020-01-01T00:32:09.000-08:00",
    },
    {
        "invoice_id": "2",
        "realm_id": "9130350000000001",
        "qbo_customer_id": "58",
        "doc_number": None,
        "txn_date": None,
        "due_date": None,
        "currency": "KWD",
        "total_amt": "12345678901234567890.123456789",
        "balance": "-0.01",
        "status": "open",
        "deleted": False,
        "version": 9007199254740993,
        "last_updated_time": datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
    },
    {
        "invoice_id": "3",
        "realm_id": "9130350000000001",
        "total_amt_micros": 1234500000,
        "balance_micros": 0,
        "status": "deleted",
        "deleted": True,
        "version": 4,
    },
    {
        "invoice_id": "4",
        "realm_id": "9130350000000001",
        "qbo_customer_id": "60",
        "doc_number": "EU-7",
        "txn_date": "2030-01-01",
        "due_date": "2030-04-01",
        "currency": "EUR",
        "total_amt": "500.00",
        "balance": "200.00",
        "exchange_rate": "1.0842",
        "home_total_amt": "542.10",
        "home_balance": "216.84",
        "status": "open",
        "partially_paid": True,
        "deleted": False,
        "version": 2,
        "last_updated_time": datetime(2030, 1, 2, 3, 4, 5),
    },
    {
        "invoice_id": "5",
        "realm_id": "9130350000000001",
        "qbo_customer_id": "58",
        "doc_number": "1002",
        "txn_date": "2030-01-01",
        "due_date": "2030-02-01",
        "currency": "USD",
        "total_amt": "10.1234567",
        "balance": "3.0000001",
        "status": "open",
        "deleted": False,
        "version": 3,
        "last_updated_time": None,
    },
    {
        "invoice_id": "6",
        "realm_id": "9130350000000001",
        "qbo_customer_id": "58",
        "doc_number": "1003",
        "txn_date": "2030-01-01",
        "due_date": "2030-01-05",
        "currency": "USD",
        "total_amt": "0",
        "balance": "0",
        "exchange_rate": "1",
        "status": "voided",
        "deleted": False,
        "version": 5,
        "last_updated_time": "2030-01-05T00:00:00Z",
    },
]
COMMANDS: list[dict[str, Any]] = [
    {
        "_id": "4f7c2a9e-1b3d-4c5e-8f60-7a8b9c0d1e2f",
        "type": "RefreshInvoices",
        "realm_id": "9130350000000001",
        "local_customer_id": "cust-42",
        "status": "succeeded",
        "issued_at": "2030-01-01T00:00:00.000Z",
        "issued_by": "api",
        "queued_at": datetime(2030, 1, 1, tzinfo=UTC),
        "started_at": datetime(2030, 1, 1, 0, 0, 1, tzinfo=UTC),
        "finished_at": datetime(2030, 1, 1, 0, 0, 2, 500000),
        "attempts": 1,
        "result": {"fetched": 3, "stored": 2, "events": 2, "debug": "x"},
        "idempotency_key": "k-1",
        "published_at": datetime(2030, 1, 1, tzinfo=UTC),
        "correlation_id": "c",
    },
    {
        "_id": "5f7c2a9e-1b3d-4c5e-8f60-7a8b9c0d1e2f",
        "type": "RefreshInvoices",
        "realm_id": "9130350000000001",
        "status": "throttled",
        "reason": "HTTP 429, code 3001: message=ThrottleExceeded",
        "attempts": 2,
        "resumes_at": datetime(2030, 1, 1, 0, 1, tzinfo=UTC),
        "result": {"fetched": 7},
    },
    {"_id": "6f7c2a9e-1b3d-4c5e-8f60-7a8b9c0d1e2f", "attempts": None, "result": "odd"},
    {
        "_id": "7f7c2a9e-1b3d-4c5e-8f60-7a8b9c0d1e2f",
        "type": "MapCustomer",
        "realm_id": "1",
        "status": "throttled",
    },
]
MAPPINGS: list[dict[str, Any]] = [
    {
        "_id": "cust-42",
        "local_customer_id": "cust-42",
        "realm_id": "9130350000000001",
        "qbo_customer_id": "58",
        "display_name": "O'Brien Plumbing \u00e9",
        "mapped_at": datetime(2030, 1, 1, tzinfo=UTC),
        "last_synced_at": datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
        "last_sync_command_id": "4f7c2a9e-1b3d-4c5e-8f60-7a8b9c0d1e2f",
        "active": False,
        "qbo_sync_token": 12,
        "merged_from": "57",
        "customer_read_at": datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
    },
    {"_id": "cust-43", "realm_id": "9130350000000001"},
]
CONNECTIONS: list[dict[str, Any] | None] = [
    {
        "_id": "9130350000000001",
        "status": "needs_reauth",
        "user_id": "alice@example.com",
        "reauth_reason": "invalid_grant",
        "refresh_token_hard_expires_at": datetime(2031, 1, 1, tzinfo=UTC),
        "updated_at": datetime(2030, 1, 2, tzinfo=UTC),
    },
    {"_id": "9130350000000001", "status": "active", "user_id": "alice@example.com"},
    {"_id": "9130350000000001", "status": "disconnected", "user_id": ""},
    None,
]

# Written by the hand renderers, before the models; one JSON text per rendered body.
EXPECTED: dict[str, list[str]] = json.loads((Path(__file__).parent / "wire_bytes.json").read_text())


def wire(body: Body) -> str:
    return jsoncodec.dumps(body.wire())


@pytest.mark.parametrize(
    ("doc", "expected"), list(zip(INVOICES, EXPECTED["invoices"], strict=True))
)
def test_an_invoice_is_written_as_before(doc: dict[str, Any], expected: str) -> None:
    assert wire(render_invoice(doc, TODAY)) == expected


def test_totals_are_written_as_before() -> None:
    totals = Totals()
    for doc in INVOICES:
        totals.add(doc, TODAY)
    assert [wire(totals.render()), wire(Totals().render())] == EXPECTED["totals"]


@pytest.mark.parametrize(
    ("doc", "expected"), list(zip(COMMANDS, EXPECTED["commands"], strict=True))
)
def test_a_command_is_written_as_before(doc: dict[str, Any], expected: str) -> None:
    assert wire(render_command(doc)) == expected


def test_a_customer_is_written_as_before() -> None:
    def reconnect(user: str) -> str:
        return "https://sync.example/oauth/connect?link=" + user

    written = [wire(render_customer(m, c, reconnect)) for m in MAPPINGS for c in CONNECTIONS]
    assert written == EXPECTED["customers"]


def component(name: str) -> Draft202012Validator:
    """The OpenAPI document's schema for `name`, its references resolved within the document."""
    resource: Resource[Any] = Resource.from_contents(OPENAPI, default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(DOC_URI, resource)
    return Draft202012Validator(
        {"$ref": f"{DOC_URI}#/components/schemas/{name}"},
        registry=registry,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def test_every_body_written_is_valid_against_its_generated_component() -> None:
    totals = Totals()
    for doc in INVOICES:
        totals.add(doc, TODAY)
    bodies: list[tuple[str, Body]] = [
        *(("Invoice", render_invoice(doc, TODAY)) for doc in INVOICES),
        ("Totals", totals.render()),
        *(("Command", render_command(doc)) for doc in COMMANDS),
        *(
            ("CustomerStatus", render_customer(m, c, lambda user: "https://x/?link=" + user))
            for m in MAPPINGS
            for c in CONNECTIONS
        ),
    ]
    for name, body in bodies:
        # Read back as a client would: amounts as exact Decimals, which jsonschema takes as numbers.
        written = jsoncodec.loads(wire(body))
        errors = [e.message for e in component(name).iter_errors(written)]
        assert not errors, (name, written, errors)
