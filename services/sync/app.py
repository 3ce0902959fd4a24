"""Composition root of the sync service: builds every adapter once and wires them together."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from opentelemetry.trace import SpanKind
from prometheus_client import CONTENT_TYPE_LATEST
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.common import tracing
from services.common.access import Guard, Rule, checked_routes
from services.common.clock import Clock, utc_now
from services.common.connect_links import ConnectLinks, load_connect_link_secret
from services.common.credentials import BearerTokens, development_secret, require_own_secrets
from services.common.crypto import KeyRing
from services.common.kafka import ensure_topics, make_consumer, make_producer, topics_for
from services.common.messages import Command
from services.common.mongo import CommandCounter, Document, ensure_indexes, make_client
from services.common.settings import Settings
from services.common.shutdown import start_unless_stopped, stop_consumer
from services.common.unavailable import RequestDeadline, unavailable_handlers
from services.sync import store as store_module
from services.sync import vault as vault_module
from services.sync.access import load_sync_tokens, unauthorized
from services.sync.events import InvoiceEvents
from services.sync.handlers import Dependencies
from services.sync.metrics import MeteredIntuitOAuthClient, SyncMetrics
from services.sync.oauth import state as state_module
from services.sync.oauth.flow import OAuthFlow
from services.sync.oauth.intuit import IntuitOAuthClient
from services.sync.oauth.realm_proof import RealmProof
from services.sync.oauth.state import StateSigner, StateStore
from services.sync.quickbooks.budget import RealmBudget
from services.sync.quickbooks.client import QboClient, RetryPolicy
from services.sync.quickbooks.tokens import TokenSource
from services.sync.store import (
    CdcCheckpoints,
    CommandLog,
    CustomerMappings,
    InvoiceStore,
    Outbox,
    RejectedInvoices,
)
from services.sync.vault import TokenVault
from services.sync.web import (
    JSON,
    internal_error,
    mapping_routes,
    oauth_routes,
    rejected_invoice_routes,
)
from services.sync.webhooks import webhook_routes
from services.sync.worker import CommandWorker, WorkerOptions

# Secrets whose defaults are published: outside local development each must be configured.
OWN_SECRETS = (
    "token_encryption_keys",
    "oauth_state_secret",
    "connect_link_secret",
    "sync_api_tokens",
    "qbo_webhook_verifier_token",
)


def load_keys(settings: Settings) -> KeyRing:
    configured = settings.token_encryption_keys.get_secret_value()
    if configured:
        primary = settings.token_encryption_primary_key_id or configured.split(":", 1)[0]
        return KeyRing.from_env_string(configured, primary)
    # Published; `sync_service` has already refused it anywhere but local mode.
    return KeyRing({"local": development_secret("TOKEN_ENCRYPTION_KEYS")}, "local")


def load_state_secret(settings: Settings) -> bytes:
    configured = settings.oauth_state_secret.get_secret_value()
    if configured:
        return configured.encode()
    return development_secret("OAUTH_STATE_SECRET")


@dataclass
class SyncService:
    settings: Settings
    http: aiohttp.ClientSession
    mongo: AsyncMongoClient[Document]
    db: AsyncDatabase[Document]
    intuit: IntuitOAuthClient
    vault: TokenVault
    qbo: QboClient
    oauth: OAuthFlow
    producer: AIOKafkaProducer
    commands: CommandLog
    deps: Dependencies
    rejected: RejectedInvoices  # also read by /stats and /rejected-invoices
    events: InvoiceEvents  # its emitted count is read by /metrics
    outbox: Outbox  # its oldest open entry is read by /metrics
    tokens: BearerTokens
    links: ConnectLinks
    metrics: SyncMetrics = field(default_factory=SyncMetrics)
    mongo_commands: CommandCounter | None = None
    worker_task: asyncio.Task[None] | None = None
    webhook_rejections: Counter[str] = field(default_factory=Counter)
    consumer: AIOKafkaConsumer | None = None  # the worker's, while it runs (consumer lag)

    def __post_init__(self) -> None:
        # Counted for /stats already: /metrics reads the same counts at each scrape.
        self.metrics.read_at_scrape(
            "qbo_sync_events_emitted",
            "InvoiceUpdated events Kafka acknowledged (re-emissions included).",
            lambda: self.events.emitted,
        )
        self.metrics.read_at_scrape(
            "qbo_sync_webhook_events_rejected",
            "Malformed events of signed webhook deliveries, by reason.",
            lambda: self.webhook_rejections,
            label="reason",
        )
        self.metrics.read_at_scrape(
            "qbo_sync_invoices_rejected",
            "Invoices QBO sent that could not be stored, by realm (see /rejected-invoices).",
            lambda: self.rejected.counts,
            label="realm_id",
        )

    def start_worker(self, stop: asyncio.Event) -> asyncio.Task[None]:
        """Run the command consumer in the background; `/readyz` follows it."""
        self.worker_task = asyncio.create_task(self.run_worker(stop), name="command-worker")
        return self.worker_task

    def worker_state(self) -> str:
        """`off` (a web-only process), `running`, or `stopped` (the consumer is gone)."""
        if self.worker_task is None:
            return "off"
        return "stopped" if self.worker_task.done() else "running"

    def web_app(self) -> Starlette:
        guard = Guard(self.tokens, unauthorized)

        async def healthz(_: Request) -> Response:
            return JSON({"status": "ok"})

        async def readyz(_: Request) -> Response:
            # A process whose consumer died must leave the Service at once; `__main__` also
            # ends the process, but this answer holds until it has.
            worker = self.worker_state()
            ready = worker != "stopped"
            return JSON(
                {"status": "ready" if ready else "unavailable", "checks": {"worker": worker}},
                status_code=200 if ready else 503,
            )

        async def stats(_: Request) -> Response:
            # Intuit meters reads per realm: this is the figure to watch. It names every
            # connected realm, so only the service's callers may read it.
            body: dict[str, object] = {
                "qbo_calls_by_realm": dict(self.qbo.calls),
                # Invoices QBO sent that could not be stored, since this process started;
                # the entries themselves are at /rejected-invoices.
                "rejected_invoices_by_realm": dict(self.rejected.counts),
                # Malformed events of signed webhook deliveries (taken event by event, the
                # rest of each delivery synced), since this process started, by reason.
                "webhook_events_rejected_by_reason": dict(self.webhook_rejections),
            }
            if self.mongo_commands is not None:
                body["mongo_commands"] = self.mongo_commands.rows()
            return JSON(body)

        async def metrics(_: Request) -> Response:
            # Labelled by realm like /stats, so only the service's callers may read it.
            await self.metrics.observe(self.outbox.oldest, self.deps.clock(), self.consumer)
            return Response(self.metrics.render(), media_type=CONTENT_TYPE_LATEST)

        routes = [
            Route("/healthz", guard(Rule.PROBE, healthz), methods=["GET"]),
            Route("/readyz", guard(Rule.PROBE, readyz), methods=["GET"]),
            Route("/stats", guard(Rule.SERVICE, stats), methods=["GET"]),
            Route("/metrics", guard(Rule.SERVICE, metrics), methods=["GET"]),
            *oauth_routes(
                self.oauth,
                self.vault,
                self.links,
                guard,
                public_url=self.settings.sync_public_url,
                secure_cookies=self.settings.environment != "local",
            ),
            *mapping_routes(self.deps, guard),
            *guard.routes(Rule.SERVICE, rejected_invoice_routes(self.rejected)),
            *guard.routes(
                Rule.WEBHOOK_SIGNATURE,
                webhook_routes(
                    self.settings.qbo_webhook_verifier_token.get_secret_value(),
                    self.publish,
                    rejections=self.webhook_rejections,
                ),
            ),
        ]
        return Starlette(
            routes=checked_routes(routes),
            # MongoDB operations of a request give up after request_timeout_s; a database or
            # Kafka that does not answer is a 503 with Retry-After, anything else a JSON 500.
            middleware=[
                Middleware(tracing.ServerSpans),
                Middleware(RequestDeadline, seconds=self.settings.request_timeout_s),
            ],
            exception_handlers={
                **unavailable_handlers(internal_error),
                Exception: internal_error,
            },
        )

    async def publish(self, commands: Sequence[Command]) -> None:
        """Produce commands keyed by realm and wait until Kafka acknowledged all of them."""
        with tracing.span("send commands", SpanKind.PRODUCER, {"commands": len(commands)}):
            headers = tracing.kafka_headers()
            sends = [
                await self.producer.send(
                    self.settings.commands_topic,
                    command.to_bytes(),
                    key=command.kafka_key(),
                    headers=headers,
                )
                for command in commands
            ]
            await asyncio.gather(*sends)

    async def run_worker(self, stop: asyncio.Event) -> None:
        """Be one member of the sync consumer group until `stop` is set."""
        s = self.settings
        consumer = make_consumer(
            s.kafka_bootstrap_servers,
            s.sync_consumer_group,
            client_id="qbo-sync-worker",
            max_poll_records=500,
        )
        worker = CommandWorker(
            consumer,
            self.producer,
            self.deps,
            self.commands,
            WorkerOptions(
                commands_topic=s.commands_topic,
                dead_letter_topic=s.dead_letter_topic,
                max_attempts=s.command_max_attempts,
                cdc_poll_interval_s=s.cdc_poll_interval_s,
                outbox_sweep_interval_s=s.outbox_sweep_interval_s,
                concurrency=s.worker_concurrency,
                max_in_flight_per_partition=s.worker_max_in_flight_per_partition,
                throttle_pause_s=s.qbo_throttle_pause_s,
                throttle_give_up_s=s.qbo_throttle_give_up_s,
                rebalance_grace_s=s.worker_rebalance_grace_s,
            ),
            metrics=self.metrics,
        )
        # Subscribed with the worker's rebalance listener, so revoked partitions are drained.
        worker.subscribe()
        if not await start_unless_stopped(consumer, stop):
            return  # stopped while joining the group: nothing was assigned
        self.consumer = consumer
        try:
            # Events a crashed predecessor owed. Only stale entries: a fresh one may belong to a
            # live worker between its write and its produce, and closing it here would lose its
            # events if that worker then died. A redelivered command flushes its own entries.
            await worker.sweep_outbox()
            await worker.run(stop)
        finally:
            self.consumer = None
            # Bounded: a join behind a crashed member would hold it for its session timeout.
            await stop_consumer(consumer)


def qbo_http_session(metrics: SyncMetrics) -> aiohttp.ClientSession:
    """The HTTP client of every QBO and Intuit call.

    No cap on connections across realms: a realm's requests are bounded by its QBO budget
    (Intuit's 10 at once) and the realms by WORKER_CONCURRENCY. aiohttp's default cap of 100 is
    reached by 50 companies refreshing at once (each reads its next page while storing one), and
    a 51st company's request would then wait for another's page (docs/design.md invariant 8).
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=60, connect=10),
        raise_for_status=False,
        trust_env=False,
        # Every QBO attempt passes here: counted by realm and traced as a client span.
        trace_configs=[metrics.qbo_call_counting(), tracing.http_client_tracing()],
    )


