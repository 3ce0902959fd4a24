"""HTTP handlers of the api: the read endpoints, the refresh command, probes and the dashboard.

Handlers validate their input first (ids, query parameters, body), answer 4xx JSON for anything
malformed, and never return a token or a stack trace.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from services.api.auth import ApiTokens
from services.api.listing import (
    Cursor,
    InvalidParameter,
    InvoiceListQuery,
    customer_filter,
    parse_invoice_query,
)
from services.api.listing_cache import ListingCache
from services.api.metrics import ApiMetrics
from services.api.openapi import COMMAND_ID_PATTERN, LOCAL_CUSTOMER_ID_PATTERN, OPENAPI
from services.api.producer import LazyProducer
from services.api.readmodel import iso_timestamp, render_invoice
from services.api.refresh import IDEMPOTENCY_KEY, Publisher, PublishFailed, request_refresh
from services.api.responses import JSON, ApiError, error
from services.api.store import (
    CommandPublications,
    CommandRecords,
    ReadInvoices,
    SyncRecords,
    customer_key,
)
from services.common import jsoncodec
from services.common.access import Guard, Rule, checked_routes
from services.common.connect_links import ConnectLinks
from services.common.httpbody import BodyRejected, read_json
from services.common.mongo import Document
from services.common.statuses import CommandStatus, ConnectionStatus
from services.common.unavailable import RETRY_AFTER_S

log = structlog.get_logger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
_LOCAL_CUSTOMER_ID = re.compile(LOCAL_CUSTOMER_ID_PATTERN)
_COMMAND_ID = re.compile(COMMAND_ID_PATTERN)
_MAX_BODY_BYTES = 16 * 1024
_PROBE_TIMEOUT_S = 2.0
_ASSETS: Mapping[str, str] = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
# The page loads only its own script and style sheet and talks only to this origin.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class RouteContext:
    """What the handlers need, built once by the composition root (`app.py`)."""

    tokens: ApiTokens
    invoices: ReadInvoices
    sync_records: SyncRecords
    commands: CommandRecords
    publications: CommandPublications
    producer: LazyProducer
    metrics: ApiMetrics
    commands_topic: str
    sync_public_url: str
    links: ConnectLinks
    clock: Callable[[], datetime]
    ping_mongo: Callable[[], Awaitable[Any]]
    # "off" (not run in this process), "running" or "stopped": a stopped projector means
    # events are no longer read, so the process is not ready (docs/design.md invariant 9).
    projector_state: Callable[[], str] = lambda: "off"
    listings: ListingCache = field(default_factory=ListingCache)


def _customer_id(request: Request) -> str:
    value = str(request.path_params["localCustomerId"])
    if not _LOCAL_CUSTOMER_ID.fullmatch(value):
        raise ApiError(400, "bad_customer_id", "customer ids are 1-128 of A-Z a-z 0-9 . _ : @ -")
    return value


def _not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", what)


def _text_or_none(value: Any) -> str | None:
    # QBO's SyncToken is a decimal string; it is stored as an integer so it can be compared.
    return None if value is None else str(value)


def render_customer(
    mapping: Mapping[str, Any],
    connection: Mapping[str, Any] | None,
    reconnect_url: Callable[[str], str],
) -> dict[str, Any]:
    """The mapping and connection status; built from the token-free projection only.

    `reconnect_url(user)` is a connect link signed for the connection's own user: only that
    user may take the company's connection over again (the sync service refuses others).
    """
    customer = {
        "local_customer_id": mapping.get("local_customer_id") or mapping["_id"],
        "realm_id": mapping["realm_id"],
        "qbo_customer_id": mapping.get("qbo_customer_id"),
        "display_name": mapping.get("display_name"),
        # The QBO customer as of the last read; `active` None until one was read.
        "active": mapping.get("active"),
        "qbo_sync_token": _text_or_none(mapping.get("qbo_sync_token")),
        "merged_from": mapping.get("merged_from"),
        "customer_read_at": iso_timestamp(mapping.get("customer_read_at")),
        "mapped_at": iso_timestamp(mapping.get("mapped_at")),
        "last_synced_at": iso_timestamp(mapping.get("last_synced_at")),
        "last_sync_command_id": mapping.get("last_sync_command_id"),
    }
    if connection is None:
        return {"customer": customer, "connection": None}
    status = connection.get("status")
    user = connection.get("user_id")
    reconnect = None
    if status != "active" and isinstance(user, str) and user:
        reconnect = reconnect_url(user)
    return {
        "customer": customer,
        "connection": {
            "realm_id": connection["_id"],
            "status": status,
            "needs_reauth": status == ConnectionStatus.NEEDS_REAUTH,
            "reauth_reason": connection.get("reauth_reason"),
            "refresh_token_hard_expires_at": iso_timestamp(
                connection.get("refresh_token_hard_expires_at")
            ),
            "updated_at": iso_timestamp(connection.get("updated_at")),
            "reconnect_url": reconnect,
        },
    }


def render_command(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A command status record; only the documented fields leave the api."""
    result = doc.get("result")
    rendered = {
        "command_id": doc["_id"],
        "type": doc.get("type") or "unknown",
        "realm_id": doc.get("realm_id") or "",
        "local_customer_id": doc.get("local_customer_id"),
        "status": doc.get("status") or CommandStatus.QUEUED.value,
        "reason": doc.get("reason"),
        "issued_at": iso_timestamp(doc.get("issued_at")),
        "issued_by": doc.get("issued_by"),
        "queued_at": iso_timestamp(doc.get("queued_at")),
        "started_at": iso_timestamp(doc.get("started_at")),
        "finished_at": iso_timestamp(doc.get("finished_at")),
        "attempts": int(doc.get("attempts") or 0),
        "result": (
            {k: int(v) for k, v in result.items() if k in ("fetched", "stored", "events")}
            if isinstance(result, Mapping)
            else None
        ),
    }
    if rendered["status"] == CommandStatus.THROTTLED:
        # The realm is paused at QBO's request; the command runs again at this time.
        rendered["resumes_at"] = iso_timestamp(doc.get("resumes_at"))
    return rendered


