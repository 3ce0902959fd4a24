"""One webhook followed to its projected invoice as one trace (docs/design.md, "Operators: metrics
and traces"), over real Kafka, FerretDB and the emulator: the sync service with its worker and
the api with its projector, in this process, tracing into memory."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from pymongo.asynchronous.database import AsyncDatabase

from qbo_emulator.testing import RunningEmulator
from qbo_emulator.webhooks import sign
from services.common import jsoncodec
from services.common.mongo import Document
from services.common.settings import Settings
from services.sync.webhooks import SIGNATURE_HEADER, WEBHOOK_PATH
from tests.api_support import running_api
from tests.integration.conftest import SyncUnderTest
from tests.integration.test_sync_worker import REALM, connect_and_map
from tests.support import MovableClock, eventually, recorded_spans

pytestmark = pytest.mark.integration

DEV_AUTH = {"Authorization": "Bearer dev-token"}  # the token a local api accepts


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    with recorded_spans() as exporter:
        yield exporter


def child_of(span: ReadableSpan, parent: ReadableSpan) -> bool:
    return span.parent is not None and span.parent.span_id == parent.context.span_id


async def test_one_webhook_is_one_trace_down_to_the_projected_invoice(
    spans: InMemorySpanExporter,
    worker: SyncUnderTest,
    emulator: RunningEmulator,
    clock: MovableClock,
    settings: Settings,
    mongo_db: AsyncDatabase[Document],
) -> None:
    qbo_customer = await connect_and_map(worker, emulator, clock)
    # Created after the mapping (which lists the customer's invoices), with no webhook wired:
    # only the delivery below tells the service about it.
    invoice = emulator.state.create_invoice(
        REALM, {"CustomerRef": {"value": qbo_customer}, "TotalAmt": "120.50", "Balance": "120.50"}
    )
    change = {"name": "Invoice", "id": invoice["Id"], "operation": "Create"}
    change["lastUpdated"] = invoice["MetaData"]["LastUpdatedTime"]
    body = jsoncodec.dumpb(
        {"eventNotifications": [{"realmId": REALM, "dataChangeEvent": {"entities": [change]}}]}
    )
    verifier = settings.qbo_webhook_verifier_token.get_secret_value()

    async with running_api(settings) as api, httpx.AsyncClient(timeout=30) as http:
        delivered = await http.post(
            worker.base_url + WEBHOOK_PATH,
            content=body,
            headers={SIGNATURE_HEADER: sign(body, verifier), "Content-Type": "application/json"},
        )
        assert delivered.status_code == 200, delivered.text

        async def listed() -> list[str]:
            answer = await http.get(
                f"{api.base_url}/api/customers/cust-1/invoices", headers=DEV_AUTH
            )
            return [i["invoice_id"] for i in answer.json().get("invoices", [])]

        await eventually(listed, lambda ids: invoice["Id"] in ids, timeout_s=30)

    (received,) = [s for s in spans.get_finished_spans() if s.name == f"POST {WEBHOOK_PATH}"]

    def in_trace() -> list[ReadableSpan]:
        trace_id = received.context.trace_id
        return [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]

    async def finished_names() -> set[str]:
        return {s.name for s in in_trace()}

    # The command's span ends once its status is written, after the events were acknowledged.
    await eventually(finished_names, lambda names: "process command" in names, timeout_s=10)
    trace = in_trace()

    def one(name: str) -> ReadableSpan:
        (found,) = [s for s in trace if s.name == name]
        return found

    produced, handled = one("send commands"), one("process command")
    emitted, projected = one("send events"), one("process event")
    assert received.kind is SpanKind.SERVER and received.parent is None  # Intuit sends none
    assert produced.kind is SpanKind.PRODUCER and child_of(produced, received)
    assert handled.kind is SpanKind.CONSUMER and child_of(handled, produced)
    assert handled.attributes is not None and handled.attributes["qbo.realm_id"] == REALM
    qbo_calls = [s for s in trace if s.kind is SpanKind.CLIENT]
    assert qbo_calls, "no QBO call was traced"
    for call in qbo_calls:
        assert child_of(call, handled)
        assert call.name == "GET /v3/company/{id}/query"
        assert call.attributes is not None and call.attributes["http.response.status_code"] == 200
        values = " ".join(str(v) for v in call.attributes.values())
        assert "?" not in values and "Bearer" not in values  # no query, no token
    assert emitted.kind is SpanKind.PRODUCER and child_of(emitted, handled)
    assert projected.kind is SpanKind.CONSUMER and child_of(projected, emitted)

    # The event names the trace that stored its version (the CloudEvents extension).
    stored = await mongo_db.invoices.find_one({"_id": f"{REALM}:{invoice['Id']}"})
    assert stored is not None
    ctx = handled.context
    expected = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"
    assert stored["trace"] == {"version": stored["version"], "traceparent": expected}


async def test_a_refresh_request_to_the_api_is_one_trace_through_the_sync_worker(
    spans: InMemorySpanExporter,
    worker: SyncUnderTest,
    emulator: RunningEmulator,
    clock: MovableClock,
    settings: Settings,
) -> None:
    await connect_and_map(worker, emulator, clock)
    caller = "00-" + "c" * 32 + "-" + "d" * 16 + "-01"  # the app that asks, tracing too

    async with running_api(settings, run_projector=False) as api:
        async with httpx.AsyncClient(timeout=30) as http:
            asked = await http.post(
                f"{api.base_url}/api/customers/cust-1/refreshInvoices",
                headers={**DEV_AUTH, "traceparent": caller},
            )
        assert asked.status_code == 202, asked.text

    async def handled() -> list[ReadableSpan]:
        return [
            s
            for s in spans.get_finished_spans()
            if s.name == "process command" and f"{s.context.trace_id:032x}" == "c" * 32
        ]

    (command,) = await eventually(handled, lambda found: len(found) == 1, timeout_s=30)
    trace = [s for s in spans.get_finished_spans() if f"{s.context.trace_id:032x}" == "c" * 32]
    (request,) = [s for s in trace if s.kind is SpanKind.SERVER]
    (produced,) = [s for s in trace if s.name == "send commands"]
    assert request.name == "POST /api/customers/{localCustomerId}/refreshInvoices"
    assert request.parent is not None and f"{request.parent.span_id:016x}" == "d" * 16
    assert child_of(produced, request) and child_of(command, produced)
    assert command.attributes is not None
    assert command.attributes["qbo.command_type"] == "RefreshInvoices"
    assert any(s.kind is SpanKind.CLIENT and child_of(s, command) for s in trace)
