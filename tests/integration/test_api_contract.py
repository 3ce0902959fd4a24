"""The api keeps the promises of its OpenAPI document, over real HTTP.

1. Real responses (successes and errors) validate against the schema the document gives for
   that path, method and status code.
2. schemathesis generates requests from the document (valid and invalid ones) and checks that
   the api never answers 5xx and always answers as documented.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from pymongo.asynchronous.database import AsyncDatabase
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from services.common import jsoncodec
from services.common.mongo import Document
from services.common.settings import Settings
from tests.api_support import (
    RunningApi,
    invoice_event,
    produce_events,
    running_api,
    seed_connection,
    seed_mapping,
)
from tests.support import eventually

pytestmark = pytest.mark.integration

AUTH = {"Authorization": "Bearer dev-token"}  # local environment, no API_TOKENS configured
DOC_URI = "urn:qbo-sync:openapi"


@pytest.fixture
async def api(settings: Settings, mongo_db: AsyncDatabase[Document]) -> AsyncIterator[RunningApi]:
    async with running_api(settings) as running:
        await seed_mapping(mongo_db, "cust-42", last_synced_at=datetime.now(UTC))
        await seed_mapping(mongo_db, "cust-43", qbo_customer_id="60")
        await seed_mapping(mongo_db, "orphan", realm_id="4620816365000000001")  # no connection
        await seed_connection(mongo_db, status="needs_reauth", reauth_reason="invalid_grant")
        await produce_events(
            settings,
            invoice_event("1", 1, total_amt="0.10", due_date="2020-01-01"),
            invoice_event("2", 1, total_amt="0.20", due_date=None, doc_number=None),
            invoice_event("3", 2, total_amt=0, balance=0, status="voided", currency=None),
            invoice_event("4", 3, total_amt=0, balance=0, deleted=True, local_customer_id=None),
        )
        await eventually(lambda: mongo_db["read_invoices"].count_documents({}), lambda n: n == 4)
        yield running


class Contract:
    """The served OpenAPI document, and a check of responses against it."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        resource: Resource[Any] = Resource.from_contents(
            document, default_specification=DRAFT202012
        )
        self.registry: Registry[Any] = Registry().with_resource(DOC_URI, resource)
        self.checked: set[tuple[str, str, str]] = set()

    def check(self, template: str, method: str, response: httpx.Response) -> None:
        status = str(response.status_code)
        operation = self.document["paths"][template][method.lower()]
        documented = operation["responses"]
        assert status in documented, f"{method} {template} answered undocumented {status}"
        content = documented[status]["content"]
        media_type = response.headers["content-type"].split(";")[0].strip()
        assert media_type in content, f"{method} {template} {status}: {media_type}"
        self.checked.add((template, method.lower(), status))
        if media_type != "application/json":
            return
        escaped = template.replace("~", "~0").replace("/", "~1")
        pointer = (
            f"paths/{escaped}/{method.lower()}/responses/{status}/content/application~1json/schema"
        )
        validator = Draft202012Validator(
            {"$ref": f"{DOC_URI}#/{pointer}"},
            registry=self.registry,
            format_checker=Draft202012Validator.FORMAT_CHECKER,
        )
        # Numbers as the wire has them: exact Decimals, which jsonschema treats as numbers.
        body = jsoncodec.loads(response.content)
        errors = [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(body)
        ]
        assert not errors, f"{method} {template} {status}: {errors}"


