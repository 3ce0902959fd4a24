"""Tracing (docs/design.md, "Operators: metrics and traces"): off, nothing is added anywhere; on,
the W3C context goes out in Kafka headers and stored versions, and comes back as the parent of
the next span. The SDK's in-memory exporter records the spans. The whole chain over real Kafka,
FerretDB and the emulator: tests/integration/test_tracing.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import ConsumerRecord
from hypothesis import example, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, get_current_span
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import schemas
from services.common import tracing
from services.common.settings import Settings
from tests.support import recorded_spans
from tests.unit.test_worker_scheduling import P0, World

EVENT_SCHEMA = Path(schemas.__file__).parent / "events" / "invoice-updated.v1.schema.json"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    with recorded_spans() as exporter:
        yield exporter


def w3c(context: SpanContext | None) -> str:
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def traceparent(span: Any) -> str:
    return w3c(span.get_span_context())


def only(spans: InMemorySpanExporter, name: str) -> ReadableSpan:
    (found,) = [s for s in spans.get_finished_spans() if s.name == name]
    return found


async def test_off_nothing_is_added_and_every_entry_point_returns_at_once() -> None:
    assert not tracing.enabled()

    async def run() -> str:
        return "ran"

    assert tracing.consumed(run, "process command", [("traceparent", b"00-...")]) is run
    assert tracing.kafka_headers() is None
    assert tracing.version_context(3) == {}
    with tracing.span("send commands", SpanKind.PRODUCER):
        assert not get_current_span().get_span_context().is_valid
    doc = {
        "version": 3,
        "trace": {"version": 3, "traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"},
    }
    assert tracing.event_extension(doc)["traceparent"]  # a stored one is still honoured
    assert tracing.event_extension({"version": 3}) == {}

    # A dead letter carries the dlq headers and nothing else.
    w = World(max_attempts=1)
    w.consumer.add(P0, "1001", b"{not json")
    await w.poll()
    ((_, _, headers),) = w.producer.sent
    assert set(headers) == {
        "dlq.reason",
        "dlq.error_type",
        "dlq.topic",
        "dlq.partition",
        "dlq.offset",
    }


async def test_a_producers_span_is_the_parent_of_the_consumers(
    spans: InMemorySpanExporter,
) -> None:
    with tracing.span("send commands", SpanKind.PRODUCER):
        sent = get_current_span()
        headers = tracing.kafka_headers()
    assert headers == [("traceparent", traceparent(sent).encode())]

    async def run() -> str:
        return traceparent(get_current_span())

    inside = await tracing.consumed(run, "process command", headers)()

    producer, consumer = only(spans, "send commands"), only(spans, "process command")
    assert consumer.kind is SpanKind.CONSUMER
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id
    assert consumer.context.trace_id == producer.context.trace_id
    assert inside == traceparent(consumer)  # the work ran inside the consumer span


async def test_a_dead_letter_names_the_span_that_gave_up(spans: InMemorySpanExporter) -> None:
    with tracing.span("send commands", SpanKind.PRODUCER):
        sent = tracing.kafka_headers()
    w = World(max_attempts=1)
    w.consumer.logs[P0].append(
        ConsumerRecord("commands", 0, 0, 0, 0, b"1001", b"{not json", None, 0, 0, sent)
    )
    await w.poll()

    ((_, _, headers),) = w.producer.sent
    handled = only(spans, "process command")
    assert headers["traceparent"].decode() == w3c(handled.context)
    assert handled.parent is not None
    assert handled.parent.span_id == only(spans, "send commands").context.span_id


def test_a_stored_version_names_its_trace_and_only_its_own_event_carries_it(
    spans: InMemorySpanExporter,
) -> None:
    with tracing.span("process command"):
        stored = tracing.version_context(3)
    expected = w3c(only(spans, "process command").context)
    assert stored == {"trace": {"version": 3, "traceparent": expected}}
    assert tracing.event_extension({"version": 3, **stored}) == {"traceparent": expected}
    # A later version written while tracing was off keeps the old field: its event names none.
    assert tracing.event_extension({"version": 4, **stored}) == {}


def test_batch_spans_each_follow_their_own_record(spans: InMemorySpanExporter) -> None:
    parents = []
    records = []
    for offset in range(2):
        with tracing.span(f"send {offset}", SpanKind.PRODUCER):
            parents.append(get_current_span().get_span_context())
            headers = tracing.kafka_headers()
        records.append(type("Record", (), {"headers": headers, "partition": 0, "offset": offset}))
    records.append(type("Record", (), {"headers": [], "partition": 0, "offset": 2}))

    with tracing.consumed_batch("process event", records):
        pass

    batch = [s for s in spans.get_finished_spans() if s.name == "process event"]
    assert [s.parent.span_id if s.parent else None for s in batch] == [
        parents[0].span_id,
        parents[1].span_id,
        None,  # an event without context starts its own trace
    ]


async def test_server_spans_take_the_route_template_and_continue_the_callers_trace(
    spans: InMemorySpanExporter,
) -> None:
    async def show(request: Request) -> PlainTextResponse:
        return PlainTextResponse(traceparent(get_current_span()))

    app = Starlette(routes=[Route("/customers/{customer_id}", show)])
    app.add_middleware(tracing.ServerSpans)
    caller = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as http:
        answer = await http.get("/customers/cust-42", headers={"traceparent": caller})

    server = only(spans, "GET /customers/{customer_id}")
    assert server.kind is SpanKind.SERVER
    assert f"{server.context.trace_id:032x}" == "a" * 32
    assert server.parent is not None and f"{server.parent.span_id:016x}" == "b" * 16
    assert server.attributes is not None and server.attributes["http.response.status_code"] == 200
    assert answer.text == w3c(server.context)


def test_urls_are_templated_without_ids() -> None:
    assert tracing.url_template("/v3/company/9130350000000001/query") == "/v3/company/{id}/query"
    assert tracing.url_template("/v3/company/9130/invoice/130") == "/v3/company/{id}/invoice/{id}"


def test_configured_from_the_standard_variables_and_off_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED", "OTEL_SERVICE_NAME"):
        monkeypatch.delenv(name, raising=False)
    try:
        assert tracing.configure_from_settings(Settings(), "qbo-sync-sync") is None
        assert not tracing.enabled()
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
        monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
        assert tracing.configure_from_settings(Settings(), "qbo-sync-sync") is None
        monkeypatch.setenv("OTEL_SDK_DISABLED", "false")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "sync-eu")
        provider: Any = tracing.configure_from_settings(Settings(), "qbo-sync-sync")
        assert tracing.enabled()
        assert provider.resource.attributes["service.name"] == "sync-eu"
        provider.shutdown()
    finally:
        tracing.configure(None)


_CALLER_HEADER = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=7000)


_VALID_PARENT = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"


@settings(max_examples=200, deadline=None)
@example(  # W3C lets tracestate hold 32 members of up to 256 characters each
    traceparent=_VALID_PARENT, tracestate=",".join(f"k{i}=" + "v" * 200 for i in range(30))
)
@given(
    traceparent=st.one_of(_CALLER_HEADER, st.just(_VALID_PARENT)),
    tracestate=st.one_of(
        _CALLER_HEADER,
        st.lists(
            st.tuples(
                st.from_regex(r"[a-z][a-z0-9_\-*/]{0,40}", fullmatch=True),
                st.from_regex(r"[!-+\--<>-~]{1,256}", fullmatch=True),
            ),
            max_size=32,
        ).map(lambda pairs: ",".join(f"{k}={v}" for k, v in pairs)),
    ),
)
def test_whatever_trace_headers_a_caller_sends_the_stored_context_fits_the_event_contract(
    traceparent: str, tracestate: str
) -> None:
    """A caller's trace headers (HTTP or Kafka) end up in a stored version and its event: an
    oversized or malformed one must never make our own event off-contract."""
    schema = json.loads(EVENT_SCHEMA.read_text())["properties"]
    extension = Draft202012Validator(
        {"type": "object", "properties": {k: schema[k] for k in tracing.TRACE_HEADERS}}
    )
    headers = [("traceparent", traceparent.encode()), ("tracestate", tracestate.encode())]
    with recorded_spans():
        token = otel_context.attach(tracing.context_of(headers))
        try:
            with tracing.span("process command", SpanKind.CONSUMER):
                stored = tracing.version_context(7)
        finally:
            otel_context.detach(token)
    extension.validate(tracing.event_extension({"version": 7, **stored}))
    assert stored["trace"]["traceparent"]  # a trace is still named when the state is dropped
