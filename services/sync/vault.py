"""The token vault: QBO connections with their OAuth tokens, encrypted at rest.

One document per realm in `connections`. Tokens are sealed with AES-256-GCM (`KeyRing`), with
the realm id and the token kind as associated data, so a ciphertext copied to another realm's
document or swapped between the access and refresh fields does not decrypt.

Refresh rules (docs/design.md invariants 1 and 2):
- single flight per realm within the process (one lock per realm), and compare-and-swap on the
  document's `version` against everyone else (the OAuth callback, another worker after a
  partition move);
- Intuit may rotate the refresh token on every refresh and the old one stops working, so the new
  pair is persisted *before* the new access token is handed to anyone;
- `invalid_grant` marks the connection `needs_reauth`, and nothing calls Intuit for it again
  until the company re-connects.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError

from services.common.crypto import KeyRing
from services.common.mongo import Document, IndexSpec
from services.common.statuses import ConnectionStatus
from services.sync.oauth.intuit import IntuitOAuthClient, InvalidGrant, OAuthError, TokenGrant
from services.sync.quickbooks.errors import ReauthRequired

COLLECTION = "connections"
INDEXES = [IndexSpec(COLLECTION, [("status", 1)], "status")]

# Refresh a little before Intuit's expiry so a token cannot die in flight.
REFRESH_MARGIN = timedelta(minutes=5)
# How long a connection read from the database serves later commands of the realm in this
# process (docs/design.md invariant 1): a webhook change no longer pays a read of it. A token
# revoked or re-issued elsewhere meanwhile is caught by Intuit's 401, whose refresh reads again.
CONNECTION_CACHE = timedelta(seconds=30)
# Warn this long before the refresh token's hard maximum lifetime ends.
HARD_EXPIRY_WARNING = timedelta(days=30)

log = structlog.get_logger(__name__)


class NotConnected(Exception):
    """No connection exists for the realm."""

    def __init__(self, realm_id: str) -> None:
        self.realm_id = realm_id
        super().__init__(f"realm {realm_id} is not connected")


class RealmOwnedByAnotherUser(Exception):
    """The realm is connected by another app user; only that user may connect it again."""

    def __init__(self, realm_id: str) -> None:
        self.realm_id = realm_id
        super().__init__(f"realm {realm_id} is connected by another user")


@dataclass(frozen=True)
class Connection:
    realm_id: str
    user_id: str
    status: ConnectionStatus
    version: int
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    access_token_expires_at: datetime | None
    refresh_token_expires_at: datetime | None
    refresh_token_hard_expires_at: datetime | None
    connected_at: datetime
    updated_at: datetime
    reauth_reason: str | None = None

    def public(self) -> dict[str, Any]:
        """What may leave the sync service: everything except the tokens."""
        return {
            "realm_id": self.realm_id,
            "user_id": self.user_id,
            "status": self.status.value,
            "access_token_expires_at": self.access_token_expires_at,
            "refresh_token_expires_at": self.refresh_token_expires_at,
            "refresh_token_hard_expires_at": self.refresh_token_hard_expires_at,
            "connected_at": self.connected_at,
            "updated_at": self.updated_at,
            "reauth_reason": self.reauth_reason,
        }


class TokenVault:
    """Stores connections and hands out valid access tokens (a QBO client `TokenSource`)."""

    def __init__(
        self,
        db: AsyncDatabase[Document],
        keys: KeyRing,
        oauth: IntuitOAuthClient,
        clock: Callable[[], datetime],
        refresh_margin: timedelta = REFRESH_MARGIN,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        cache_for: timedelta = CONNECTION_CACHE,
    ) -> None:
        self._connections = db[COLLECTION]
        self._keys = keys
        self._oauth = oauth
        self._clock = clock
        self._margin = refresh_margin
        self._sleep = sleep
        self._locks: dict[str, asyncio.Lock] = {}
        self._cache_for = cache_for
        self._recent: dict[str, tuple[datetime, Connection]] = {}  # realm -> (read at, as read)

    # -- connecting -------------------------------------------------------------------------

    async def connect(self, realm_id: str, user_id: str, grant: TokenGrant) -> Connection:
        """Store the tokens of a fresh consent (the OAuth callback). A re-connect replaces the
        old tokens and bumps the version, so an in-flight refresh of the old grant loses its
        compare-and-swap instead of overwriting the new tokens.

        A realm belongs to the app user who connected it until it is disconnected: another
        user's consent raises `RealmOwnedByAnotherUser` instead of silently taking the
        connection (and the customers mapped to it) over."""
        now = self._clock()
        # One atomic step: the filter matches only our own or a released connection, so a
        # realm owned by someone else makes the upsert collide on `_id` instead of replacing it.
        owned_or_free = {
            "_id": realm_id,
            "$or": [{"user_id": user_id}, {"status": ConnectionStatus.DISCONNECTED.value}],
        }
        try:
            doc = await self._connections.find_one_and_update(
                owned_or_free,
                {
                    "$set": {
                        "realm_id": realm_id,
                        "user_id": user_id,
                        "status": ConnectionStatus.ACTIVE.value,
                        "reauth_reason": None,
                        "updated_at": now,
                        **self._sealed(realm_id, grant),
                    },
                    "$setOnInsert": {"connected_at": now},
                    "$inc": {"version": 1},
                },
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            log.warning("connection.takeover_refused", realm_id=realm_id, user_id=user_id)
            raise RealmOwnedByAnotherUser(realm_id) from None
        assert doc is not None  # upsert with AFTER always returns the document
        self._recent.pop(realm_id, None)
        log.info("connection.connected", realm_id=realm_id, user_id=user_id)
        return self._open(doc)

    async def disconnect(self, realm_id: str) -> Connection:
        """Revoke the grant at Intuit (best effort) and forget the tokens."""
        conn = await self.get(realm_id)
        self._recent.pop(realm_id, None)
        if conn.status is not ConnectionStatus.DISCONNECTED and conn.refresh_token:
            try:
                await self._oauth.revoke(conn.refresh_token)
            except (OAuthError, OSError, TimeoutError) as exc:
                # The tokens are wiped here whatever Intuit says; an unrevoked grant dies with
                # its rolling expiry. Log it so an operator can revoke from Intuit's side.
                log.warning("connection.revoke_failed", realm_id=realm_id, error=str(exc))
        doc = await self._connections.find_one_and_update(
            {"_id": realm_id},
            {
                "$set": {
                    "status": ConnectionStatus.DISCONNECTED.value,
                    "access_token": None,
                    "refresh_token": None,
                    "updated_at": self._clock(),
                },
                "$inc": {"version": 1},
            },
            return_document=ReturnDocument.AFTER,
        )
        self._recent.pop(realm_id, None)
        if doc is None:
            raise NotConnected(realm_id)
        log.info("connection.disconnected", realm_id=realm_id)
        return self._open(doc)

    async def get(self, realm_id: str) -> Connection:
        doc = await self._connections.find_one({"_id": realm_id})
        if doc is None:
            self._recent.pop(realm_id, None)
            raise NotConnected(realm_id)
        conn = self._open(doc)
        self._recent[realm_id] = (self._clock(), conn)
        return conn

    async def active_realms(self) -> list[str]:
        cursor = self._connections.find({"status": ConnectionStatus.ACTIVE.value}, {"_id": 1})
        return [str(d["_id"]) async for d in cursor]

    # -- TokenSource ------------------------------------------------------------------------

    async def access_token(self, realm_id: str) -> str:
        recent = self._recent.get(realm_id)
        if (
            recent is not None
            and self._clock() - recent[0] < self._cache_for
            and recent[1].status is ConnectionStatus.ACTIVE
            and self._fresh(recent[1])
        ):
            return recent[1].access_token
        conn = await self._usable(realm_id)
        if self._fresh(conn):
            return conn.access_token
        return await self._refresh(realm_id, rejected=None)

    async def refresh_after_401(self, realm_id: str, rejected: str) -> str:
        return await self._refresh(realm_id, rejected=rejected)

    # -- internals --------------------------------------------------------------------------

    async def _refresh(self, realm_id: str, rejected: str | None) -> str:
        lock = self._locks.setdefault(realm_id, asyncio.Lock())
        async with lock:
            # Re-read under the lock: whoever held it before us may have refreshed already.
            conn = await self._usable(realm_id)
            if rejected is None and self._fresh(conn):
                return conn.access_token
            if rejected is not None and conn.access_token != rejected:
                return conn.access_token
            try:
                grant = await self._oauth.refresh(conn.refresh_token)
            except InvalidGrant as exc:
                await self._mark_needs_reauth(conn, f"refresh token rejected: {exc.error}")
                raise ReauthRequired(realm_id=realm_id) from None
            return await self._persist_refresh(conn, grant)

    async def _persist_refresh(self, conn: Connection, grant: TokenGrant) -> str:
        self._recent.pop(conn.realm_id, None)
        now = self._clock()
        update = {
            "$set": {
                "updated_at": now,
                "last_refreshed_at": now,
                **self._sealed(conn.realm_id, grant),
            },
            "$inc": {"version": 1, "refresh_count": 1},
        }
        for attempt in range(4):
            try:
                result = await self._connections.update_one(
                    {"_id": conn.realm_id, "version": conn.version}, update
                )
                break
            except PyMongoError as exc:
                # The old refresh token is already dead at Intuit: keep trying to save the new one.
                log.error(
                    "connection.refresh_not_persisted", realm_id=conn.realm_id, attempt=attempt
                )
                if attempt == 3:
                    raise ReauthRequired(
                        "rotated refresh token could not be stored", realm_id=conn.realm_id
                    ) from exc
                await self._sleep(0.2 * 2**attempt)
        if result.matched_count != 1:
            # Someone re-connected (or disconnected) while we refreshed: their tokens win.
            log.info("connection.refresh_superseded", realm_id=conn.realm_id)
            return (await self._usable(conn.realm_id)).access_token
        self._warn_hard_expiry(conn.realm_id, grant.refresh_token_hard_expires_at)
        log.info("connection.token_refreshed", realm_id=conn.realm_id)
        return grant.access_token

    async def _mark_needs_reauth(self, conn: Connection, reason: str) -> None:
        self._recent.pop(conn.realm_id, None)
        await self._connections.update_one(
            {"_id": conn.realm_id, "version": conn.version},
            {
                "$set": {
                    "status": ConnectionStatus.NEEDS_REAUTH.value,
                    "reauth_reason": reason,
                    "updated_at": self._clock(),
                },
                "$inc": {"version": 1},
            },
        )
        log.warning("connection.needs_reauth", realm_id=conn.realm_id, reason=reason)

    async def _usable(self, realm_id: str) -> Connection:
        conn = await self.get(realm_id)
        if conn.status is not ConnectionStatus.ACTIVE:
            raise ReauthRequired(
                f"QBO connection is {conn.status.value}; the company must connect again",
                realm_id=realm_id,
            )
        return conn

    def _fresh(self, conn: Connection) -> bool:
        expires = conn.access_token_expires_at
        return expires is not None and self._clock() + self._margin < expires

    def _warn_hard_expiry(self, realm_id: str, hard_expires_at: datetime | None) -> None:
        if hard_expires_at is not None and hard_expires_at - self._clock() < HARD_EXPIRY_WARNING:
            log.warning(
                "connection.refresh_token_hard_expiry_near",
                realm_id=realm_id,
                hard_expires_at=hard_expires_at.isoformat(),
            )

    def _sealed(self, realm_id: str, grant: TokenGrant) -> dict[str, Any]:
        return {
            "access_token": self._keys.encrypt(grant.access_token, f"{realm_id}/access"),
            "refresh_token": self._keys.encrypt(grant.refresh_token, f"{realm_id}/refresh"),
            "access_token_expires_at": grant.access_token_expires_at,
            "refresh_token_expires_at": grant.refresh_token_expires_at,
            "refresh_token_hard_expires_at": grant.refresh_token_hard_expires_at,
        }

    def _open(self, doc: Document) -> Connection:
        realm_id = str(doc["_id"])
        access, refresh = doc.get("access_token"), doc.get("refresh_token")
        return Connection(
            realm_id=realm_id,
            user_id=str(doc["user_id"]),
            status=ConnectionStatus(doc["status"]),
            version=int(doc["version"]),
            access_token=self._keys.decrypt(access, f"{realm_id}/access") if access else "",
            refresh_token=self._keys.decrypt(refresh, f"{realm_id}/refresh") if refresh else "",
            access_token_expires_at=doc.get("access_token_expires_at"),
            refresh_token_expires_at=doc.get("refresh_token_expires_at"),
            refresh_token_hard_expires_at=doc.get("refresh_token_hard_expires_at"),
            connected_at=doc["connected_at"],
            updated_at=doc["updated_at"],
            reauth_reason=doc.get("reauth_reason"),
        )
