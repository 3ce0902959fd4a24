"""Bearer-token authentication of the `/api` routes.

Tokens come from `API_TOKENS` (comma-separated, so a new token can be rolled out before the old
one is withdrawn). With no tokens configured, local development accepts the well-known token
`dev-token`; any other environment refuses to start rather than serve an open API.
"""

from __future__ import annotations

from services.common.credentials import (
    BearerTokens,
    InsecureConfiguration,
    bearer_token,
    parse_tokens,
)
from services.common.settings import Settings

DEV_TOKEN = "dev-token"  # noqa: S105 - public by design, accepted only when environment=local

ApiTokens = BearerTokens

__all__ = [
    "DEV_TOKEN",
    "ApiTokens",
    "InsecureConfiguration",
    "bearer_token",
    "load_api_tokens",
    "parse_tokens",
]


def load_api_tokens(settings: Settings) -> ApiTokens:
    tokens = parse_tokens(settings.api_tokens.get_secret_value())
    if settings.environment != "local":
        if not tokens:
            raise InsecureConfiguration("API_TOKENS must be configured outside local development")
        if DEV_TOKEN in tokens:
            raise InsecureConfiguration(f"the development token {DEV_TOKEN!r} is for local use")
    return ApiTokens.of(tokens or [DEV_TOKEN])
