"""Connect a QBO company: start the consent redirect, then finish it on Intuit's callback."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from services.sync.oauth.intuit import IntuitOAuthClient, InvalidGrant, OAuthError, TokenGrant
from services.sync.oauth.realm_proof import QboUnreachable, RealmNotProven, RealmProof
from services.sync.oauth.state import IssuedState, StateRejected, StateSigner, StateStore
from services.sync.vault import Connection, RealmOwnedByAnotherUser, TokenVault

USER_ID = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")
REALM_ID = re.compile(r"^[0-9]{1,32}$")

log = structlog.get_logger(__name__)


class ConnectRejected(Exception):
    """The connect flow cannot go on. `reason` is safe to show to the user; `status` is HTTP."""

    def __init__(self, reason: str, status: int = 400, code: str = "connect_rejected") -> None:
        self.reason = reason
        self.status = status
        self.code = code
        super().__init__(reason)


@dataclass(frozen=True)
class Started:
    state: IssuedState
    authorize_url: str


class OAuthFlow:
    def __init__(
        self,
        signer: StateSigner,
        states: StateStore,
        intuit: IntuitOAuthClient,
        vault: TokenVault,
        proof: RealmProof,
    ) -> None:
        self._signer = signer
        self._states = states
        self._intuit = intuit
        self._vault = vault
        self._proof = proof

    async def start(self, user_id: str | None) -> Started:
        if not user_id or not USER_ID.match(user_id):
            raise ConnectRejected("query parameter 'user' must name the app user", code="bad_user")
        state = self._signer.issue(user_id)
        await self._states.remember(state)
        return Started(state, self._intuit.authorize_url(state.value))

    async def finish(self, params: Mapping[str, str], browser_nonce: str | None) -> Connection:
        if "error" in params:
            # Intuit sends the user back with error=access_denied when they decline.
            raise ConnectRejected(
                f"Intuit did not grant access: {params['error'][:100]}", code="intuit_denied"
            )
        code, realm_id, raw_state = params.get("code"), params.get("realmId"), params.get("state")
        if not code or not raw_state or not realm_id:
            raise ConnectRejected("callback lacks code, state or realmId", code="bad_callback")
        if not REALM_ID.match(realm_id):
            raise ConnectRejected("realmId is not a QBO company id", code="bad_callback")
        try:
            state = self._signer.verify(raw_state)
            if browser_nonce is None or browser_nonce != state.nonce:
                raise StateRejected("state does not belong to this browser session")
            await self._states.consume(state)
        except StateRejected as exc:
            log.warning("oauth.state_rejected", reason=exc.reason)
            raise ConnectRejected(exc.reason, code="bad_state") from None
        try:
            grant = await self._intuit.exchange_code(code)
        except InvalidGrant:
            raise ConnectRejected(
                "the authorization code was refused (expired or already used)", code="bad_code"
            ) from None
        except (OAuthError, OSError, TimeoutError) as exc:
            log.error("oauth.exchange_failed", error=str(exc))
            raise ConnectRejected(
                "Intuit's token service failed; try again", status=502, code="intuit_unavailable"
            ) from None
        try:
            await self._proof.check(realm_id, grant)
        except RealmNotProven as exc:
            log.warning("oauth.realm_not_proven", realm_id=realm_id, reason=str(exc))
            await self._discard(grant)
            raise ConnectRejected(
                f"the QuickBooks authorization does not cover company {realm_id}",
                status=403,
                code="realm_mismatch",
            ) from None
        except QboUnreachable as exc:
            log.error("oauth.realm_check_failed", realm_id=realm_id, error=str(exc))
            await self._discard(grant)
            raise ConnectRejected(
                "QuickBooks did not answer; try again", status=502, code="intuit_unavailable"
            ) from None
        try:
            return await self._vault.connect(realm_id, state.user_id, grant)
        except RealmOwnedByAnotherUser:
            await self._discard(grant)
            raise ConnectRejected(
                f"QuickBooks company {realm_id} is already connected by another user of this "
                "app; only that user can reconnect it, or disconnect it first",
                status=409,
                code="realm_connected_by_another_user",
            ) from None

    async def _discard(self, grant: TokenGrant) -> None:
        """Revoke a grant we will not store, so no live tokens are left behind."""
        try:
            await self._intuit.revoke(grant.refresh_token)
        except (OAuthError, OSError, TimeoutError) as exc:
            log.warning("oauth.unused_grant_not_revoked", error=str(exc))
