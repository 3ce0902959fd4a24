"""Per-realm throttling: 10 in flight, 10 a second, 500 per rolling minute; 429 in XML without
Retry-After (Intuit asks for 60 s of waiting instead)."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import Callable

import aiohttp
import pytest

from qbo_emulator.config import EmulatorConfig
from qbo_emulator.state import EmulatorState
from qbo_emulator.testing import RunningEmulator

from .helpers import MINOR, OTHER_REALM, REALM, bearer

NS = "{http://schema.intuit.com/finance/v3}"


async def get_status(
    session: aiohttp.ClientSession, emu: RunningEmulator, token: str, realm: str = REALM
) -> tuple[int, str, dict[str, str]]:
    async with session.get(
        emu.url(f"/v3/company/{realm}/query"),
        params={"query": "select count(*) from Invoice", "minorversion": MINOR},
        headers=bearer(token),
    ) as response:
        return response.status, await response.text(), dict(response.headers)


def at(moment: float) -> Callable[[], float]:
    return lambda: moment


def assert_throttle_xml(text: str) -> None:
    root = ET.fromstring(text)  # noqa: S314 - our own emulator's output
    assert root.tag == f"{NS}IntuitResponse"
    fault = root.find(f"{NS}Fault")
    assert fault is not None and fault.get("type") == "SERVICE"
    error = fault.find(f"{NS}Error")
    assert error is not None and error.get("code") == "3001"
    message = error.findtext(f"{NS}Message")
    assert message == "message=ThrottleExceeded; errorCode=003001; statusCode=429"


async def test_eleventh_concurrent_request_is_throttled(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    emu.state.set_faults([{"kind": "slow", "delay_s": 0.5, "path_contains": "/query", "times": 10}])
    slow = [asyncio.create_task(get_status(session, emu, token)) for _ in range(10)]
    for _ in range(200):
        if emu.state.throttle.in_flight(REALM) == 10:
            break
        await asyncio.sleep(0.01)
    assert emu.state.throttle.in_flight(REALM) == 10
    status, text, headers = await get_status(session, emu, token)
    assert status == 429
    assert headers["Content-Type"].startswith("application/xml")
    assert "Retry-After" not in headers
    assert "intuit_tid" in headers
    assert_throttle_xml(text)
    # Another realm has its own budget.
    other = str(emu.state.issue_tokens(OTHER_REALM)["access_token"])
    assert (await get_status(session, emu, other, OTHER_REALM))[0] == 200
    results = await asyncio.gather(*slow)
    assert [r[0] for r in results] == [200] * 10
    later = emu.state.clock() + 1.01  # past the per-second limit the first 10 used up
    emu.state.clock = lambda: later
    assert (await get_status(session, emu, token))[0] == 200
    assert emu.state.stats.throttled[REALM] == 1


async def test_501st_request_in_a_minute_is_throttled(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    state = emu.state
    start = state.clock()
    for second in range(50):  # 500 requests, 10 a second (under the other two limits)
        state.clock = at(start + second)
        wave = await asyncio.gather(*(get_status(session, emu, token) for _ in range(10)))
        assert all(status == 200 for status, _, _ in wave)
    state.clock = lambda: start + 50
    status, text, headers = await get_status(session, emu, token)
    assert status == 429
    assert_throttle_xml(text)
    assert "Retry-After" not in headers  # Intuit's body names no limit: only this one is over
    # The window rolls: a minute after the first ones there is room again.
    state.clock = lambda: start + 60.5
    assert (await get_status(session, emu, token))[0] == 200


async def test_11th_request_within_a_second_is_throttled(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    state = emu.state
    start = state.clock()
    state.clock = lambda: start
    for _ in range(10):  # one after the other: never two in flight
        assert (await get_status(session, emu, token))[0] == 200
    status, text, headers = await get_status(session, emu, token)
    assert status == 429
    assert_throttle_xml(text)  # Intuit's body names no limit: only the per-second one is over
    assert "Retry-After" not in headers
    state.clock = lambda: start + 1.01
    assert (await get_status(session, emu, token))[0] == 200


def test_latency_model_is_a_base_plus_a_cost_per_row_with_bounded_jitter() -> None:
    state = EmulatorState(EmulatorConfig(latency_base_ms=200, latency_per_row_us=300), seed=1)
    assert state.latency_s(0) == pytest.approx(0.2)
    assert state.latency_s(1000) == pytest.approx(0.5)
    state.config.latency_jitter_pct = 20
    delays = [state.latency_s(1000) for _ in range(200)]
    assert all(0.4 <= d <= 0.6 for d in delays)
    assert len(set(delays)) > 100
    assert EmulatorState().latency_s(1000) == 0  # off by default


async def test_limits_come_from_config(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    emu.state.throttle.per_minute = 3
    statuses = [(await get_status(session, emu, token))[0] for _ in range(4)]
    assert statuses == [200, 200, 200, 429]


async def test_admin_endpoints_are_never_throttled(
    emu: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    emu.state.throttle.per_minute = 1
    for _ in range(5):
        async with session.get(emu.url("/_emulator/stats")) as response:
            assert response.status == 200