async def test_real_responses_match_the_document(
    api: RunningApi, mongo_db: AsyncDatabase[Document]
) -> None:
    async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as http:
        contract = Contract((await http.get("/openapi.json")).json())
        invoices = "/api/customers/{localCustomerId}/invoices"
        refresh = "/api/customers/{localCustomerId}/refreshInvoices"
        customer = "/api/customers/{localCustomerId}"
        command = "/api/commands/{commandId}"

        for params in ({}, {"status": "overdue"}, {"sort": "-total", "limit": "1"}):
            contract.check(
                invoices,
                "GET",
                await http.get("/api/customers/cust-42/invoices", params=params, headers=AUTH),
            )
        contract.check(
            invoices, "GET", await http.get("/api/customers/cust-43/invoices", headers=AUTH)
        )
        contract.check(
            invoices,
            "GET",
            await http.get("/api/customers/cust-42/invoices", params={"limit": "0"}, headers=AUTH),
        )
        contract.check(invoices, "GET", await http.get("/api/customers/cust-42/invoices"))
        contract.check(
            invoices, "GET", await http.get("/api/customers/nobody/invoices", headers=AUTH)
        )

        accepted = await http.post(
            "/api/customers/cust-42/refreshInvoices", headers={**AUTH, "Idempotency-Key": "k1"}
        )
        contract.check(refresh, "POST", accepted)
        contract.check(
            refresh,
            "POST",
            await http.post("/api/customers/cust-42/refreshInvoices", content=b"{", headers=AUTH),
        )
        contract.check(
            refresh, "POST", await http.post("/api/customers/nobody/refreshInvoices", headers=AUTH)
        )
        contract.check(refresh, "POST", await http.post("/api/customers/cust-42/refreshInvoices"))

        status_url = accepted.json()["status_url"]
        contract.check(command, "GET", await http.get(status_url, headers=AUTH))
        await mongo_db["commands"].update_one(
            {"_id": accepted.json()["command_id"]},
            {
                "$set": {
                    "status": "succeeded",
                    "started_at": datetime.now(UTC),
                    "finished_at": datetime.now(UTC),
                    "attempts": 1,
                    "result": {"fetched": 4, "stored": 0, "events": 0},
                }
            },
        )
        contract.check(command, "GET", await http.get(status_url, headers=AUTH))
        contract.check(
            command,
            "GET",
            await http.get("/api/commands/4f7c2a9e-1b3d-4c5e-8f60-7a8b9c0d1e2f", headers=AUTH),
        )
        contract.check(command, "GET", await http.get("/api/commands/nope", headers=AUTH))
        contract.check(command, "GET", await http.get(status_url))

        contract.check(customer, "GET", await http.get("/api/customers/cust-42", headers=AUTH))
        contract.check(customer, "GET", await http.get("/api/customers/orphan", headers=AUTH))
        contract.check(customer, "GET", await http.get("/api/customers/nobody", headers=AUTH))
        contract.check(customer, "GET", await http.get("/api/customers/bad%20id", headers=AUTH))
        contract.check(customer, "GET", await http.get("/api/customers/cust-42"))

        for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/"):
            contract.check(path, "GET", await http.get(path))
        contract.check("/static/{asset}", "GET", await http.get("/static/app.js"))
        contract.check("/static/{asset}", "GET", await http.get("/static/style.css"))
        contract.check("/static/{asset}", "GET", await http.get("/static/secrets.txt"))

    # Every operation was exercised, with its success and its documented errors.
    operations = {(p, m) for p, ops in contract.document["paths"].items() for m in ops}
    assert {(p, m) for p, m, _ in contract.checked} == operations
    for path in (invoices, refresh, customer, command):
        method = "post" if path == refresh else "get"
        assert {"400", "401", "404"} <= {
            s for p, m, s in contract.checked if (p, m) == (path, method)
        }


async def test_schemathesis_finds_no_server_error_and_no_contract_violation(
    api: RunningApi, tmp_path: Path
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{api.base_url}/openapi.json",
        "--header",
        f"Authorization: {AUTH['Authorization']}",
        # Everything except positive_data_acceptance: the document cannot express that an
        # arbitrary string is not a valid opaque cursor, or that cursor excludes offset.
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance",
        "--max-examples",
        "25",
        "--seed",
        "20301",
        "--workers",
        "2",
        "--request-timeout",
        "20",
        cwd=tmp_path,  # schemathesis and hypothesis write their caches into the working dir
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 240)
    text = output.decode(errors="replace")
    assert process.returncode == 0, text
    assert "No issues found" in text, text
    generated = re.search(r"(\d+) generated", text)
    assert generated and int(generated.group(1)) > 100, text

    # And from the api's side: it answered many requests, none of them with a 5xx.
    async with httpx.AsyncClient(base_url=api.base_url) as http:
        metrics = (await http.get("/metrics")).text
    # Label values contain braces ("/api/customers/{localCustomerId}"): match to the line end.
    statuses = re.findall(r'^qbo_api_requests_total\{.*status="(\d+)"\} (\S+)$', metrics, re.M)
    assert sum(float(n) for _, n in statuses) > 100, text
    assert not [s for s, _ in statuses if s.startswith("5")], statuses
