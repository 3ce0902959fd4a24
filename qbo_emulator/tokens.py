"""OAuth 2.0 grants, codes and tokens, emulating Intuit's token service.

Behaviour (and why):

* Authorization codes are single use and short lived (Intuit: minutes); a
  second exchange - the classic double-submit bug - gets ``invalid_grant``.
  A code is bound to the ``redirect_uri`` it was issued for.
* Access tokens live ``access_token_ttl_s`` (3600 s at Intuit).
* Refresh tokens have a rolling lifetime (``x_refresh_token_expires_in``,
  100 days at Intuit, reset on each refresh) and, since 2025, a hard cap of
  five years from the original consent. Intuit reports the remaining hard
  lifetime as ``x_refresh_token_hard_expires_in`` **only** when the token
  request carries the header ``x-include-refresh-token-hard-expires-in: true``
  (the SDKs call the option ``includeRefreshTokenHardExpiresIn``); the
  emulator does the same.
* Rotation, kept deliberately simple: with ``rotate_refresh_tokens`` every
  successful refresh returns a *new* refresh token and the one just used stops
  working at once, so a client that fails to persist the new token, or runs
  two refreshes concurrently, sees ``invalid_grant`` exactly as it would in
  production. Without rotation the same value is returned with its rolling
  expiry extended.
* Revoking either token of a grant revokes the whole grant (all its refresh
  and access tokens), as Intuit's revoke endpoint does.
* With the ``openid`` scope the code exchange also returns an ``id_token``
  (see ``openid.py``); a refresh does not.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from qbo_emulator import openid
from qbo_emulator.config import EmulatorConfig

AUTH_CODE_TTL_S = 300  # Intuit: authorization codes expire after a few minutes
ACCOUNTING_SCOPE = "com.intuit.quickbooks.accounting"


class OAuthError(Exception):
    """An RFC 6749 error (``invalid_grant``, ``invalid_client``, ...)."""

    def __init__(self, error: str, status: int = 400, description: str | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.description = description

    def body(self) -> dict[str, str]:
        out = {"error": self.error}
        if self.description:
            out["error_description"] = self.description
        return out


@dataclass
class AuthCode:
    code: str
    client_id: str
    redirect_uri: str
    realm_id: str
    scope: str
    expires_at: float
    used: bool = False


@dataclass
class Grant:
    """One consent: a realm connected to a client, with its token family."""

    grant_id: str
    realm_id: str
    client_id: str
    scope: str
    created_at: float
    hard_expires_at: float
    revoked: bool = False
    refresh_tokens: set[str] = field(default_factory=set)
    access_tokens: set[str] = field(default_factory=set)


@dataclass
class RefreshToken:
    token: str
    grant_id: str
    expires_at: float
    active: bool = True


@dataclass
class AccessToken:
    token: str
    grant_id: str
    realm_id: str
    expires_at: float
    revoked: bool = False


@dataclass(frozen=True)
class AccessCheck:
    """Outcome of validating a bearer token for a realm."""

    ok: bool
    status: int = 200  # 401 (authentication) or 403 (wrong realm)
    detail: str = ""


class TokenStore:
    """All OAuth state of the emulator."""

    def __init__(self, config: EmulatorConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self._clock = clock
        self.clients: dict[str, str] = {config.client_id: config.client_secret}
        self.codes: dict[str, AuthCode] = {}
        self.grants: dict[str, Grant] = {}
        self.refresh_tokens: dict[str, RefreshToken] = {}
        self.access_tokens: dict[str, AccessToken] = {}
        self._signing_key: openid.SigningKey | None = None

    @property
    def signing_key(self) -> openid.SigningKey:
        """Made on first use: most runs never ask for an id_token."""
        if self._signing_key is None:
            self._signing_key = openid.SigningKey()
        return self._signing_key

    # ---------------------------------------------------------------- clients
    def check_client(self, client_id: str, client_secret: str) -> None:
        expected = self.clients.get(client_id)
        if expected is None or not secrets.compare_digest(expected, client_secret):
            raise OAuthError("invalid_client", status=401)

    # ------------------------------------------------------------------ codes
    def issue_code(self, client_id: str, redirect_uri: str, realm_id: str, scope: str) -> str:
        code = "AB11" + secrets.token_urlsafe(30)
        self.codes[code] = AuthCode(
            code, client_id, redirect_uri, realm_id, scope, self._clock() + AUTH_CODE_TTL_S
        )
        return code

    def exchange_code(
        self, client_id: str, code: str, redirect_uri: str, include_hard: bool = False
    ) -> tuple[str, dict[str, Any]]:
        """Returns ``(realm_id, token response)``."""
        record = self.codes.get(code)
        if record is None or record.client_id != client_id:
            raise OAuthError("invalid_grant")
        if record.used or record.expires_at <= self._clock():
            record.used = True
            raise OAuthError("invalid_grant")
        if record.redirect_uri != redirect_uri:
            raise OAuthError("invalid_grant", description="redirect_uri mismatch")
        record.used = True
        grant = self._new_grant(record.realm_id, client_id, record.scope)
        return record.realm_id, self._token_response(grant, None, include_hard)

    # ----------------------------------------------------------------- grants
    def issue_for_realm(self, realm_id: str, client_id: str | None = None) -> dict[str, Any]:
        """Consent + code exchange in one step (test/benchmark shortcut)."""
        grant = self._new_grant(realm_id, client_id or self.config.client_id, ACCOUNTING_SCOPE)
        response = self._token_response(grant, None, include_hard=True)
        response["realmId"] = realm_id
        return response

    def _new_grant(self, realm_id: str, client_id: str, scope: str) -> Grant:
        now = self._clock()
        grant = Grant(
            grant_id=secrets.token_hex(8),
            realm_id=realm_id,
            client_id=client_id,
            scope=scope,
            created_at=now,
            hard_expires_at=now + self.config.refresh_token_max_lifetime_s,
        )
        self.grants[grant.grant_id] = grant
        return grant

    def refresh(
        self, client_id: str, refresh_token: str, include_hard: bool = False
    ) -> tuple[str, dict[str, Any]]:
        record = self.refresh_tokens.get(refresh_token)
        if record is None:
            raise OAuthError("invalid_grant")
        grant = self.grants[record.grant_id]
        now = self._clock()
        if (
            not record.active
            or grant.revoked
            or grant.client_id != client_id
            or record.expires_at <= now
            or grant.hard_expires_at <= now
        ):
            raise OAuthError("invalid_grant")
        return grant.realm_id, self._token_response(grant, record, include_hard)

    def realm_of_refresh_token(self, refresh_token: str) -> str | None:
        record = self.refresh_tokens.get(refresh_token)
        return self.grants[record.grant_id].realm_id if record else None

    def realm_of_code(self, code: str) -> str | None:
        record = self.codes.get(code)
        return record.realm_id if record else None

    def _token_response(
        self, grant: Grant, used: RefreshToken | None, include_hard: bool
    ) -> dict[str, Any]:
        now = self._clock()
        cfg = self.config
        access = "eyJ" + secrets.token_urlsafe(96)
        self.access_tokens[access] = AccessToken(
            access, grant.grant_id, grant.realm_id, now + cfg.access_token_ttl_s
        )
        grant.access_tokens.add(access)
        rolling_until = min(now + cfg.refresh_token_ttl_s, grant.hard_expires_at)
        if used is not None and not cfg.rotate_refresh_tokens:
            used.expires_at = rolling_until
            refresh = used.token
        else:
            if used is not None:
                used.active = False
            refresh = "AB11" + secrets.token_urlsafe(36)
            self.refresh_tokens[refresh] = RefreshToken(refresh, grant.grant_id, rolling_until)
            grant.refresh_tokens.add(refresh)
        response: dict[str, Any] = {
            "token_type": "bearer",
            "access_token": access,
            "expires_in": cfg.access_token_ttl_s,
            "refresh_token": refresh,
            "x_refresh_token_expires_in": max(round(rolling_until - now), 0),
        }
        if include_hard:
            response["x_refresh_token_hard_expires_in"] = max(round(grant.hard_expires_at - now), 0)
        if used is None and "openid" in grant.scope.split():
            claims = openid.id_token_claims(grant.client_id, grant.realm_id, now)
            response["id_token"] = self.signing_key.sign(claims)
        return response

    # ----------------------------------------------------------------- revoke
    def revoke(self, token: str) -> str | None:
        """Revoke the grant owning ``token``; returns its realm, None if unknown."""
        grant_id: str | None = None
        if token in self.refresh_tokens:
            grant_id = self.refresh_tokens[token].grant_id
        elif token in self.access_tokens:
            grant_id = self.access_tokens[token].grant_id
        if grant_id is None:
            return None
        grant = self.grants[grant_id]
        grant.revoked = True
        for refresh in grant.refresh_tokens:
            self.refresh_tokens[refresh].active = False
        for access in grant.access_tokens:
            self.access_tokens[access].revoked = True
        return grant.realm_id

    # ----------------------------------------------------------------- access
    def grant_of_access_token(self, authorization: str | None) -> Grant | None:
        """The live grant behind a bearer token, or None (unknown, expired or revoked)."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        record = self.access_tokens.get(authorization[7:].strip())
        if record is None or record.revoked or record.expires_at <= self._clock():
            return None
        grant = self.grants[record.grant_id]
        return None if grant.revoked else grant

    def check_access(self, authorization: str | None, realm_id: str) -> AccessCheck:
        if not authorization or not authorization.lower().startswith("bearer "):
            return AccessCheck(False, 401, "Authorization header missing or not a Bearer token")
        token = authorization[7:].strip()
        record = self.access_tokens.get(token)
        if record is None:
            return AccessCheck(False, 401, "Token invalid: unknown or malformed bearer token")
        if record.revoked or self.grants[record.grant_id].revoked:
            return AccessCheck(False, 401, f"Token revoked: {token[:12]}...")
        if record.expires_at <= self._clock():
            return AccessCheck(False, 401, f"Token expired: {token[:12]}...")
        if record.realm_id != realm_id:
            return AccessCheck(False, 403, "Token is not authorized for this realm")
        return AccessCheck(True)

    def expire_access_tokens(self, realm_id: str | None = None) -> int:
        """Make every (or one realm's) access token expired; returns how many."""
        now = self._clock()
        count = 0
        for record in self.access_tokens.values():
            if (realm_id is None or record.realm_id == realm_id) and record.expires_at > now:
                record.expires_at = now - 1
                count += 1
        return count

    def expire_refresh_tokens(self, realm_id: str | None = None) -> int:
        now = self._clock()
        count = 0
        for record in self.refresh_tokens.values():
            grant = self.grants[record.grant_id]
            if (realm_id is None or grant.realm_id == realm_id) and record.expires_at > now:
                record.expires_at = now - 1
                count += 1
        return count