async def _refresh_body(request: Request) -> dict[str, Any]:
    """The optional JSON body of refreshInvoices: `{"correlation_id": "..."}`."""
    try:
        body = await read_json(request, max_bytes=_MAX_BODY_BYTES, empty={})
    except BodyRejected as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    unknown = sorted(set(body) - {"correlation_id"})
    if unknown:
        raise ApiError(400, "bad_request", f"unknown field(s): {', '.join(unknown)}")
    correlation_id = body.get("correlation_id")
    if "correlation_id" in body and not (
        isinstance(correlation_id, str) and 1 <= len(correlation_id) <= 128
    ):
        raise ApiError(400, "bad_request", "correlation_id must be a string of 1-128 characters")
    return body


def unauthorized() -> Response:
    return error(
        401,
        "unauthorized",
        "send a valid API token as 'Authorization: Bearer <token>'",
        {"WWW-Authenticate": 'Bearer realm="qbo-sync"'},
    )


def api_routes(ctx: RouteContext) -> list[Route]:
    guard = Guard(ctx.tokens, unauthorized)
    publisher = Publisher(ctx.publications, ctx.producer, ctx.commands_topic, ctx.clock)

    async def mapping_of(local_customer_id: str) -> Document:
        mapping = await ctx.sync_records.mapping(local_customer_id)
        if mapping is None:
            raise _not_found(f"customer {local_customer_id} is not mapped to a QBO customer")
        return mapping

    async def list_invoices(request: Request) -> Response:
        local_customer_id = _customer_id(request)
        try:
            query = parse_invoice_query(request.query_params)
        except InvalidParameter as exc:
            raise ApiError(400, "bad_parameter", f"{exc.param}: {exc}") from None
        customer = customer_filter(await mapping_of(local_customer_id))
        today = ctx.clock().date()
        # Read before the invoices: a listing is filed under a revision no newer than it.
        revision = await ctx.invoices.revision(customer)
        cache_key = (
            local_customer_id,
            customer_key(customer) or "",
            today.isoformat(),
            repr(sorted(request.query_params.multi_items())),
        )
        body = ctx.listings.get(cache_key, revision)
        ctx.metrics.listings.labels("miss" if body is None else "hit").inc()
        if body is None:
            body = jsoncodec.dumpb(await listing(local_customer_id, customer, query, today))
            ctx.listings.put(cache_key, revision, body)
        return Response(body, media_type="application/json")

    async def listing(
        local_customer_id: str, customer: Document, query: InvoiceListQuery, today: date
    ) -> Document:
        rows, has_more = await ctx.invoices.page(customer, query, today)
        totals = await ctx.invoices.totals(customer, query.status, today)
        next_cursor = None
        if has_more and rows:
            last = rows[-1]
            next_cursor = Cursor(query.sort.token, query.sort.value_of(last), last["_id"]).encode()
        return {
            "customer_id": local_customer_id,
            "status": query.status,
            "sort": query.sort.token,
            "as_of": today.isoformat(),
            "invoices": [render_invoice(row, today) for row in rows],
            "totals": totals.render(),
            "page": {
                "limit": query.limit,
                "offset": query.offset,
                "next_cursor": next_cursor,
                "has_more": has_more,
            },
        }

    async def refresh_invoices(request: Request) -> Response:
        local_customer_id = _customer_id(request)
        key = request.headers.get("idempotency-key")
        if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
            raise ApiError(400, "bad_idempotency_key", "Idempotency-Key: 1-255 printable ASCII")
        body = await _refresh_body(request)
        mapping = await mapping_of(local_customer_id)
        try:
            requested = await request_refresh(
                mapping,
                commands=ctx.commands,
                publisher=publisher,
                idempotency_key=key,
                correlation_id=body.get("correlation_id"),
            )
        except PublishFailed as exc:
            log.warning("api.refresh_not_published", customer=local_customer_id, error=str(exc))
            raise ApiError(
                503,
                "unavailable",
                "the command could not be queued; retry (same Idempotency-Key)",
                {"Retry-After": RETRY_AFTER_S},
            ) from None
        if requested.created:
            ctx.metrics.commands.labels("RefreshInvoices").inc()
        log.info(
            "api.refresh_requested",
            customer=local_customer_id,
            command_id=requested.command_id,
            created=requested.created,
        )
        status_url = f"/api/commands/{requested.command_id}"
        return JSON(
            {
                "command_id": requested.command_id,
                "status": requested.status,
                "status_url": status_url,
            },
            status_code=202,
            headers={"Location": status_url},
        )

    async def get_command(request: Request) -> Response:
        command_id = str(request.path_params["commandId"])
        if not _COMMAND_ID.fullmatch(command_id):
            raise ApiError(400, "bad_command_id", "command ids are lower-case UUIDs")
        doc = await ctx.commands.get(command_id)
        if doc is None:
            raise _not_found(f"no command {command_id}")
        return JSON(render_command(doc))

    async def get_customer(request: Request) -> Response:
        mapping = await mapping_of(_customer_id(request))
        connection = await ctx.sync_records.connection(mapping["realm_id"])
        return JSON(
            render_customer(
                mapping, connection, lambda user: ctx.links.url(ctx.sync_public_url, user)
            )
        )

    async def healthz(_: Request) -> Response:
        return JSON({"status": "ok"})

    async def probe(name: str, check: Awaitable[Any]) -> str:
        try:
            async with asyncio.timeout(_PROBE_TIMEOUT_S):
                await check
        except Exception as exc:
            log.warning("api.not_ready", dependency=name, error=repr(exc))
            return "unreachable"
        return "ok"

    async def readyz(_: Request) -> Response:
        kafka, mongo = await asyncio.gather(
            probe("kafka", ctx.producer.ping(_PROBE_TIMEOUT_S)),
            probe("mongo", ctx.ping_mongo()),
        )
        projector = ctx.projector_state()
        ready = kafka == mongo == "ok" and projector != "stopped"
        return JSON(
            {
                "status": "ready" if ready else "unavailable",
                "checks": {"kafka": kafka, "mongo": mongo, "projector": projector},
            },
            status_code=200 if ready else 503,
        )

    async def metrics(_: Request) -> Response:
        return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def openapi(_: Request) -> Response:
        return JSON(OPENAPI)

    async def dashboard(_: Request) -> Response:
        return FileResponse(
            STATIC_DIR / "index.html", media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS
        )

    async def asset(request: Request) -> Response:
        name = str(request.path_params["asset"])
        media_type = _ASSETS.get(name)
        if media_type is None:
            raise _not_found(f"no asset {name}")
        return FileResponse(STATIC_DIR / name, media_type=media_type, headers=_PAGE_HEADERS)

    customer = "/api/customers/{localCustomerId}"
    service, probe_rule, page = Rule.SERVICE, Rule.PROBE, Rule.PUBLIC_PAGE
    return checked_routes(
        [
            Route(f"{customer}/invoices", guard(service, list_invoices), methods=["GET"]),
            Route(
                f"{customer}/refreshInvoices", guard(service, refresh_invoices), methods=["POST"]
            ),
            Route("/api/commands/{commandId}", guard(service, get_command), methods=["GET"]),
            Route(customer, guard(service, get_customer), methods=["GET"]),
            Route("/healthz", guard(probe_rule, healthz), methods=["GET"]),
            Route("/readyz", guard(probe_rule, readyz), methods=["GET"]),
            Route("/metrics", guard(probe_rule, metrics), methods=["GET"]),
            Route("/openapi.json", guard(page, openapi), methods=["GET"]),
            Route("/", guard(page, dashboard), methods=["GET"]),
            Route("/static/{asset}", guard(page, asset), methods=["GET"]),
        ]
    )
