"""The OAuth `state` parameter: signed, expiring, single use and bound to the app user.

Why all four:
- signed (HMAC-SHA256 with a server secret): a forged state naming another user is rejected;
- expiring (10 minutes): a leaked state is useless later;
- single use (a nonce remembered in MongoDB and deleted on first use): a replayed callback URL
  cannot connect a company twice or after the fact;
- bound to the browser that started the flow (the nonce is also set as an HttpOnly cookie): an
  attacker cannot make a victim's browser complete the attacker's flow (login CSRF).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from pymongo.asynchronous.database import AsyncDatabase

from services.common import b64url
from services.common.mongo import Document, IndexSpec

STATE_TTL = timedelta(minutes=10)
COLLECTION = "oauth_states"
# FerretDB v1 has no TTL indexes, so abandoned states are swept on each new flow instead.
INDEXES = [IndexSpec(COLLECTION, [("expires_at", 1)], "expires_at")]


class StateRejected(Exception):
    """The callback's state is not one we issued, or not any more. `reason` is user-facing."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class IssuedState:
    value: str
    nonce: str
    user_id: str
    expires_at: datetime


class StateSigner:
    def __init__(
        self, secret: bytes, clock: Callable[[], datetime], ttl: timedelta = STATE_TTL
    ) -> None:
        if len(secret) < 32:
            raise ValueError("the OAuth state secret must be at least 32 bytes")
        self._secret = secret
        self._clock = clock
        self._ttl = ttl

    def issue(self, user_id: str) -> IssuedState:
        nonce = secrets.token_urlsafe(24)
        expires_at = self._clock() + self._ttl
        payload = b64url.encode(
            json.dumps(
                {"u": user_id, "n": nonce, "e": int(expires_at.timestamp())},
                separators=(",", ":"),
            ).encode()
        )
        return IssuedState(f"{payload}.{self._sign(payload)}", nonce, user_id, expires_at)

    def verify(self, value: str) -> IssuedState:
        """Check signature and expiry. Single use is the `StateStore`'s job."""
        payload, dot, signature = value.partition(".")
        if not dot or len(value) > 2048:
            raise StateRejected("malformed state")
        if not hmac.compare_digest(signature, self._sign(payload)):
            raise StateRejected("state signature does not match")
        try:
            fields = json.loads(b64url.decode(payload))
            user_id, nonce, expires = str(fields["u"]), str(fields["n"]), int(fields["e"])
        except (ValueError, KeyError, TypeError):
            raise StateRejected("malformed state") from None
        expires_at = datetime.fromtimestamp(expires, tz=self._clock().tzinfo)
        if self._clock() >= expires_at:
            raise StateRejected("state has expired; start connecting again")
        return IssuedState(value, nonce, user_id, expires_at)

    def _sign(self, payload: str) -> str:
        return b64url.encode(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())


class StateStore:
    """Remembers issued nonces so each state is accepted once."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._states = db[COLLECTION]

    async def remember(self, state: IssuedState) -> None:
        await self._states.delete_many({"expires_at": {"$lt": state.expires_at - STATE_TTL}})
        await self._states.insert_one(
            {"_id": state.nonce, "user_id": state.user_id, "expires_at": state.expires_at}
        )

    async def consume(self, state: IssuedState) -> None:
        # delete_one is atomic: of two concurrent callbacks with one state, exactly one wins.
        result = await self._states.delete_one({"_id": state.nonce, "user_id": state.user_id})
        if result.deleted_count != 1:
            raise StateRejected("state was already used or is unknown")
