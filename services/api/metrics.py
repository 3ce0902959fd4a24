"""Prometheus metrics of the api process: HTTP traffic, projection progress, published commands.

Each `ApiMetrics` has its own registry, so several apps in one process (tests) do not collide,
and `/metrics` shows exactly this app's figures.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.mongo import CommandCounter


class MongoCommandsCollector(Collector):
    """`qbo_mongo_commands_total`, read from the client's `CommandCounter` at each scrape."""

    def __init__(self, counter: CommandCounter) -> None:
        self._counter = counter

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "qbo_mongo_commands",
            "Commands sent to MongoDB by caller (projector, service), command and collection.",
            labels=["caller", "command", "collection"],
        )
        for (caller, command, collection), count in sorted(self._counter.counts.items()):
            family.add_metric([caller, command, collection], count)
        yield family


class ApiMetrics:
    def __init__(self, mongo_commands: CommandCounter | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        if mongo_commands is not None:
            self.registry.register(MongoCommandsCollector(mongo_commands))
        self.requests = Counter(
            "qbo_api_requests",
            "HTTP requests answered, by route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "qbo_api_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            ["method", "route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.listings = Counter(
            "qbo_api_listing_cache",
            "Invoice listings answered from the cache (hit) or read from the read model (miss).",
            ["result"],
            registry=self.registry,
        )
        self.events = Counter(
            "qbo_api_events_projected",
            "InvoiceUpdated events handled by the projector, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in ("stored", "stale", "dead_lettered"):
            self.events.labels(outcome)  # present at 0, so rates work from the first scrape
        self.lag = Gauge(
            "qbo_api_projector_lag_events",
            "Events on the topic not yet projected, per partition (from the last fetch).",
            ["partition"],
            registry=self.registry,
        )
        self.commands = Counter(
            "qbo_api_commands_published",
            "Commands the api published to the commands topic.",
            ["type"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _route_template(routes: Sequence[BaseRoute], scope: Scope) -> str:
    # Label by template ("/api/customers/{localCustomerId}/invoices"), never by raw path:
    # one label value per customer would grow without bound.
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return str(getattr(route, "path", "other"))
    return "unmatched"


class MetricsMiddleware:
    """Pure ASGI middleware that counts and times every HTTP request."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = _route_template(self.routes, scope)
        method = scope["method"] if scope["method"] in _METHODS else "other"
        status = 500
        started = time.perf_counter()

        async def observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)
