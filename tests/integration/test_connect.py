"""Connecting a QBO company through the OAuth flow, over real HTTP against the emulator, with
the connection stored in the real MongoDB-protocol server."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from bson import encode as bson_encode
from pymongo.asynchronous.database import AsyncDatabase
from yarl import URL

from qbo_emulator.testing import RunningEmulator
from services.common.mongo import Document
from tests.integration.conftest import SyncUnderTest
from tests.support import MovableClock

pytestmark = pytest.mark.integration

REALM = "9130350000000001"


@dataclass
class Consent:
    callback_url: str
    state: str
    nonce_cookie: str


class Browser:
    """A user agent that follows the flow one redirect at a time, keeping its cookies."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def start(self, sync: SyncUnderTest, user: str = "alice") -> Consent:
        async with self.session.get(
            f"{sync.base_url}/oauth/connect", params={"user": user}, allow_redirects=False
        ) as r:
            assert r.status == 302, await r.text()
            authorize = r.headers["Location"]
            nonce = r.cookies["qbo_oauth_nonce"].value
        query = parse_qs(urlsplit(authorize).query)
        assert query["scope"] == ["com.intuit.quickbooks.accounting"]
        assert query["response_type"] == ["code"]
        # Intuit (the emulator) consents and redirects back with code, state and realmId.
        async with self.session.get(authorize, allow_redirects=False) as r:
            assert r.status == 302, await r.text()
            callback = r.headers["Location"]
        return Consent(callback, query["state"][0], nonce)

    async def get(self, url: str) -> tuple[int, dict[str, Any]]:
        async with self.session.get(url, allow_redirects=False) as r:
            return r.status, await r.json()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield Browser(session)


@pytest.fixture
async def stranger() -> AsyncIterator[Browser]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield Browser(session)


async def test_connect_stores_an_encrypted_connection_for_the_user(
    sync: SyncUnderTest, browser: Browser, mongo_db: AsyncDatabase[Document]
) -> None:
    consent = await browser.start(sync, user="alice")
    status, body = await browser.get(consent.callback_url)

    assert status == 200, body
    connection = body["connection"]
    assert isinstance(connection, dict)
    assert connection["realm_id"] == REALM
    assert connection["user_id"] == "alice"
    assert connection["status"] == "active"
    assert not {"access_token", "refresh_token"} & set(connection)

    stored = await sync.service.vault.get(REALM)
    assert stored.access_token not in json.dumps(body)
    assert stored.refresh_token not in json.dumps(body)
    raw = await mongo_db.connections.find_one({"_id": REALM})
    assert raw is not None
    raw_bytes = bson_encode(raw)
    for secret in (stored.access_token, stored.refresh_token):
        assert len(secret) > 10
        assert secret.encode() not in raw_bytes
        assert base64.b64encode(secret.encode()) not in raw_bytes
    assert str(raw["access_token"]).startswith("v1.")
    assert raw["refresh_token_hard_expires_at"] is not None  # the hard expiry is surfaced


async def test_replayed_callback_is_rejected(sync: SyncUnderTest, browser: Browser) -> None:
    consent = await browser.start(sync)
    assert (await browser.get(consent.callback_url))[0] == 200
    # The first success deletes the nonce cookie, so replay it by hand to reach the state check.
    browser.session.cookie_jar.update_cookies(
        {"qbo_oauth_nonce": consent.nonce_cookie}, response_url=URL(sync.base_url)
    )
    status, body = await browser.get(consent.callback_url)
    assert status == 400
    assert body["error"] == "bad_state"
    assert "already used" in str(body["message"])


async def test_forged_state_is_rejected(sync: SyncUnderTest, browser: Browser) -> None:
    consent = await browser.start(sync, user="alice")
    payload, signature = consent.state.split(".")
    fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    fields["u"] = "mallory"
    forged_payload = base64.urlsafe_b64encode(json.dumps(fields).encode()).decode().rstrip("=")
    forged = consent.callback_url.replace(consent.state, f"{forged_payload}.{signature}")

    status, body = await browser.get(forged)
    assert status == 400
    assert body == {"error": "bad_state", "message": "state signature does not match"}


async def test_expired_state_is_rejected(
    sync: SyncUnderTest, browser: Browser, clock: MovableClock
) -> None:
    consent = await browser.start(sync)
    clock.advance(minutes=11)
    status, body = await browser.get(consent.callback_url)
    assert status == 400
    assert body["error"] == "bad_state"
    assert "expired" in str(body["message"])


async def test_state_from_another_browser_is_rejected(
    sync: SyncUnderTest, browser: Browser, stranger: Browser
) -> None:
    # Login CSRF: the attacker starts a flow and makes the victim's browser finish it.
    attackers = await stranger.start(sync, user="mallory")
    status, body = await browser.get(attackers.callback_url)
    assert status == 400
    assert body["error"] == "bad_state"
    assert "browser" in str(body["message"])
    with pytest.raises(Exception, match="not connected"):
        await sync.service.vault.get(REALM)


async def test_intuit_error_reply_gets_a_clear_page(sync: SyncUnderTest, browser: Browser) -> None:
    url = f"{sync.base_url}/oauth/callback?error=access_denied&state=whatever"
    async with browser.session.get(url, headers={"Accept": "text/html"}) as r:
        assert r.status == 400
        page = await r.text()
    assert "Intuit did not grant access: access_denied" in page
    assert "<h1>Could not connect QuickBooks</h1>" in page


@pytest.mark.parametrize(
    "query",
    ["", "?code=x", "?code=x&state=y", "?code=x&state=y&realmId=not-digits"],
)
async def test_incomplete_callback_is_a_400_not_a_500(
    sync: SyncUnderTest, browser: Browser, query: str
) -> None:
    status, body = await browser.get(f"{sync.base_url}/oauth/callback{query}")
    assert status == 400
    assert body["error"] == "bad_callback"


async def test_connect_without_user_is_refused(sync: SyncUnderTest, browser: Browser) -> None:
    status, body = await browser.get(f"{sync.base_url}/oauth/connect")
    assert status == 400
    assert body["error"] == "bad_user"


async def test_disconnect_revokes_at_intuit_and_forgets_tokens(
    sync: SyncUnderTest, browser: Browser, emulator: RunningEmulator
) -> None:
    consent = await browser.start(sync)
    assert (await browser.get(consent.callback_url))[0] == 200
    old_refresh = (await sync.service.vault.get(REALM)).refresh_token

    async with browser.session.post(f"{sync.base_url}/connections/{REALM}/disconnect") as r:
        assert r.status == 200
        body = await r.json()
    assert body["connection"]["status"] == "disconnected"

    conn = await sync.service.vault.get(REALM)
    assert (conn.access_token, conn.refresh_token) == ("", "")
    with pytest.raises(Exception, match="invalid_grant"):
        await sync.service.intuit.refresh(old_refresh)  # Intuit no longer accepts it

    status, shown = await browser.get(f"{sync.base_url}/connections/{REALM}")
    assert status == 200
    assert shown["connection"]["status"] == "disconnected"
    assert old_refresh not in json.dumps(shown)


async def test_unknown_and_malformed_realms_get_clear_errors(
    sync: SyncUnderTest, browser: Browser
) -> None:
    assert await browser.get(f"{sync.base_url}/connections/4242") == (
        404,
        {"error": "not_connected", "message": "realm 4242 is not connected"},
    )
    status, body = await browser.get(f"{sync.base_url}/connections/abc")
    assert (status, body["error"]) == (400, "bad_realm")
