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
from tests.integration.conftest import SYNC_AUTH, SyncUnderTest
from tests.support import MovableClock

pytestmark = pytest.mark.integration

REALM = "9130350000000001"
OTHER_REALM = "9130350000000002"


@dataclass
class Consent:
    callback_url: str
    state: str
    nonce_cookie: str


class Browser:
    """A user agent that follows the flow one redirect at a time, keeping its cookies."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def connect_link(self, sync: SyncUnderTest, user: str) -> str:
        """What the app does for its signed-in user: ask sync (with its token) for a link."""
        async with self.session.post(
            f"{sync.base_url}/connect-links", json={"user_id": user}, headers=SYNC_AUTH
        ) as r:
            assert r.status == 201, await r.text()
            return str((await r.json())["connect_url"])

    async def start(self, sync: SyncUnderTest, user: str = "alice", realm: str = REALM) -> Consent:
        async with self.session.get(
            await self.connect_link(sync, user), allow_redirects=False
        ) as r:
            assert r.status == 302, await r.text()
            authorize = r.headers["Location"]
            nonce = r.cookies["qbo_oauth_nonce"].value
        query = parse_qs(urlsplit(authorize).query)
        assert query["scope"] == ["com.intuit.quickbooks.accounting"]
        assert query["response_type"] == ["code"]
        # Intuit (the emulator) consents for `realm` and redirects back with code, state, realmId.
        consent_url = URL(authorize).update_query(realmId=realm)
        async with self.session.get(consent_url, allow_redirects=False) as r:
            assert r.status == 302, await r.text()
            callback = r.headers["Location"]
        return Consent(callback, query["state"][0], nonce)

    async def get(self, url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        async with self.session.get(url, allow_redirects=False, headers=headers) as r:
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


@pytest.mark.parametrize("query", ["", "?user=alice", "?link="])
async def test_connect_without_a_signed_link_is_refused(
    sync: SyncUnderTest, browser: Browser, query: str
) -> None:
    # Naming a user is not enough: the link must be signed for that user.
    status, body = await browser.get(f"{sync.base_url}/oauth/connect{query}")
    assert status == 401
    assert body["error"] == "link_required"


async def test_a_forged_or_expired_connect_link_is_refused(
    sync: SyncUnderTest, browser: Browser, clock: MovableClock
) -> None:
    url = URL(await browser.connect_link(sync, "alice"))
    payload, mac = url.query["link"].split(".")
    fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    fields["u"] = "mallory"
    forged = base64.urlsafe_b64encode(json.dumps(fields).encode()).decode().rstrip("=")
    status, body = await browser.get(str(url.update_query(link=f"{forged}.{mac}")))
    assert (status, body["error"]) == (401, "bad_link")
    assert body["message"] == "connect link signature does not match"

    clock.advance(minutes=16)
    status, body = await browser.get(str(url))
    assert (status, body["error"]) == (401, "bad_link")
    assert "expired" in body["message"]


async def test_a_connect_link_needs_the_service_token(
    sync: SyncUnderTest, browser: Browser
) -> None:
    for headers in ({}, {"Authorization": "Bearer not-the-token"}):
        async with browser.session.post(
            f"{sync.base_url}/connect-links", json={"user_id": "alice"}, headers=headers
        ) as r:
            assert r.status == 401
            assert (await r.json())["error"] == "unauthorized"
    async with browser.session.post(
        f"{sync.base_url}/connect-links", json={"user_id": "not a user id"}, headers=SYNC_AUTH
    ) as r:
        assert (r.status, (await r.json())["error"]) == (400, "bad_user")


async def test_an_edited_realm_id_is_refused_and_the_victim_keeps_its_connection(
    sync: SyncUnderTest, browser: Browser, stranger: Browser, emulator: RunningEmulator
) -> None:
    victim = await stranger.start(sync, user="victim", realm=OTHER_REALM)
    assert (await stranger.get(victim.callback_url))[0] == 200
    before = await sync.service.vault.get(OTHER_REALM)

    # Mallory consents for her own company, then edits realmId to the victim's company.
    consent = await browser.start(sync, user="mallory", realm=REALM)
    edited = str(URL(consent.callback_url).update_query(realmId=OTHER_REALM))
    status, body = await browser.get(edited)

    assert status == 403
    assert body["error"] == "realm_mismatch"
    after = await sync.service.vault.get(OTHER_REALM)
    assert (after.user_id, after.version, after.access_token) == (
        "victim",
        before.version,
        before.access_token,
    )
    with pytest.raises(Exception, match="not connected"):
        await sync.service.vault.get(REALM)  # nothing stored under her own realm either
    # The grant she obtained is not left alive at Intuit.
    mallorys = [g for g in emulator.state.tokens.grants.values() if g.realm_id == REALM]
    assert len(mallorys) == 1
    assert mallorys[0].revoked


async def test_an_edited_realm_id_of_an_unconnected_company_is_refused_too(
    sync: SyncUnderTest, browser: Browser
) -> None:
    consent = await browser.start(sync, user="mallory", realm=REALM)
    edited = str(URL(consent.callback_url).update_query(realmId=OTHER_REALM))
    status, body = await browser.get(edited)
    assert (status, body["error"]) == (403, "realm_mismatch")
    for realm in (REALM, OTHER_REALM):
        with pytest.raises(Exception, match="not connected"):
            await sync.service.vault.get(realm)


async def test_a_realm_connected_by_another_user_is_not_taken_over(
    sync: SyncUnderTest, browser: Browser, stranger: Browser
) -> None:
    alices = await browser.start(sync, user="alice")
    assert (await browser.get(alices.callback_url))[0] == 200
    before = await sync.service.vault.get(REALM)

    bobs = await stranger.start(sync, user="bob")
    status, body = await stranger.get(bobs.callback_url)

    assert status == 409
    assert body["error"] == "realm_connected_by_another_user"
    assert "alice" not in body["message"]  # the owner is not disclosed
    after = await sync.service.vault.get(REALM)
    assert (after.user_id, after.version, after.access_token) == (
        "alice",
        before.version,
        before.access_token,
    )

    # The owner can reconnect; once she disconnects, the company is free for someone else.
    again = await browser.start(sync, user="alice")
    assert (await browser.get(again.callback_url))[0] == 200
    async with browser.session.post(
        f"{sync.base_url}/connections/{REALM}/disconnect", headers=SYNC_AUTH
    ) as r:
        assert r.status == 200
    bobs = await stranger.start(sync, user="bob")
    status, body = await stranger.get(bobs.callback_url)
    assert status == 200, body
    assert body["connection"]["user_id"] == "bob"


async def test_disconnect_revokes_at_intuit_and_forgets_tokens(
    sync: SyncUnderTest, browser: Browser, emulator: RunningEmulator
) -> None:
    consent = await browser.start(sync)
    assert (await browser.get(consent.callback_url))[0] == 200
    old_refresh = (await sync.service.vault.get(REALM)).refresh_token

    async with browser.session.post(
        f"{sync.base_url}/connections/{REALM}/disconnect", headers=SYNC_AUTH
    ) as r:
        assert r.status == 200
        body = await r.json()
    assert body["connection"]["status"] == "disconnected"

    conn = await sync.service.vault.get(REALM)
    assert (conn.access_token, conn.refresh_token) == ("", "")
    with pytest.raises(Exception, match="invalid_grant"):
        await sync.service.intuit.refresh(old_refresh)  # Intuit no longer accepts it

    status, shown = await browser.get(f"{sync.base_url}/connections/{REALM}", SYNC_AUTH)
    assert status == 200
    assert shown["connection"]["status"] == "disconnected"
    assert old_refresh not in json.dumps(shown)


async def test_unknown_and_malformed_realms_get_clear_errors(
    sync: SyncUnderTest, browser: Browser
) -> None:
    assert await browser.get(f"{sync.base_url}/connections/4242", SYNC_AUTH) == (
        404,
        {"error": "not_connected", "message": "realm 4242 is not connected"},
    )
    status, body = await browser.get(f"{sync.base_url}/connections/abc", SYNC_AUTH)
    assert (status, body["error"]) == (400, "bad_realm")
