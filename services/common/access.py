"""An explicit authorization rule on every HTTP route (docs/design.md invariant 10).

Routes are built through `Guard(rule, handler)`, which records the rule on the endpoint, and the
app is built from `checked_routes`, which refuses a route without one: a new endpoint cannot
ship open by omission. The authorization matrix test walks the same routes.

- `service`: other services and operators; `Authorization: Bearer <token>`, checked here in
  constant time.
- `webhook-signature`: Intuit; the `intuit-signature` HMAC of the body, checked by the handler.
- `oauth-state`: the browser back from Intuit; a signed single-use state bound to the browser,
  and the realm proven with the new tokens, checked by the OAuth flow.
- `connect-link`: an app user's browser; a short-lived link signed for that user, checked by
  the handler.
- `probe`: kubelet, load balancers, Prometheus; nothing to check, the answer has no tenant data.
- `public-page`: anyone; the dashboard's static files and the OpenAPI document, no data.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from enum import StrEnum

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from services.common.credentials import BearerTokens, bearer_token

Handler = Callable[[Request], Awaitable[Response]]
RULE_ATTRIBUTE = "access_rule"


class Rule(StrEnum):
    SERVICE = "service"
    WEBHOOK_SIGNATURE = "webhook-signature"
    OAUTH_STATE = "oauth-state"
    CONNECT_LINK = "connect-link"
    PROBE = "probe"
    PUBLIC_PAGE = "public-page"


def rule_of(route: BaseRoute) -> Rule | None:
    endpoint = getattr(route, "endpoint", None)
    rule = getattr(endpoint, RULE_ATTRIBUTE, None)
    return rule if isinstance(rule, Rule) else None


class Guard:
    """Wraps handlers with their rule; `service` is checked here, the others by the handler."""

    def __init__(self, tokens: BearerTokens, unauthorized: Callable[[], Response]) -> None:
        self._tokens = tokens
        self._unauthorized = unauthorized

    def __call__(self, rule: Rule, handler: Handler) -> Handler:
        if rule is Rule.SERVICE:
            tokens, unauthorized = self._tokens, self._unauthorized

            async def checked(request: Request) -> Response:
                if not tokens.accepts(bearer_token(request.headers.get("authorization"))):
                    return unauthorized()
                return await handler(request)

            endpoint: Handler = checked
        else:
            # Wrapped anyway, so the rule is recorded on a function of our own.
            async def own_check(request: Request) -> Response:
                return await handler(request)

            endpoint = own_check
        setattr(endpoint, RULE_ATTRIBUTE, rule)
        return endpoint

    def routes(self, rule: Rule, routes: Sequence[Route]) -> list[Route]:
        """The same routes, each endpoint wrapped with `rule`."""
        return [
            Route(route.path, self(rule, route.endpoint), methods=route.methods, name=route.name)
            for route in routes
        ]


def checked_routes(routes: Sequence[Route]) -> list[Route]:
    """`routes`, if every one has a rule; a route without one is a programming error."""
    missing = [route.path for route in routes if rule_of(route) is None]
    if missing:
        raise RuntimeError(f"routes without an authorization rule: {', '.join(missing)}")
    return list(routes)
