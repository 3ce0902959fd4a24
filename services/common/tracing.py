"""OpenTelemetry tracing, off unless configured (docs/design.md, "Operators: metrics and
traces").

One trace follows a change from the webhook (or the api's refresh request) through the command,
the QBO calls and the events to the projector. The W3C trace context (`traceparent`,
`tracestate`) rides in Kafka headers from one process to the next; an InvoiceUpdated event also
carries it as the CloudEvents distributed-tracing extension, the context in which its version
was stored.

Only `opentelemetry-api` is a dependency. While no tracer provider is configured every entry
point here returns after one check (`_tracer is None`): no span objects, no headers, no stored
context. `configure_from_settings` builds the SDK's provider from the standard `OTEL_*`
variables (read into `Settings`) when the `tracing` extra is installed.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import structlog
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from services.common.messages import Command
    from services.common.settings import Settings

log = structlog.get_logger(__name__)

T = TypeVar("T")
KafkaHeaders = Sequence[tuple[str, bytes]]
TRACE_HEADERS = ("traceparent", "tracestate")
# The longest tracestate an InvoiceUpdated event carries (its schema's limit). W3C lets a
# caller send 32 members of up to 256 characters; a longer one is not stored with a version.
MAX_STORED_TRACESTATE = 512

_PROPAGATOR = TraceContextTextMapPropagator()
_tracer: Tracer | None = None


def configure(provider: TracerProvider | None) -> None:
    """Trace with `provider` from now on; None turns tracing off."""
    global _tracer  # set once at start-up (tests switch it)
    _tracer = provider.get_tracer("qbo-sync") if provider is not None else None


def enabled() -> bool:
    return _tracer is not None


def configure_from_settings(settings: Settings, service_name: str) -> TracerProvider | None:
    """Trace when `OTEL_TRACES_EXPORTER` names an exporter (`otlp` or `console`); unset, it is
    off, unlike the SDK's default. The OTLP exporter reads its own `OTEL_EXPORTER_OTLP_*`
    variables and the resource `OTEL_RESOURCE_ATTRIBUTES`. Returns the provider, if it traces."""
    name = settings.otel_traces_exporter
    if name == "none" or settings.otel_sdk_disabled:
        configure(None)
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SpanExporter,
        )

        exporter: SpanExporter
        if name == "console":
            exporter = ConsoleSpanExporter()
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
    except ImportError as exc:
        # The service still runs, untraced: tracing is never a reason to stop syncing.
        log.error("tracing.not_configured", exporter=name, error=str(exc), hint="the tracing extra")
        configure(None)
        return None
    resource = Resource.create({"service.name": settings.otel_service_name or service_name})
    provider = SdkTracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    configure(provider)
    log.info("tracing.configured", exporter=name)
    return provider


# -- spans -------------------------------------------------------------------------------------


# What `span` and `consumed_batch` return when off: one shared do-nothing context manager, so
# an untraced `with` costs a call and a check, not a generator.
_OFF: AbstractContextManager[Any] = nullcontext()


def span(
    name: str, kind: SpanKind = SpanKind.INTERNAL, attributes: Mapping[str, Any] | None = None
) -> AbstractContextManager[Any]:
    """A span around the block, current inside it (so Kafka headers sent there name it)."""
    if _tracer is None:
        return _OFF
    return _tracer.start_as_current_span(name, kind=kind, attributes=attributes)


def annotate_command(command: Command) -> None:
    """Name the command in the current span, once it is parsed: its realm, id and type (never a
    customer's or an invoice's id)."""
    if _tracer is None:
        return
    trace.get_current_span().set_attributes(
        {
            "qbo.realm_id": command.realm_id,
            "qbo.command_id": command.command_id,
            "qbo.command_type": command.type,
        }
    )


def consumed(
    run: Callable[[], Awaitable[T]],
    name: str,
    headers: KafkaHeaders | None,
    attributes: Mapping[str, Any] | None = None,
) -> Callable[[], Awaitable[T]]:
    """`run` inside a consumer span whose parent is the context in the record's headers."""
    tracer = _tracer
    if tracer is None:
        return run
    parent = context_of(headers)

    async def traced() -> T:
        with tracer.start_as_current_span(
            name, context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        ):
            return await run()

    return traced


def consumed_batch(
    name: str, records: Iterable[Any], attributes: Mapping[str, Any] | None = None
) -> AbstractContextManager[Any]:
    """One consumer span per record (each a child of its own record's context), all spanning
    the block: a batch written together serves many traces. `records` is read only when on."""
    if _tracer is None:
        return _OFF
    return _batch_spans(_tracer, name, records, attributes)


@contextmanager
def _batch_spans(
    tracer: Tracer, name: str, records: Iterable[Any], attributes: Mapping[str, Any] | None
) -> Iterator[None]:
    spans = [
        tracer.start_span(
            name,
            context=context_of(getattr(record, "headers", None)),
            kind=SpanKind.CONSUMER,
            attributes={
                **(attributes or {}),
                "messaging.destination.partition.id": str(getattr(record, "partition", "")),
                "messaging.kafka.offset": int(getattr(record, "offset", -1)),
            },
        )
        for record in records
    ]
    try:
        yield
    finally:
        for each in spans:
            each.end()


