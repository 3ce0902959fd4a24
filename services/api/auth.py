"""Bearer-token authentication of the `/api` routes.

Tokens come from `API_TOKENS` (comma-separated, so a new token can be rolled out before the old
one is withdrawn). With no tokens configured, local development accepts the well-known token
`dev-token`; any other environment refuses to start rather than serve an open API.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from services.common.settings import Settings

DEV_TOKEN = "dev-token"  # noqa: S105 - public by design, accepted only when environment=local


class InsecureConfiguration(RuntimeError):
    """The api would run without real credentials outside local development."""


def _digest(token: str) -> bytes:
    # Comparing fixed-length digests keeps the comparison time independent of the token length.
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True)
class ApiTokens:
    """The accepted bearer tokens, kept only as digests."""

    _digests: tuple[bytes, ...]

    @classmethod
    def of(cls, tokens: Iterable[str]) -> ApiTokens:
        digests = tuple(_digest(t) for t in tokens if t)
        if not digests:
            raise ValueError("at least one API token is required")
        return cls(digests)

    def __repr__(self) -> str:
        return f"ApiTokens(<{len(self._digests)} tokens>)"

    def accepts(self, presented: str | None) -> bool:
        """Constant-time check of `presented` against every token (no early exit)."""
        if not presented:
            return False
        candidate = _digest(presented)
        accepted = False
        for known in self._digests:
            accepted |= hmac.compare_digest(candidate, known)
        return accepted


def parse_tokens(raw: str) -> list[str]:
    """`"a, b,,c"` -> `["a", "b", "c"]`."""
    return [part.strip() for part in raw.split(",") if part.strip()]


def load_api_tokens(settings: Settings) -> ApiTokens:
    tokens = parse_tokens(settings.api_tokens.get_secret_value())
    if settings.environment != "local":
        if not tokens:
            raise InsecureConfiguration("API_TOKENS must be configured outside local development")
        if DEV_TOKEN in tokens:
            raise InsecureConfiguration(f"the development token {DEV_TOKEN!r} is for local use")
    return ApiTokens.of(tokens or [DEV_TOKEN])


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None
