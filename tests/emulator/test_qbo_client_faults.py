"""Our QBO client against every fault body Intuit sends, over real HTTP to the emulator.

Intuit's gateway answers 401/403 as capitalised ``Fault`` JSON, lower-case
``fault`` JSON with an integer ``time``, or XML with code 100; 429 is XML. Whatever
the shape, the error the client raises must carry Intuit's code, message and the
``intuit_tid`` of the response.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import aiohttp
import pytest

from qbo_emulator.intuit_errors import FAULT_STYLES
from qbo_emulator.testing import RunningEmulator
from services.sync.quickbooks.client import QboClient, RetryPolicy
from services.sync.quickbooks.errors import (
    QboAuthError,
    QboRequestError,
    QboThrottled,
    QboUnavailable,
)

from .helpers import REALM

TID = re.compile(r"^1-[0-9a-f]{8}-[0-9a-f]{24}$")
AUTH_401 = {
    "json": ("3200", "message=AuthenticationFailed; errorCode=003200; statusCode=401"),
    "json_lowercase": ("3200", "message=AuthenticationFailed; errorCode=003200; statusCode=401"),
    "xml": ("100", "General Authentication Error"),
}


class EmulatorTokens:
    """Hands out tokens the emulator issued; counts the refreshes the client asks for."""

    def __init__(self, emu: RunningEmulator) -> None:
        self._emu = emu
        self.token = str(emu.state.issue_tokens(REALM)["access_token"])
        self.refreshes = 0

    async def access_token(self, realm_id: str) -> str:
        return self.token

    async def refresh_after_401(self, realm_id: str, rejected: str) -> str:
        self.refreshes += 1
        self.token = str(self._emu.state.issue_tokens(realm_id)["access_token"])
        return self.token


async def no_sleep(_: float) -> None:
    return None


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def client_for(
    emu: RunningEmulator, http: aiohttp.ClientSession, tokens: EmulatorTokens
) -> QboClient:
    return QboClient(http, emu.base_url, tokens, retry=RetryPolicy(max_retries=2), sleep=no_sleep)


@pytest.mark.parametrize("style", sorted(FAULT_STYLES))
async def test_a_401_in_any_shape_refreshes_once_then_reports_intuits_fault(
    emu: RunningEmulator, http: aiohttp.ClientSession, style: str
) -> None:
    tokens = EmulatorTokens(emu)
    emu.state.set_faults([{"kind": "401", "body": style}])
    with pytest.raises(QboAuthError) as caught:
        await client_for(emu, http, tokens).query(REALM, "select * from Customer")
    error = caught.value
    code, message = AUTH_401[style]
    assert (error.status, error.code, error.message) == (401, code, message)
    assert error.intuit_tid is not None and TID.match(error.intuit_tid)
    assert tokens.refreshes == 1
    assert emu.state.stats.faults["401"] == 2


@pytest.mark.parametrize("style", sorted(FAULT_STYLES))
async def test_a_single_401_in_any_shape_is_cured_by_one_refresh(
    emu: RunningEmulator, http: aiohttp.ClientSession, style: str
) -> None:
    tokens = EmulatorTokens(emu)
    emu.state.create_customer(REALM, {"DisplayName": "Acme"})
    emu.state.set_faults([{"kind": "401", "body": style, "times": 1}])
    result = await client_for(emu, http, tokens).query(REALM, "select * from Customer")
    assert [c["DisplayName"] for c in result["Customer"]] == ["Acme"]
    assert tokens.refreshes == 1


@pytest.mark.parametrize("style", sorted(FAULT_STYLES))
async def test_a_403_in_any_shape_fails_at_once_with_code_3100(
    emu: RunningEmulator, http: aiohttp.ClientSession, style: str
) -> None:
    tokens = EmulatorTokens(emu)
    emu.state.set_faults([{"kind": "403", "body": style}])
    with pytest.raises(QboRequestError) as caught:
        await client_for(emu, http, tokens).read(REALM, "Invoice", "1")
    error = caught.value
    assert (error.status, error.code) == (403, "3100")
    assert error.message == "message=AuthorizationFailed; errorCode=003100; statusCode=403"
    assert error.intuit_tid is not None and TID.match(error.intuit_tid)
    assert emu.state.stats.faults["403"] == 1  # never retried
    assert tokens.refreshes == 0


async def test_an_expired_token_in_the_configured_shape_is_refreshed(
    emu: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    """Not an injected fault: the emulator's own token check, answering lower-case JSON."""
    emu.state.config.auth_fault_style = "json_lowercase"
    tokens = EmulatorTokens(emu)
    emu.state.expire_access_tokens(REALM)
    result = await client_for(emu, http, tokens).query(REALM, "select count(*) from Invoice")
    assert result == {"totalCount": 0}
    assert tokens.refreshes == 1


async def test_throttling_xml_becomes_qbo_throttled_with_intuits_code(
    emu: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    tokens = EmulatorTokens(emu)
    emu.state.set_faults([{"kind": "429"}])
    with pytest.raises(QboThrottled) as caught:
        await client_for(emu, http, tokens).query(REALM, "select * from Invoice")
    error = caught.value
    assert (error.status, error.code) == (429, "3001")
    assert error.message == "message=ThrottleExceeded; errorCode=003001; statusCode=429"
    assert error.detail == "The request limit was reached.  Try again later"
    assert error.intuit_tid is not None and TID.match(error.intuit_tid)
    assert emu.state.stats.faults["429"] == 3  # the first try and two retries


async def test_system_fault_and_validation_fault_keep_their_codes(
    emu: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    tokens = EmulatorTokens(emu)
    client = client_for(emu, http, tokens)
    emu.state.set_faults([{"kind": "500"}])
    with pytest.raises(QboUnavailable) as unavailable:
        await client.query(REALM, "select * from Invoice")
    assert (unavailable.value.status, unavailable.value.code) == (500, "10000")
    emu.state.set_faults([])
    with pytest.raises(QboRequestError) as missing:
        await client.read(REALM, "Invoice", "404")
    assert (missing.value.status, missing.value.code) == (400, "610")
    assert missing.value.message == "Object Not Found"
    assert missing.value.intuit_tid is not None and TID.match(missing.value.intuit_tid)
