"""Composition root of the api: builds every adapter once, wires routes and the projector.

async with api_service(settings) as service:  # Mongo, Kafka producer, projector task
    app = service.web_app()  # the Starlette app over them
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import structlog
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from starlette.applications import Starlette
from starlette.middleware import Middleware

from services.api.auth import ApiTokens, load_api_tokens
from services.api.handlers.probes import ProjectorState
from services.api.listing_cache import ListingCache
from services.api.metrics import ApiMetrics, MetricsMiddleware
from services.api.producer import LazyProducer
from services.api.projector import DeadLetters, Projector, run_projector
from services.api.responses import EXCEPTION_HANDLERS
from services.api.routes import RouteContext, api_routes
from services.api.store import CommandPublications, CommandRecords, ReadInvoices, SyncRecords
from services.common import tracing
from services.common.clock import Clock, utc_now
from services.common.connect_links import ConnectLinks, load_connect_link_secret
from services.common.credentials import require_own_secrets
from services.common.mongo import CommandCounter, Document, make_client
from services.common.settings import Settings

log = structlog.get_logger(__name__)

# Secrets whose defaults are published: outside local development each must be configured.
OWN_SECRETS = ("api_tokens", "connect_link_secret")


@dataclass
class ApiService:
    settings: Settings
    tokens: ApiTokens
    mongo: AsyncMongoClient[Document]
    db: AsyncDatabase[Document]
    producer: LazyProducer
    metrics: ApiMetrics
    projector: Projector
    clock: Clock
    # What HTTP handlers use: the same database through a client whose operations give up
    # after `request_timeout_s` (the projector's batches may legitimately take longer).
    requests_db: AsyncDatabase[Document] | None = None
    projector_task: asyncio.Task[None] | None = None

    def projector_state(self) -> ProjectorState:
        if self.projector_task is None:
            return "off"
        return "stopped" if self.projector_task.done() else "running"

    def web_app(self) -> Starlette:
        db = self.requests_db if self.requests_db is not None else self.db

        async def ping_mongo() -> Any:
            return await db.command("ping")

        routes = api_routes(
            RouteContext(
                tokens=self.tokens,
                invoices=ReadInvoices(db),
                sync_records=SyncRecords(db),
                commands=CommandRecords(db),
                publications=CommandPublications(db),
                producer=self.producer,
                metrics=self.metrics,
                commands_topic=self.settings.commands_topic,
                sync_public_url=self.settings.sync_public_url,
                links=ConnectLinks(load_connect_link_secret(self.settings), self.clock),
                clock=self.clock,
                ping_mongo=ping_mongo,
                projector_state=self.projector_state,
                listings=ListingCache(max_entries=self.settings.api_listing_cache_entries),
            )
        )
        return Starlette(
            routes=routes,
            middleware=[
                Middleware(tracing.ServerSpans),
                Middleware(MetricsMiddleware, metrics=self.metrics, routes=routes),
            ],
            exception_handlers=EXCEPTION_HANDLERS,
        )


@asynccontextmanager
async def api_service(
    settings: Settings, clock: Clock = utc_now, run_projector_task: bool | None = None
) -> AsyncIterator[ApiService]:
    """Build the api's adapters (and start its projector), yield them, close them afterwards.

    Neither Kafka nor MongoDB has to be up at start-up: the producer connects on first use and
    the projector retries, while `/readyz` reports what is missing.
    """
    require_own_secrets(settings, OWN_SECRETS, host=None)
    tokens = load_api_tokens(settings)
    if not settings.api_tokens.get_secret_value():
        log.warning("api.dev_token_accepted", hint="set API_TOKENS outside local development")
    counter = CommandCounter() if settings.mongodb_command_counts else None
    mongo = make_client(settings.mongodb_uri, app_name="qbo-sync-api", counter=counter)
    requests_mongo = make_client(
        settings.mongodb_uri,
        app_name="qbo-sync-api",
        operation_timeout_s=settings.request_timeout_s,
        counter=counter,
    )
    producer = LazyProducer(settings.kafka_bootstrap_servers, f"{settings.kafka_client_id}-api")
    metrics = ApiMetrics(counter)
    db = mongo[settings.mongodb_database]
    projector = Projector(
        ReadInvoices(db),
        DeadLetters(producer, settings.dead_letter_topic),
        metrics,
        clock=clock,
        batch_size=settings.projector_batch_size,
        read_ahead=settings.projector_read_ahead,
    )
    service = ApiService(
        settings,
        tokens,
        mongo,
        db,
        producer,
        metrics,
        projector,
        clock,
        requests_db=requests_mongo[settings.mongodb_database],
    )
    run = settings.api_run_projector if run_projector_task is None else run_projector_task
    try:
        if run:
            service.projector_task = asyncio.create_task(
                run_projector(settings, projector), name="projector"
            )
        yield service
    finally:
        if service.projector_task is not None:
            await _stop(service.projector_task)
        await producer.stop()
        await requests_mongo.close()
        await mongo.close()


# How long a stopping api waits for its projector at each cancellation: the whole stop must fit
# a container's grace period (10 s by default) with the producer's and clients' closing.
PROJECTOR_STOP_S = 3.0


async def _stop(task: asyncio.Task[None]) -> None:
    """Cancel the projector and wait for it, a bounded time. A cancellation that arrives while
    the Kafka consumer is still joining its group can be absorbed inside the client, leaving the
    task running: it is cancelled once more before the process goes on without it."""
    for _ in range(2):
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=PROJECTOR_STOP_S)
        if done:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                task.result()
            return
    log.error("projector.did_not_stop", within_s=2 * PROJECTOR_STOP_S)
