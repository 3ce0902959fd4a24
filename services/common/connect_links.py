"""Short-lived links that start connecting QuickBooks for one app user.

Starting a connect decides whose connection the tokens become, so it must not be open to anyone
who can name a user. An authenticated caller (a service holding the sync service's credentials,
or the api for its dashboard) gets a link signed for user U; the browser follows it to
`/oauth/connect?link=...`, and the sync service starts the flow for U only if the signature holds
and the link has not expired. The link is a bearer capability for a few minutes, so it is meant
to be followed at once, not stored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode

from services.common import b64url
from services.common.credentials import development_secret
from services.common.settings import Settings

LINK_TTL = timedelta(minutes=15)
USER_ID = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")
_MAX_LINK_CHARS = 1024
# Keeps these signatures apart from anything else that might ever use the same secret.
_PURPOSE = b"qbo-sync connect link v1."


class LinkRejected(Exception):
    """The link is not one we signed, or not any more. `reason` is safe to show."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class ConnectLink:
    token: str
    user_id: str
    expires_at: datetime

    def url(self, sync_public_url: str) -> str:
        return f"{sync_public_url.rstrip('/')}/oauth/connect?{urlencode({'link': self.token})}"


def load_connect_link_secret(settings: Settings) -> bytes:
    configured = settings.connect_link_secret.get_secret_value()
    if configured:
        return configured.encode()
    # Published: services.common.credentials.require_own_secrets keeps it to local loopback.
    return development_secret("CONNECT_LINK_SECRET")


class ConnectLinks:
    def __init__(
        self, secret: bytes, clock: Callable[[], datetime], ttl: timedelta = LINK_TTL
    ) -> None:
        if len(secret) < 32:
            raise ValueError("CONNECT_LINK_SECRET must be at least 32 bytes")
        self._secret = secret
        self._clock = clock
        self._ttl = ttl

    def sign(self, user_id: str) -> ConnectLink:
        if not USER_ID.match(user_id):
            raise ValueError("a user id is 1-128 of A-Z a-z 0-9 . _ : @ -")
        expires_at = self._clock() + self._ttl
        payload = b64url.encode(
            json.dumps(
                {"u": user_id, "e": int(expires_at.timestamp())}, separators=(",", ":")
            ).encode()
        )
        return ConnectLink(f"{payload}.{self._mac(payload)}", user_id, expires_at)

    def url(self, sync_public_url: str, user_id: str) -> str:
        return self.sign(user_id).url(sync_public_url)

    def verify(self, token: str) -> str:
        """The user the link was signed for; `LinkRejected` if forged, malformed or expired."""
        payload, dot, mac = token.partition(".")
        if not dot or len(token) > _MAX_LINK_CHARS:
            raise LinkRejected("malformed connect link")
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise LinkRejected("connect link signature does not match")
        try:
            fields = json.loads(b64url.decode(payload))
            user_id, expires = str(fields["u"]), int(fields["e"])
        except (ValueError, KeyError, TypeError):
            raise LinkRejected("malformed connect link") from None
        if self._clock().timestamp() >= expires:
            raise LinkRejected("connect link has expired; ask for a new one")
        if not USER_ID.match(user_id):
            raise LinkRejected("malformed connect link")
        return user_id

    def _mac(self, payload: str) -> str:
        return b64url.encode(
            hmac.new(self._secret, _PURPOSE + payload.encode(), hashlib.sha256).digest()
        )
