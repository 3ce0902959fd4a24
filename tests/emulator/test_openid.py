"""OpenID Connect against the emulator: discovery, id_token, JWKS, userinfo, client auth."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import jwt

from qbo_emulator.testing import RunningEmulator

from .helpers import REALM
from .test_oauth import REDIRECT, authorize, exchange, refresh

INTUIT_ISSUER = "https://oauth.platform.intuit.com/op/v1"


async def get_json(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with session.get(url, **kwargs) as response:
        return response.status, await response.json()


async def test_discovery_document_has_every_field_intuit_publishes(
    emu: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    for path in ("/.well-known/openid_configuration", "/.well-known/openid_sandbox_configuration/"):
        status, doc = await get_json(session, emu.url(path))
        assert status == 200
        assert doc == {
            "issuer": INTUIT_ISSUER,
            "authorization_endpoint": emu.url("/connect/oauth2"),
            "token_endpoint": emu.url("/oauth2/v1/tokens/bearer"),
            "userinfo_endpoint": emu.url("/v1/openid_connect/userinfo"),
            "revocation_endpoint": emu.url("/v2/oauth2/tokens/revoke"),
            "jwks_uri": emu.url("/op/v1/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "profile", "address", "phone"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "claims_supported": ["aud", "exp", "iat", "iss", "realmid", "sub"],
        }


async def test_openid_scope_brings_an_rs256_id_token_signed_with_the_jwks_key(
    emu: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    code = (await authorize(session, emu, scope="com.intuit.quickbooks.accounting openid"))["code"]
    status, tokens = await exchange(session, emu, code[0])
    assert status == 200
    id_token = tokens["id_token"]
    assert jwt.get_unverified_header(id_token)["alg"] == "RS256"
    status, jwks = await get_json(session, emu.url("/op/v1/jwks"))
    assert status == 200
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(id_token)["kid"]]
    claims = jwt.decode(
        id_token, key.key, algorithms=["RS256"], audience=emu.config.client_id, issuer=INTUIT_ISSUER
    )
    assert claims["aud"] == [emu.config.client_id]
    assert claims["realmid"] == REALM
    assert claims["iat"] <= time.time() < claims["exp"]
    # A refresh brings new tokens but no new id_token.
    status, refreshed = await refresh(session, emu, tokens["refresh_token"])
    assert status == 200 and "id_token" not in refreshed


async def test_accounting_scope_alone_has_no_id_token_and_no_userinfo(
    emu: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    code = (await authorize(session, emu, scope="com.intuit.quickbooks.accounting"))["code"]
    status, tokens = await exchange(session, emu, code[0])
    assert status == 200 and "id_token" not in tokens
    headers = {"Authorization": f"Bearer {tokens['access_token']}", "Accept": "application/json"}
    async with session.get(emu.url("/v1/openid_connect/userinfo"), headers=headers) as response:
        assert response.status == 401


async def test_userinfo_answers_for_an_openid_token(
    emu: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    code = (await authorize(session, emu, scope="openid email profile"))["code"]
    _, tokens = await exchange(session, emu, code[0])
    headers = {"Authorization": f"Bearer {tokens['access_token']}", "Accept": "application/json"}
    status, user = await get_json(session, emu.url("/v1/openid_connect/userinfo"), headers=headers)
    assert status == 200
    claims = jwt.decode(tokens["id_token"], options={"verify_signature": False})
    assert user["sub"] == claims["sub"]
    assert user["emailVerified"] is True and "@" in user["email"]
    assert user["givenName"] and user["familyName"]


async def test_client_secret_post_works_for_token_and_revoke(
    emu: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    code = (await authorize(session, emu))["code"][0]
    client = {"client_id": emu.config.client_id, "client_secret": emu.config.client_secret}
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, **client}
    async with session.post(emu.url("/oauth2/v1/tokens/bearer"), data=form) as response:
        assert response.status == 200
        tokens = await response.json()
    bad = {**form, "client_secret": "wrong"}
    async with session.post(emu.url("/oauth2/v1/tokens/bearer"), data=bad) as response:
        assert response.status == 401
        assert (await response.json())["error"] == "invalid_client"
    revoke_form = {"token": tokens["refresh_token"], **client}
    async with session.post(emu.url("/v2/oauth2/tokens/revoke"), data=revoke_form) as response:
        assert response.status == 200
    status, body = await refresh(session, emu, tokens["refresh_token"])
    assert status == 400 and body["error"] == "invalid_grant"
