"""Composition root of the sync service: builds every adapter once and wires them together."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp
from aiokafka import AIOKafkaProducer
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.common.crypto import KeyRing
from services.common.kafka import ensure_topics, make_consumer, make_producer, topics_for
from services.common.messages import Command
from services.common.mongo import Document, ensure_indexes, make_client
from services.common.settings import Settings
from services.sync import store as store_module
from services.sync import vault as vault_module
from services.sync.events import InvoiceEvents
from services.sync.handlers import Dependencies
from services.sync.oauth import state as state_module
from services.sync.oauth.flow import OAuthFlow
from services.sync.oauth.intuit import IntuitOAuthClient
from services.sync.oauth.state import StateSigner, StateStore
from services.sync.quickbooks.budget import RealmBudget
from services.sync.quickbooks.client import QboClient
from services.sync.store import CdcCheckpoints, CommandLog, CustomerMappings, InvoiceStore, Outbox
from services.sync.vault import TokenVault
from services.sync.web import JSON, mapping_routes, oauth_routes
from services.sync.webhooks import webhook_routes
from services.sync.worker import CommandWorker, WorkerOptions

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class InsecureConfiguration(RuntimeError):
    pass


def _local_only_secret(settings: Settings, purpose: str) -> bytes:
    # A stable, public development secret so `make run` survives restarts. Anything but the
    # local environment must configure real secrets; see `load_keys`.
    if settings.environment != "local":
        raise InsecureConfiguration(f"{purpose} must be configured outside local development")
    return hashlib.sha256(f"qbo-sync local development {purpose}".encode()).digest()


def load_keys(settings: Settings) -> KeyRing:
    configured = settings.token_encryption_keys.get_secret_value()
    if configured:
        primary = settings.token_encryption_primary_key_id or configured.split(":", 1)[0]
        return KeyRing.from_env_string(configured, primary)
    return KeyRing({"local": _local_only_secret(settings, "TOKEN_ENCRYPTION_KEYS")}, "local")


def load_state_secret(settings: Settings) -> bytes:
    configured = settings.oauth_state_secret.get_secret_value()
    if configured:
        return configured.encode()
    return _local_only_secret(settings, "OAUTH_STATE_SECRET")


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

    def web_app(self) -> Starlette:
        async def healthz(_: Request) -> Response:
            return JSON({"status": "ok"})

        async def stats(_: Request) -> Response:
            # Intuit meters reads per realm: this is the figure to watch.
            return JSON({"qbo_calls_by_realm": dict(self.qbo.calls)})

        routes = [
            Route("/healthz", healthz),
            Route("/stats", stats),
            *oauth_routes(
                self.oauth, self.vault, secure_cookies=self.settings.environment != "local"
            ),
            *mapping_routes(self.deps),
            *webhook_routes(
                self.settings.qbo_webhook_verifier_token.get_secret_value(), self.publish
            ),
        ]
        return Starlette(routes=routes)

    async def publish(self, commands: Sequence[Command]) -> None:
        """Produce commands keyed by realm and wait until Kafka acknowledged all of them."""
        sends = [
            await self.producer.send(
                self.settings.commands_topic, command.to_bytes(), key=command.kafka_key()
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
        )
        # Subscribed with the worker's rebalance listener, so revoked partitions are drained.
        worker.subscribe()
        await consumer.start()
        try:
            # Events a crashed predecessor owed. Only stale entries: a fresh one may belong to a
            # live worker between its write and its produce, and closing it here would lose its
            # events if that worker then died. A redelivered command flushes its own entries.
            await worker.sweep_outbox()
            await worker.run(stop)
        finally:
            await consumer.stop()


@asynccontextmanager
async def sync_service(settings: Settings, clock: Clock = utc_now) -> AsyncIterator[SyncService]:
    """Build the service's adapters, yield them, and close them all afterwards."""
    http = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=60, connect=10),
        raise_for_status=False,
        trust_env=False,
    )
    mongo = make_client(settings.mongodb_uri, app_name="qbo-sync-sync")
    producer = make_producer(settings.kafka_bootstrap_servers, client_id="qbo-sync")
    try:
        db = mongo[settings.mongodb_database]
        await ensure_indexes(
            db, [*vault_module.INDEXES, *state_module.INDEXES, *store_module.INDEXES]
        )
        await ensure_topics(settings.kafka_bootstrap_servers, topics_for(settings))
        await producer.start()
        intuit = IntuitOAuthClient(
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
        qbo = QboClient(
            http,
            settings.qbo_api_base_url,
            vault,
            minor_version=settings.qbo_minor_version,
            budget=RealmBudget(),
        )
        flow = OAuthFlow(
            StateSigner(load_state_secret(settings), clock), StateStore(db), intuit, vault
        )
        invoices = InvoiceStore(db, clock)
        outbox = Outbox(db, clock)
        deps = Dependencies(
            qbo=qbo,
            vault=vault,
            invoices=invoices,
            mappings=CustomerMappings(db, clock),
            events=InvoiceEvents(producer, settings.invoice_events_topic, invoices, outbox, clock),
            outbox=outbox,
            checkpoints=CdcCheckpoints(db, clock),
            clock=clock,
            cdc_overlap=timedelta(seconds=settings.cdc_overlap_s),
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
        )
    finally:
        await producer.stop()
        await http.close()
        await mongo.close()