# -- propagation -------------------------------------------------------------------------------


class _HeadersGetter(Getter[KafkaHeaders]):
    def get(self, carrier: KafkaHeaders, key: str) -> list[str] | None:
        values = [v.decode("latin-1") for k, v in carrier if k == key and isinstance(v, bytes)]
        return values or None

    def keys(self, carrier: KafkaHeaders) -> list[str]:
        return [k for k, _ in carrier]


_GETTER = _HeadersGetter()


def kafka_headers() -> list[tuple[str, bytes]] | None:
    """`traceparent` (and `tracestate`) of the current span as Kafka headers; None when off."""
    if _tracer is None:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return [(k, v.encode()) for k, v in carrier.items()] or None


def context_of(headers: KafkaHeaders | None) -> Context:
    """The trace context a record's headers carry (an empty context when none)."""
    return _PROPAGATOR.extract(list(headers or ()), getter=_GETTER)


def version_context(version: int) -> dict[str, Any]:
    """What to store with an invoice version so its event, built now or re-emitted from the
    stored document later, names the trace that stored it (the same bytes each time:
    invariant 4). Empty when off, so nothing is stored."""
    if _tracer is None:
        return {}
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    if "traceparent" not in carrier:
        return {}
    if len(carrier.get("tracestate", "")) > MAX_STORED_TRACESTATE:
        del carrier["tracestate"]  # the trace is still named; vendors' state is optional
    return {"trace": {"version": version, **carrier}}


def event_extension(doc: Mapping[str, Any]) -> dict[str, str]:
    """The CloudEvents distributed-tracing attributes of a stored version's event: the context
    stored with this very version, never one left by an earlier version."""
    stored = doc.get("trace")
    if not isinstance(stored, dict) or stored.get("version") != doc.get("version"):
        return {}
    return {name: str(stored[name]) for name in TRACE_HEADERS if stored.get(name)}


# -- HTTP --------------------------------------------------------------------------------------

_ID_SEGMENT = re.compile(r"/[0-9]+(?=/|$)")


def url_template(path: str) -> str:
    """A low-cardinality path: numeric segments (realm and entity ids) become `{id}`."""
    return _ID_SEGMENT.sub("/{id}", path)


def http_client_tracing() -> aiohttp.TraceConfig:
    """Client spans for an aiohttp session: method, URL template, status; never the query
    string, the headers or the body (they hold tokens and QBO queries)."""

    async def start(
        _: aiohttp.ClientSession, ctx: SimpleNamespace, params: aiohttp.TraceRequestStartParams
    ) -> None:
        ctx.span = None
        if _tracer is None:
            return
        template = url_template(params.url.path)
        ctx.span = _tracer.start_span(
            f"{params.method} {template}",
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": params.method,
                "url.template": template,
                "server.address": params.url.host or "",
                "server.port": params.url.port or 0,
            },
        )

    async def end(
        _: aiohttp.ClientSession, ctx: SimpleNamespace, params: aiohttp.TraceRequestEndParams
    ) -> None:
        current: Span | None = getattr(ctx, "span", None)
        if current is None:
            return
        status = params.response.status
        current.set_attribute("http.response.status_code", status)
        if tid := params.response.headers.get("intuit_tid"):
            current.set_attribute("qbo.intuit_tid", tid)
        if status >= 400:
            current.set_status(StatusCode.ERROR)
        current.end()

    async def failed(
        _: aiohttp.ClientSession,
        ctx: SimpleNamespace,
        params: aiohttp.TraceRequestExceptionParams,
    ) -> None:
        current: Span | None = getattr(ctx, "span", None)
        if current is None:
            return
        current.set_attribute("error.type", type(params.exception).__name__)
        current.set_status(StatusCode.ERROR)
        current.end()

    config = aiohttp.TraceConfig()
    config.on_request_start.append(start)
    config.on_request_end.append(end)
    config.on_request_exception.append(failed)
    return config


class ServerSpans:
    """Pure ASGI middleware: a server span per HTTP request, named by its route template and
    continuing the caller's trace when the request carries a `traceparent`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracer = _tracer
        if tracer is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = [(k.decode("latin-1"), v) for k, v in scope.get("headers", ())]
        method = str(scope["method"])
        with tracer.start_as_current_span(
            method,
            context=context_of(headers),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method},
        ) as current:

            async def observe(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    current.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        current.set_status(StatusCode.ERROR)
                await send(message)

            try:
                await self.app(scope, receive, observe)
            finally:
                # The router put the matched route in the scope; never the raw path.
                route = getattr(scope.get("route"), "path", None)
                if route is not None:
                    current.update_name(f"{method} {route}")
                    current.set_attribute("http.route", route)
