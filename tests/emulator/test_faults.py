"""Fault injection: every kind, matching, counting and seeded randomness."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp
import pytest

from qbo_emulator.testing import RunningEmulator

from .helpers import MINOR, OTHER_REALM, REALM, admin_post, bearer


async def query_once(
    session: aiohttp.ClientSession, emu: RunningEmulator, token: str, realm: str = REALM
) -> tuple[int, bytes, dict[str, str]]:
    async with session.get(
        emu.url(f"/v3/company/{realm}/query"),
        params={"query": "select count(*) from Invoice", "minorversion": MINOR},
        headers=bearer(token),
    ) as response:
        return response.status, await response.read(), dict(response.headers)


async def set_faults(
    session: aiohttp.ClientSession, emu: RunningEmulator, payload: dict[str, Any]
) -> dict[str, Any]:
    status, body = await admin_post(session, emu, "/faults", payload)
    assert status == 200, body
    result: dict[str, Any] = body
    return result


async def test_401_looks_like_an_expired_token(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    await set_faults(session, emu, {"rules": [{"kind": "401", "times": 1}]})
    status, body, headers = await query_once(session, emu, token)
    assert status == 401
    fault = json.loads(body)["Fault"]
    assert fault["type"] == "AUTHENTICATION"
    assert fault["Error"][0]["code"] == "3200"
    assert fault["Error"][0]["Detail"].startswith("Token expired")
    assert headers["intuit_tid"]
    assert (await query_once(session, emu, token))[0] == 200  # times=1 consumed


async def test_429_with_retry_after(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    await set_faults(session, emu, {"kind": "429", "retry_after": 7, "times": 1})
    status, body, headers = await query_once(session, emu, token)
    assert status == 429
    assert headers["Retry-After"] == "7"
    assert b"errorCode=003001" in body
    assert body.startswith(b"<?xml")


async def test_500_is_a_system_fault(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    await set_faults(session, emu, {"kind": "500", "times": 1})
    status, body, _ = await query_once(session, emu, token)
    assert status == 500
    assert json.loads(body)["Fault"]["type"] == "SystemFault"


async def test_503_is_an_html_gateway_page(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    await set_faults(session, emu, {"kind": "503", "times": 1, "retry_after": 2})
    status, body, headers = await query_once(session, emu, token)
    assert status == 503
    assert headers["Content-Type"].startswith("text/html")
    assert headers["Retry-After"] == "2"
    assert b"503 Service Temporarily Unavailable" in body


async def test_slow_delays_then_answers(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    await set_faults(session, emu, {"kind": "slow", "delay_s": 0.3, "times": 1})
    started = time.perf_counter()
    status, body, _ = await query_once(session, emu, token)
    assert time.perf_counter() - started >= 0.3
    assert status == 200
    assert json.loads(body)["QueryResponse"] == {"totalCount": 0}


async def test_malformed_json(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    await set_faults(session, emu, {"kind": "malformed_json", "times": 1})
    status, body, headers = await query_once(session, emu, token)
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)


async def test_drop_connection(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    # aiohttp silently retries an idempotent request once after a disconnect,
    # so two drops are needed before a GET surfaces the error.
    emu.state.set_faults([{"kind": "drop_connection", "times": 2, "path_contains": "/query"}])
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await query_once(session, emu, token)
    assert emu.state.stats.faults["drop_connection"] == 2
    assert (await query_once(session, emu, token))[0] == 200


async def test_drop_connection_on_a_post_is_seen_at_once(
    emu: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    tokens = emu.state.issue_tokens(REALM)
    emu.state.set_faults([{"kind": "drop_connection", "times": 1, "path_contains": "tokens"}])
    auth = aiohttp.encode_basic_auth(emu.config.client_id, emu.config.client_secret)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        async with session.post(
            emu.url("/oauth2/v1/tokens/bearer"),
            data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
            headers={"Authorization": auth},
        ):
            pass
    assert emu.state.stats.faults["drop_connection"] == 1


async def test_path_and_realm_matching(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    other = str(emu.state.issue_tokens(OTHER_REALM)["access_token"])
    await set_faults(
        session,
        emu,
        {
            "rules": [
                {"kind": "500", "realm_id": OTHER_REALM},
                {"kind": "503", "path_contains": "/cdc"},
            ]
        },
    )
    assert (await query_once(session, emu, token))[0] == 200
    assert (await query_once(session, emu, other, OTHER_REALM))[0] == 500
    async with session.get(
        emu.url(f"/v3/company/{REALM}/cdc"),
        params={"entities": "Invoice", "changedSince": "2026-01-01", "minorversion": MINOR},
        headers=bearer(token),
    ) as response:
        assert response.status == 503


async def test_faults_can_target_the_token_endpoint(
    emu: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    tokens = emu.state.issue_tokens(REALM)
    await set_faults(session, emu, {"kind": "503", "path_contains": "tokens/bearer", "times": 1})
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    auth = {
        "Authorization": aiohttp.encode_basic_auth(emu.config.client_id, emu.config.client_secret)
    }
    url = emu.url("/oauth2/v1/tokens/bearer")
    async with session.post(url, data=form, headers=auth) as response:
        assert response.status == 503
    async with session.post(url, data=form, headers=auth) as response:
        assert response.status == 200  # the refresh token was not consumed by the outage


async def test_seeded_probability_is_reproducible(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    emu.state.throttle.per_second = 1000  # 40 quick requests: this test is about faults
    runs: list[list[int]] = []
    for _ in range(2):
        await set_faults(
            session, emu, {"seed": 1234, "rules": [{"kind": "500", "probability": 0.5}]}
        )
        runs.append([(await query_once(session, emu, token))[0] for _ in range(20)])
    assert runs[0] == runs[1]
    assert set(runs[0]) == {200, 500}


async def test_admin_fault_api(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    body = await set_faults(session, emu, {"rules": [{"kind": "500", "times": 2}]})
    assert body["rules"][0]["times"] == 2
    await query_once(session, emu, token)
    async with session.get(emu.url("/_emulator/faults")) as response:
        listed = await response.json()
    assert listed["rules"][0]["times"] == 1
    async with session.delete(emu.url("/_emulator/faults")) as response:
        assert response.status == 200
    assert (await query_once(session, emu, token))[0] == 200
    status, error = await admin_post(session, emu, "/faults", {"rules": [{"kind": "teapot"}]})
    assert status == 400 and "teapot" in error["error"]
    status, _ = await admin_post(
        session, emu, "/faults", {"rules": [{"kind": "500", "probability": 2}]}
    )
    assert status == 400


async def test_admin_routes_are_never_faulted(
    emu: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    emu.state.set_faults([{"kind": "500"}])
    async with session.get(emu.url("/_emulator/stats")) as response:
        assert response.status == 200
