"""Intuit OAuth 2.0 / OpenID Connect: consent (auto-approved), token, revoke, discovery.

Production spreads these over several hosts; the emulator serves Intuit's paths
on one host, and its discovery document points at itself:

=====================  =============================================================
authorization          appcenter.intuit.com ``/connect/oauth2``
token                  oauth.platform.intuit.com ``/oauth2/v1/tokens/bearer``
revocation             developer.api.intuit.com ``/v2/oauth2/tokens/revoke``
jwks                   oauth.platform.intuit.com ``/op/v1/jwks``
userinfo               accounts.platform.intuit.com ``/v1/openid_connect/userinfo``
discovery              developer.api.intuit.com ``/.well-known/openid_configuration``
                       (``openid_sandbox_configuration`` for the sandbox)
=====================  =============================================================

(developer.intuit.com, "Authorization discovery documents"; the same URLs are
constants in intuit/oauth-jsclient ``src/OAuthClient.js``.) Both client
authentication methods the document lists, ``client_secret_basic`` and
``client_secret_post``, are accepted. Consent is approved automatically - the
redirect carries ``code``, ``state`` and ``realmId`` just like Intuit's. Test
hooks on the consent URL: ``realmId=<id>`` picks the company, ``deny=1``
simulates the user pressing "Cancel" (``access_denied``).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from urllib.parse import urlencode

from aiohttp import web

from qbo_emulator import jsonenc, openid
from qbo_emulator.intuit_errors import json_response
from qbo_emulator.keys import STATE_KEY
from qbo_emulator.state import EmulatorState
from qbo_emulator.tokens import ACCOUNTING_SCOPE, OAuthError

AUTHORIZE_PATH = "/connect/oauth2"
TOKEN_PATH = "/oauth2/v1/tokens/bearer"  # noqa: S105 - a URL path
REVOKE_PATH = "/v2/oauth2/tokens/revoke"
JWKS_PATH = "/op/v1/jwks"
USERINFO_PATH = "/v1/openid_connect/userinfo"
DISCOVERY_PATHS = (
    "/.well-known/openid_configuration",
    "/.well-known/openid_sandbox_configuration",
)
HARD_EXPIRY_HEADER = "x-include-refresh-token-hard-expires-in"
#: Scopes Intuit grants; consent needs at least one (the discovery document lists
#: the OpenID ones, the accounting and payment scopes are in Intuit's OAuth docs).
KNOWN_SCOPES = frozenset(
    {
        ACCOUNTING_SCOPE,
        "com.intuit.quickbooks.payment",
        "openid",
        "profile",
        "email",
        "phone",
        "address",
    }
)

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def setup(app: web.Application) -> None:
    app.router.add_get(AUTHORIZE_PATH, authorize, name="qbo.oauth.authorize")
    app.router.add_post(TOKEN_PATH, token, name="qbo.oauth.token")
    app.router.add_post(REVOKE_PATH, revoke, name="qbo.oauth.revoke")
    app.router.add_get(JWKS_PATH, jwks, name="qbo.oauth.jwks")
    app.router.add_get(USERINFO_PATH, userinfo, name="qbo.oauth.userinfo")
    for path in DISCOVERY_PATHS:
        # intuit-oauth asks with a trailing slash, other clients without.
        app.router.add_get(path, discovery)
        app.router.add_get(path + "/", discovery)


def _redirect(redirect_uri: str, params: dict[str, str]) -> web.Response:
    separator = "&" if "?" in redirect_uri else "?"
    location = redirect_uri + separator + urlencode(params)
    return web.Response(status=302, headers={"Location": location})


async def authorize(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    q = request.query
    redirect_uri = q.get("redirect_uri")
    if not redirect_uri:
        return web.Response(
            status=400, text="invalid_request: redirect_uri is required", content_type="text/plain"
        )
    base = {"state": q["state"]} if "state" in q else {}
    if q.get("client_id") not in state.tokens.clients:
        return _redirect(
            redirect_uri,
            {"error": "unauthorized_client", "error_description": "unknown client_id", **base},
        )
    if q.get("response_type") != "code":
        return _redirect(redirect_uri, {"error": "unsupported_response_type", **base})
    scopes = q.get("scope", "").split()
    if not KNOWN_SCOPES.intersection(scopes):
        return _redirect(
            redirect_uri,
            {"error": "invalid_scope", "error_description": "no known scope requested", **base},
        )
    if q.get("deny") in {"1", "true"}:
        return _redirect(redirect_uri, {"error": "access_denied", **base})
    realm_id = q.get("realmId") or state.config.default_realm_id
    state.realm(realm_id)
    code = state.tokens.issue_code(q["client_id"], redirect_uri, realm_id, " ".join(scopes))
    return _redirect(redirect_uri, {"code": code, **base, "realmId": realm_id})


def _client(
    request: web.Request, state: EmulatorState, form: Mapping[str, object] | None = None
) -> str:
    """``client_secret_basic`` (Authorization: Basic) or ``client_secret_post`` (form fields)."""
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        client_id = form.get("client_id") if form is not None else None
        secret = form.get("client_secret") if form is not None else None
        if not isinstance(client_id, str) or not isinstance(secret, str):
            raise OAuthError("invalid_client", status=401)
        state.tokens.check_client(client_id, secret)
        return client_id
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError) as exc:
        raise OAuthError("invalid_client", status=401) from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise OAuthError("invalid_client", status=401)
    state.tokens.check_client(client_id, secret)
    return client_id


def _oauth_error(exc: OAuthError) -> web.Response:
    headers = dict(_NO_STORE)
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="oauth"'
    return json_response(exc.body(), status=exc.status, headers=headers)


async def token(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    form = await request.post()
    grant_type = str(form.get("grant_type", ""))
    include_hard = request.headers.get(HARD_EXPIRY_HEADER, "").lower() == "true"
    realm_hint: str | None = None
    if grant_type == "authorization_code":
        realm_hint = state.tokens.realm_of_code(str(form.get("code", "")))
    elif grant_type == "refresh_token":
        realm_hint = state.tokens.realm_of_refresh_token(str(form.get("refresh_token", "")))
    state.stats.record_token_call(realm_hint, grant_type or "invalid")
    try:
        client_id = _client(request, state, form)
        if grant_type == "authorization_code":
            code = str(form.get("code", ""))
            redirect_uri = str(form.get("redirect_uri", ""))
            if not code:
                raise OAuthError("invalid_request", description="code is required")
            _, body = state.tokens.exchange_code(client_id, code, redirect_uri, include_hard)
        elif grant_type == "refresh_token":
            refresh_token = str(form.get("refresh_token", ""))
            if not refresh_token:
                raise OAuthError("invalid_request", description="refresh_token is required")
            _, body = state.tokens.refresh(client_id, refresh_token, include_hard)
        else:
            raise OAuthError("unsupported_grant_type")
    except OAuthError as exc:
        return _oauth_error(exc)
    return json_response(body, headers=_NO_STORE)


async def revoke(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    raw = await request.read()
    try:
        form: Mapping[str, object] | None = None
        token_value: object = None
        if raw:
            if request.content_type == "application/x-www-form-urlencoded":
                form = await request.post()
                token_value = form.get("token")
            else:
                payload = jsonenc.loads(raw)
                token_value = payload.get("token") if isinstance(payload, dict) else None
        _client(request, state, form)
        if not isinstance(token_value, str) or not token_value:
            raise OAuthError("invalid_request", description="token is required")
    except ValueError:
        state.stats.record_token_call(None, "revoke")
        return _oauth_error(OAuthError("invalid_request", description="body must be JSON"))
    except OAuthError as exc:
        state.stats.record_token_call(None, "revoke")
        return _oauth_error(exc)
    realm_id = state.tokens.revoke(token_value)
    state.stats.record_token_call(realm_id, "revoke")
    if realm_id is None:
        return _oauth_error(OAuthError("invalid_token", description="token not recognised"))
    return web.Response(status=200, headers=_NO_STORE)


async def discovery(request: web.Request) -> web.Response:
    """Intuit's discovery document, field for field, with every URL on this emulator.

    ``issuer`` stays Intuit's: it is an identifier, not a URL that is fetched, and
    clients compare the id_token's ``iss`` with it.
    """
    base = f"{request.scheme}://{request.host}"
    return json_response(
        {
            "issuer": openid.ISSUER,
            "authorization_endpoint": base + AUTHORIZE_PATH,
            "token_endpoint": base + TOKEN_PATH,
            "userinfo_endpoint": base + USERINFO_PATH,
            "revocation_endpoint": base + REVOKE_PATH,
            "jwks_uri": base + JWKS_PATH,
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "profile", "address", "phone"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "claims_supported": ["aud", "exp", "iat", "iss", "realmid", "sub"],
        }
    )


async def jwks(request: web.Request) -> web.Response:
    return json_response(request.app[STATE_KEY].tokens.signing_key.jwks())


async def userinfo(request: web.Request) -> web.Response:
    """The OpenID user behind a token that carries the ``openid`` scope.

    Field names follow what Intuit's user info answers (camelCase ``givenName``,
    ``emailVerified``); the values are the emulator's stand-in user.
    """
    state = request.app[STATE_KEY]
    grant = state.tokens.grant_of_access_token(request.headers.get("Authorization"))
    if grant is None or "openid" not in grant.scope.split():
        return json_response(
            {"error": "invalid_token"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    scopes = set(grant.scope.split())
    body: dict[str, object] = {"sub": openid.subject(grant.realm_id)}
    if "email" in scopes:
        body.update({"email": f"owner-{grant.realm_id}@example.com", "emailVerified": True})
    if "profile" in scopes:
        body.update({"givenName": "Emulated", "familyName": "Owner"})
    return json_response(body)
