"""Client for Intuit's OAuth 2.0 token service: code exchange, refresh and revoke.

Intuit facts this relies on (docs/design.md, "QBO facts"):
- client authentication is HTTP Basic `client_id:client_secret` on the token endpoint;
- access tokens live about an hour; refresh tokens roll (about 100 days, renewed on use) and may
  change on every refresh, so the newest one must always be stored;
- since 2025 refresh tokens also have a hard maximum lifetime, reported as
  `x_refresh_token_hard_expires_in` when the request asks for it with the header
  `x-include-refresh-token-hard-expires-in: true`;
- `invalid_grant` means the refresh token (or code) is dead: the company must connect again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import aiohttp
import structlog

from services.common import jsoncodec

ACCOUNTING_SCOPE = "com.intuit.quickbooks.accounting"
HARD_EXPIRY_HEADER = "x-include-refresh-token-hard-expires-in"

log = structlog.get_logger(__name__)


class OAuthError(Exception):
    """Intuit's token service refused or failed. `error` is the RFC 6749 code, if any."""

    def __init__(self, error: str, status: int, description: str | None = None) -> None:
        self.error = error
        self.status = status
        self.description = description
        super().__init__(f"{error} (HTTP {status})" + (f": {description}" if description else ""))


class InvalidGrant(OAuthError):
    """The code or refresh token is no longer accepted: the company must re-connect."""


@dataclass(frozen=True)
class TokenGrant:
    """A token response, with lifetimes turned into absolute times at `received_at`."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    access_token_expires_at: datetime
    refresh_token_expires_at: datetime
    refresh_token_hard_expires_at: datetime | None
    scope: str | None = None

    @classmethod
    def from_response(cls, body: Mapping[str, Any], received_at: datetime) -> TokenGrant:
        try:
            access = str(body["access_token"])
            refresh = str(body["refresh_token"])
            expires_in = int(body["expires_in"])
            refresh_in = int(body["x_refresh_token_expires_in"])
        except (KeyError, TypeError, ValueError) as exc:
            raise OAuthError("invalid_response", 200, f"token response lacks {exc}") from None
        hard_in = body.get("x_refresh_token_hard_expires_in")
        return cls(
            access_token=access,
            refresh_token=refresh,
            access_token_expires_at=received_at + timedelta(seconds=expires_in),
            refresh_token_expires_at=received_at + timedelta(seconds=refresh_in),
            refresh_token_hard_expires_at=(
                received_at + timedelta(seconds=int(hard_in)) if hard_in is not None else None
            ),
            scope=body.get("scope"),
        )


class IntuitOAuthClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        authorize_url: str,
        token_url: str,
        revoke_url: str,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        clock: Callable[[], datetime],
        timeout_s: float = 15.0,
    ) -> None:
        self._session = session
        self._authorize_url = authorize_url
        self._token_url = token_url
        self._revoke_url = revoke_url
        self._client_id = client_id
        self._basic = aiohttp.encode_basic_auth(client_id, client_secret)
        self.redirect_uri = redirect_uri
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    def authorize_url(self, state: str) -> str:
        # Only the accounting scope: we read invoices and customers, nothing else.
        query = urlencode(
            {
                "client_id": self._client_id,
                "response_type": "code",
                "scope": ACCOUNTING_SCOPE,
                "redirect_uri": self.redirect_uri,
                "state": state,
            }
        )
        return f"{self._authorize_url}?{query}"

    async def exchange_code(self, code: str) -> TokenGrant:
        return await self._token_request(
            {"grant_type": "authorization_code", "code": code, "redirect_uri": self.redirect_uri}
        )

    async def refresh(self, refresh_token: str) -> TokenGrant:
        return await self._token_request(
            {"grant_type": "refresh_token", "refresh_token": refresh_token}
        )

    async def revoke(self, token: str) -> None:
        async with self._session.post(
            self._revoke_url,
            data=jsoncodec.dumpb({"token": token}),
            headers={
                "Accept": "application/json",
                "Content-Type": "application/json",
                "Authorization": self._basic,
            },
            timeout=self._timeout,
        ) as response:
            if response.status != 200:
                raise await _error(response)

    async def _token_request(self, form: dict[str, str]) -> TokenGrant:
        async with self._session.post(
            self._token_url,
            data=form,
            headers={
                "Accept": "application/json",
                "Authorization": self._basic,
                HARD_EXPIRY_HEADER: "true",
            },
            timeout=self._timeout,
        ) as response:
            if response.status != 200:
                raise await _error(response)
            try:
                body = jsoncodec.loads(await response.read())
            except ValueError:
                raise OAuthError("invalid_response", 200, "token response is not JSON") from None
        return TokenGrant.from_response(body, self._clock())


async def _error(response: aiohttp.ClientResponse) -> OAuthError:
    error, description = "http_error", None
    try:
        body = jsoncodec.loads(await response.read())
        if isinstance(body, dict):
            error = str(body.get("error") or error)
            description = body.get("error_description")
    except ValueError:
        pass
    log.warning(
        "intuit.oauth_error",
        status=response.status,
        error=error,
        intuit_tid=response.headers.get("intuit_tid"),
    )
    kind = InvalidGrant if error == "invalid_grant" else OAuthError
    return kind(error, response.status, description)
