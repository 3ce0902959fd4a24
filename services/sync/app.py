"""Composition root of the sync service: builds every adapter once and wires them together."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.common.crypto import KeyRing
from services.common.mongo import Document, ensure_indexes, make_client
from services.common.settings import Settings
from services.sync import vault as vault_module
from services.sync.oauth import state as state_module
from services.sync.oauth.flow import OAuthFlow
from services.sync.oauth.intuit import IntuitOAuthClient
from services.sync.oauth.state import StateSigner, StateStore
from services.sync.quickbooks.budget import RealmBudget
from services.sync.quickbooks.client import QboClient
from services.sync.vault import TokenVault
from services.sync.web import JSON, oauth_routes

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

    def web_app(self) -> Starlette:
        async def healthz(_: Request) -> Response:
            return JSON({"status": "ok"})

        routes = [
            Route("/healthz", healthz),
            *oauth_routes(
                self.oauth, self.vault, secure_cookies=self.settings.environment != "local"
            ),
        ]
        return Starlette(routes=routes)


@asynccontextmanager
async def sync_service(settings: Settings, clock: Clock = utc_now) -> AsyncIterator[SyncService]:
    """Build the service's adapters, yield them, and close them all afterwards."""
    http = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=60, connect=10),
        raise_for_status=False,
        trust_env=False,
    )
    mongo = make_client(settings.mongodb_uri, app_name="qbo-sync-sync")
    try:
        db = mongo[settings.mongodb_database]
        await ensure_indexes(db, [*vault_module.INDEXES, *state_module.INDEXES])
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
        yield SyncService(settings, http, mongo, db, intuit, vault, qbo, flow)
    finally:
        await http.close()
        await mongo.close()
