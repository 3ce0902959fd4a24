"""The sync service's own credentials: the bearer tokens of its tenant endpoints.

Mapping, connection status, disconnect, `/stats` and connect links act on a tenant, so they take
the `service` rule (`services.common.access`) with these tokens. Only the webhook (signature),
the OAuth callback (signed state) and the connect page (signed link) are reached without them;
`/healthz` answers "ok" to anyone.
"""

from __future__ import annotations

from starlette.responses import JSONResponse, Response

from services.common.credentials import BearerTokens, InsecureConfiguration, parse_tokens
from services.common.settings import Settings

DEV_SYNC_TOKEN = "dev-sync-token"  # noqa: S105 - public by design, accepted only locally


def load_sync_tokens(settings: Settings) -> BearerTokens:
    tokens = parse_tokens(settings.sync_api_tokens.get_secret_value())
    if settings.environment != "local":
        if not tokens:
            raise InsecureConfiguration(
                "SYNC_API_TOKENS must be configured outside local development"
            )
        if DEV_SYNC_TOKEN in tokens:
            raise InsecureConfiguration(f"the token {DEV_SYNC_TOKEN!r} is for local use only")
    return BearerTokens.of(tokens or [DEV_SYNC_TOKEN])


def unauthorized() -> Response:
    return JSONResponse(
        {
            "error": "unauthorized",
            "message": "send a sync service token as 'Authorization: Bearer <token>'",
        },
        status_code=401,
        headers={"WWW-Authenticate": 'Bearer realm="qbo-sync"'},
    )
