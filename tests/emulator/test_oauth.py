"""Intuit OAuth 2.0 emulation over real HTTP."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp

from qbo_emulator.config import EmulatorConfig
from qbo_emulator.testing import RunningEmulator, running_emulator

from .helpers import OTHER_REALM, REALM, api_get

REDIRECT = "https://app.example.test/callback"
SCOPE = "com.intuit.quickbooks.accounting openid"


def basic(emu: RunningEmulator, secret: str | None = None) -> dict[str, str]:
    return {
        "Authorization": aiohttp.encode_basic_auth(
            emu.config.client_id, secret or emu.config.client_secret
        )
    }


async def authorize(
    session: aiohttp.ClientSession, emu: RunningEmulator, **overrides: str
) -> dict[str, list[str]]:
    params = {
        "client_id": emu.config.client_id,
        "response_type": "code",
        "scope": SCOPE,
        "redirect_uri": REDIRECT,
        "state": "xyz-123",
        **overrides,
    }
    async with session.get(
        emu.url("/connect/oauth2"), params=params, allow_redirects=False
    ) as response:
        assert response.status == 302
        location = response.headers["Location"]
    assert location.startswith(REDIRECT + "?")
    return parse_qs(urlsplit(location).query)


async def token_call(
    session: aiohttp.ClientSession,
    emu: RunningEmulator,
    form: dict[str, str],
    auth: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    async with session.post(
        emu.url("/oauth2/v1/tokens/bearer"),
        data=form,
        headers={"Accept": "application/json", **(auth or basic(emu)), **(headers or {})},
    ) as response:
        return response.status, await response.json()


async def exchange(
    session: aiohttp.ClientSession, emu: RunningEmulator, code: str
) -> tuple[int, dict[str, Any]]:
    return await token_call(
        session,
        emu,
        {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT},
    )


async def refresh(
    session: aiohttp.ClientSession, emu: RunningEmulator, refresh_token: str
) -> tuple[int, dict[str, Any]]:
    return await token_call(
        session, emu, {"grant_type": "refresh_token", "refresh_token": refresh_token}
    )


async def test_code_flow_then_api_call(
    emu: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    params = await authorize(session, emu)
    assert params["state"] == ["xyz-123"]
    assert params["realmId"] == [REALM]
    status, body = await exchange(session, emu, params["code"][0])
    assert status == 200
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    assert body["x_refresh_token_expires_in"] == 8_640_000
    assert "x_refresh_token_hard_expires_in" not in body  # opt-in header not sent
    assert body["access_token"] and body["refresh_token"]
    status, result, _ = await api_get(
        session, emu, "query", body["access_token"], query="select count(*) from Invoice"
    )
    assert status == 200
    assert result["QueryResponse"] == {"totalCount": 0}


async def test_realm_override_on_consent(
    emu: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    params = await authorize(session, emu, realmId=OTHER_REALM)
    assert params["realmId"] == [OTHER_REALM]
    _, body = await exchange(session, emu, params["code"][0])
    status, _, _ = await api_get(
        session,
        emu,
        "query",
        body["access_token"],
        realm=OTHER_REALM,
        query="select * from Invoice",
    )
    assert status == 200


async def test_consent_errors_redirect_like_intuit(
    emu: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    assert (await authorize(session, emu, scope="bogus"))["error"] == ["invalid_scope"]
    assert (await authorize(session, emu, client_id="nope"))["error"] == ["unauthorized_client"]
    assert (await authorize(session, emu, deny="1"))["error"] == ["access_denied"]
    denied = await authorize(session, emu, response_type="token")
    assert denied["error"] == ["unsupported_response_type"]
    assert denied["state"] == ["xyz-123"]
    async with session.get(
        emu.url("/connect/oauth2"),
        params={"client_id": emu.config.client_id, "response_type": "code", "scope": SCOPE},
        allow_redirects=False,
    ) as response:
        assert response.status == 400


async def test_code_is_single_use(emu: RunningEmulator, session: aiohttp.ClientSession) -> None:
    code = (await authorize(session, emu))["code"][0]
    assert (await exchange(session, emu, code))[0] == 200
    status, body = await exchange(session, emu, code)
    assert (status, body) == (400, {"error": "invalid_grant"})


async def test_code_bound_to_redirect_uri_and_expires(
    emu: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    code = (await authorize(session, emu))["code"][0]
    status, body = await token_call(
        session,
        emu,
        {"grant_type": "authorization_code", "code": code, "redirect_uri": "https://evil.test/"},
    )
    assert status == 400
    assert body["error"] == "invalid_grant"
    code = (await authorize(session, emu))["code"][0]
    now = emu.state.clock()
    emu.state.clock = lambda: now + 301
    status, body = await exchange(session, emu, code)
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_refresh_rotates_and_old_token_dies(
    emu: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    _, first = await exchange(session, emu, (await authorize(session, emu))["code"][0])
    status, second = await refresh(session, emu, first["refresh_token"])
    assert status == 200
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    # The superseded refresh token is now dead ...
    assert await refresh(session, emu, first["refresh_token"]) == (400, {"error": "invalid_grant"})
    # ... while the new one keeps working (and rotates again).
    status, third = await refresh(session, emu, second["refresh_token"])
    assert status == 200
    assert third["refresh_token"] not in {first["refresh_token"], second["refresh_token"]}
    # Access tokens issued earlier stay valid until they expire.
    status, _, _ = await api_get(
        session, emu, "query", first["access_token"], query="select * from Invoice"
    )
    assert status == 200


async def test_without_rotation_same_refresh_token_comes_back(
    session: aiohttp.ClientSession,
) -> None:
    async with running_emulator(config=EmulatorConfig(rotate_refresh_tokens=False)) as emu:
        _, first = await exchange(session, emu, (await authorize(session, emu))["code"][0])
        status, second = await refresh(session, emu, first["refresh_token"])
        assert status == 200
        assert second["refresh_token"] == first["refresh_token"]


async def test_hard_expiry_is_reported_when_asked(
    emu: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    now = emu.state.clock()
    emu.state.clock = lambda: now
    code = (await authorize(session, emu))["code"][0]
    status, body = await token_call(
        session,
        emu,
        {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT},
        headers={"x-include-refresh-token-hard-expires-in": "true"},
    )
    assert status == 200
    assert body["x_refresh_token_hard_expires_in"] == 5 * 365 * 24 * 3600
    emu.state.clock = lambda: now + 1000
    status, body = await token_call(
        session,
        emu,
        {"grant_type": "refresh_token", "refresh_token": body["refresh_token"]},
        headers={"x-include-refresh-token-hard-expires-in": "true"},
    )
    assert status == 200
    assert body["x_refresh_token_hard_expires_in"] == 5 * 365 * 24 * 3600 - 1000


async def test_refresh_token_expires_after_rolling_window(
    emu: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    _, body = await exchange(session, emu, (await authorize(session, emu))["code"][0])
    now = emu.state.clock()
    emu.state.clock = lambda: now + 100 * 24 * 3600 + 1
    assert await refresh(session, emu, body["refresh_token"]) == (400, {"error": "invalid_grant"})


async def test_revoked_refresh_token_is_invalid_grant(
    emu: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    _, body = await exchange(session, emu, (await authorize(session, emu))["code"][0])
    async with session.post(
        emu.url("/v2/oauth2/tokens/revoke"),
        json={"token": body["refresh_token"]},
        headers=basic(emu),
    ) as response:
        assert response.status == 200
    assert await refresh(session, emu, body["refresh_token"]) == (400, {"error": "invalid_grant"})
    # Revocation takes the grant's access tokens with it.
    status, fault, _ = await api_get(
        session, emu, "query", body["access_token"], query="select * from Invoice"
    )
    assert status == 401
    assert fault["Fault"]["Error"][0]["code"] == "3200"
    async with session.post(
        emu.url("/v2/oauth2/tokens/revoke"), json={"token": "never-issued"}, headers=basic(emu)
    ) as response:
        assert response.status == 400


async def test_bad_client_credentials_are_401_invalid_client(
    emu: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    code = (await authorize(session, emu))["code"][0]
    status, body = await token_call(
        session,
        emu,
        {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT},
        auth=basic(emu, secret="wrong"),
    )
    assert (status, body) == (401, {"error": "invalid_client"})
    async with session.post(
        emu.url("/oauth2/v1/tokens/bearer"), data={"grant_type": "refresh_token"}
    ) as response:
        assert response.status == 401
        assert await response.json() == {"error": "invalid_client"}
    # The failed attempt did not burn the code.
    assert (await exchange(session, emu, code))[0] == 200


async def test_unsupported_grant_type(emu: RunningEmulator, session: aiohttp.ClientSession) -> None:
    status, body = await token_call(session, emu, {"grant_type": "password"})
    assert (status, body) == (400, {"error": "unsupported_grant_type"})


async def test_token_calls_are_counted_per_realm(
    emu: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    _, body = await exchange(session, emu, (await authorize(session, emu))["code"][0])
    await refresh(session, emu, body["refresh_token"])
    stats = emu.state.stats
    assert stats.token_call_count(REALM, "authorization_code") == 1
    assert stats.token_call_count(REALM, "refresh_token") == 1
    assert stats.token_call_count(REALM) == 2
    async with session.get(emu.url("/_emulator/stats")) as response:
        report = await response.json()
    assert report["realms"][REALM]["token_calls"] == {
        "authorization_code": 1,
        "refresh_token": 1,
        "total": 2,
    }


async def test_access_token_expiry_via_clock_and_admin(
    emu: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    tokens = emu.state.issue_tokens(REALM)
    access = tokens["access_token"]
    now = emu.state.clock()
    emu.state.clock = lambda: now + 3601
    status, body, _ = await api_get(session, emu, "query", access, query="select * from Invoice")
    assert status == 401
    assert body["Fault"]["Error"][0]["Detail"].startswith("Token expired")
    emu.state.clock = lambda: now
    fresh = emu.state.issue_tokens(REALM)["access_token"]
    assert (await api_get(session, emu, "query", fresh, query="select * from Invoice"))[0] == 200
    async with session.post(
        emu.url("/_emulator/tokens/expire"), json={"realm_id": REALM}
    ) as response:
        assert response.status == 200
        assert (await response.json())["access_tokens"] >= 1
    assert (await api_get(session, emu, "query", fresh, query="select * from Invoice"))[0] == 401