@asynccontextmanager
async def sync_service(settings: Settings, clock: Clock = utc_now) -> AsyncIterator[SyncService]:
    """Build the service's adapters, yield them, and close them all afterwards."""
    require_own_secrets(settings, OWN_SECRETS, host=None)
    tokens = load_sync_tokens(settings)
    links = ConnectLinks(load_connect_link_secret(settings), clock)
    metrics = SyncMetrics()
    http = qbo_http_session(metrics)
    counter = CommandCounter() if settings.mongodb_command_counts else None
    mongo = make_client(settings.mongodb_uri, app_name="qbo-sync-sync", counter=counter)
    producer = make_producer(settings.kafka_bootstrap_servers, client_id="qbo-sync")
    try:
        db = mongo[settings.mongodb_database]
        await ensure_indexes(
            db, [*vault_module.INDEXES, *state_module.INDEXES, *store_module.INDEXES]
        )
        await ensure_topics(settings.kafka_bootstrap_servers, topics_for(settings))
        await producer.start()
        intuit = MeteredIntuitOAuthClient(
            metrics,
            http,
            authorize_url=settings.qbo_oauth_authorize_url,
            token_url=settings.qbo_oauth_token_url,
            revoke_url=settings.qbo_oauth_revoke_url,
            client_id=settings.qbo_client_id,
            client_secret=settings.qbo_client_secret.get_secret_value(),
            redirect_uri=settings.qbo_redirect_uri,
            clock=clock,
        )
        vault = TokenVault(db, load_keys(settings), intuit, clock)
        budget = RealmBudget()
        retry = RetryPolicy(base_delay_s=settings.qbo_retry_base_delay_s)
        qbo = QboClient(
            http,
            settings.qbo_api_base_url,
            vault,
            minor_version=settings.qbo_minor_version,
            budget=budget,
            retry=retry,
        )

        def proof_client(tokens: TokenSource) -> QboClient:
            client = QboClient(
                http,
                settings.qbo_api_base_url,
                tokens,
                minor_version=settings.qbo_minor_version,
                budget=budget,
                retry=retry,
            )
            client.calls = qbo.calls  # Intuit meters the proof read too: count it in /stats
            return client

        flow = OAuthFlow(
            StateSigner(load_state_secret(settings), clock),
            StateStore(db),
            intuit,
            vault,
            RealmProof(proof_client),
        )
        invoices = InvoiceStore(db, clock)
        outbox = Outbox(db, clock)
        rejected = RejectedInvoices(db, clock)
        events = InvoiceEvents(producer, settings.invoice_events_topic, invoices, outbox, clock)
        deps = Dependencies(
            qbo=qbo,
            vault=vault,
            invoices=invoices,
            mappings=CustomerMappings(db, clock),
            events=events,
            outbox=outbox,
            checkpoints=CdcCheckpoints(db, clock),
            rejected=rejected,
            clock=clock,
            cdc_overlap=timedelta(seconds=settings.cdc_overlap_s),
            page_writes=asyncio.Semaphore(settings.worker_page_writes),
        )
        yield SyncService(
            settings,
            http,
            mongo,
            db,
            intuit,
            vault,
            qbo,
            flow,
            producer,
            CommandLog(db, clock),
            deps,
            rejected,
            events,
            outbox,
            tokens,
            links,
            metrics,
            counter,
        )
    finally:
        await producer.stop()
        await http.close()
        await mongo.close()
