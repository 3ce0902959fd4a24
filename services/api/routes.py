"""The api's route table: which handler (`handlers/`) answers which path, behind which rule.

`api_routes` builds each resource's handler once from the composition root's `RouteContext`
and maps the paths to their methods; `checked_routes` refuses a route without an access rule.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from services.api.auth import ApiTokens
from services.api.handlers import dashboard
from services.api.handlers.commands import Commands
from services.api.handlers.customers import Customers, MappedCustomers
from services.api.handlers.invoices import Invoices
from services.api.handlers.probes import Probes, ProjectorState
from services.api.listing_cache import ListingCache
from services.api.metrics import ApiMetrics
from services.api.producer import LazyProducer
from services.api.refresh import Publisher
from services.api.responses import error
from services.api.store import CommandPublications, CommandRecords, ReadInvoices, SyncRecords
from services.common.access import Guard, Rule, checked_routes
from services.common.connect_links import ConnectLinks


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
    # "off" (not run in this process), "running" or "stopped" (docs/design.md invariant 9).
    projector_state: Callable[[], ProjectorState] = lambda: "off"
    listings: ListingCache = field(default_factory=ListingCache)


def unauthorized() -> Response:
    return error(
        401,
        "unauthorized",
        "send a valid API token as 'Authorization: Bearer <token>'",
        {"WWW-Authenticate": 'Bearer realm="qbo-sync"'},
    )


def api_routes(ctx: RouteContext) -> list[Route]:
    guard = Guard(ctx.tokens, unauthorized)
    customers = MappedCustomers(ctx.sync_records)
    invoices = Invoices(customers, ctx.invoices, ctx.listings, ctx.metrics, ctx.clock)
    publisher = Publisher(ctx.publications, ctx.producer, ctx.commands_topic, ctx.clock)
    commands = Commands(customers, ctx.commands, publisher, ctx.metrics)
    customer = Customers(customers, ctx.links, ctx.sync_public_url)
    probes = Probes(ctx.producer, ctx.ping_mongo, ctx.projector_state, ctx.metrics)

    path = "/api/customers/{localCustomerId}"
    service, probe, page = Rule.SERVICE, Rule.PROBE, Rule.PUBLIC_PAGE
    return checked_routes(
        [
            Route(f"{path}/invoices", guard(service, invoices.list), methods=["GET"]),
            Route(
                f"{path}/refreshInvoices",
                guard(service, commands.refresh_invoices),
                methods=["POST"],
            ),
            Route("/api/commands/{commandId}", guard(service, commands.get), methods=["GET"]),
            Route(path, guard(service, customer.get), methods=["GET"]),
            Route("/healthz", guard(probe, probes.healthz), methods=["GET"]),
            Route("/readyz", guard(probe, probes.readyz), methods=["GET"]),
            Route("/metrics", guard(probe, probes.prometheus), methods=["GET"]),
            Route("/openapi.json", guard(page, probes.openapi), methods=["GET"]),
            Route("/", guard(page, dashboard.page), methods=["GET"]),
            Route("/static/{asset}", guard(page, dashboard.asset), methods=["GET"]),
        ]
    )
