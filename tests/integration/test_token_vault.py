"""The token vault and the QBO client against the emulator over real HTTP, with connections in
the real MongoDB-protocol server: refresh paths, rotation, re-auth, retries and secrecy."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from pymongo.errors import AutoReconnect

from qbo_emulator.testing import RunningEmulator
from services.common.logging import configure_logging
from services.common.statuses import ConnectionStatus
from services.sync.oauth.intuit import InvalidGrant, TokenGrant
from services.sync.quickbooks.errors import QboThrottled, QboUnavailable, ReauthRequired
from services.sync.quickbooks.query import Select
from tests.integration.conftest import SyncUnderTest
from tests.support import MovableClock

pytestmark = pytest.mark.integration

REALM = "9130350000000001"


async def connect(sync: SyncUnderTest, emulator: RunningEmulator, clock: MovableClock) -> None:
    """Connect REALM without the browser dance (test_connect.py covers that)."""
    body = emulator.state.issue_tokens(REALM)
    await sync.service.vault.connect(REALM, "alice", TokenGrant.from_response(body, clock()))


def refreshes(emulator: RunningEmulator) -> int:
    return emulator.state.stats.token_call_count(REALM, "refresh_token")


async def test_twenty_concurrent_callers_cause_exactly_one_refresh(
    sync: SyncUnderTest, emulator: RunningEmulator, clock: MovableClock
) -> None:
    await connect(sync, emulator, clock)
    before = (await sync.service.vault.get(REALM)).access_token
    clock.advance(hours=2)  # our copy of the access token has expired

    tokens = await asyncio.gather(*(sync.service.vault.access_token(REALM) for _ in range(20)))

    assert refreshes(emulator) == 1
    assert len(set(tokens)) == 1
    assert tokens[0] != before
    assert (await sync.service.vault.get(REALM)).access_token == tokens[0]


async def test_401_mid_call_refreshes_once_and_retries(
    sync: SyncUnderTest, emulator: RunningEmulator, clock: MovableClock
) -> None:
    await connect(sync, emulator, clock)
    emulator.state.create_customer(REALM, {"DisplayName": "Acme"})
    emulator.state.expire_access_tokens(REALM)  # Intuit says expired; our clock does not

    page = await sync.service.qbo.query(REALM, Select("Customer").render())

    assert [c["DisplayName"] for c in page["Customer"]] == ["Acme"]
    assert refreshes(emulator) == 1
    assert sync.service.qbo.calls[REALM] == 2  # the 401 and the retry


async def test_twenty_concurrent_401s_cause_exactly_one_refresh(
    sync: SyncUnderTest, emulator: RunningEmulator, clock: MovableClock
) -> None:
    await connect(sync, emulator, clock)
    emulator.state.create_customer(REALM, {"DisplayName": "Acme"})
    await sync.service.qbo.query(REALM, Select("Customer").render())
    emulator.state.expire_access_tokens(REALM)

    results = await asyncio.gather(
        *(sync.service.qbo.query(REALM, Select("Customer").render()) for _ in range(20))
    )

    assert all(r["Customer"][0]["DisplayName"] == "Acme" for r in results)
    assert refreshes(emulator) == 1


async def test_rotated_refresh_token_is_stored_and_the_old_one_is_dead(
    sync: SyncUnderTest, emulator: RunningEmulator, clock: MovableClock
) -> None:
    await connect(sync, emulator, clock)
    old = await sync.service.vault.get(REALM)
    clock.advance(hours=2)
    await sync.service.vault.access_token(REALM)

    new = await sync.service.vault.get(REALM)
    assert new.refresh_token != old.refresh_token
    assert new.version == old.version + 1
    with pytest.raises(InvalidGrant):
        await sync.service.intuit.refresh(old.refresh_token)
    clock.advance(hours=2)  # the stored (rotated) token keeps working
    await sync.service.vault.access_token(REALM)
    assert refreshes(emulator) == 3  # two by the vault, one refused above


async def test_new_access_token_is_not_handed_out_unless_its_refresh_token_was_stored(
    sync: SyncUnderTest,
    emulator: RunningEmulator,
    clock: MovableClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await connect(sync, emulator, clock)
    clock.advance(hours=2)
    connections = sync.service.vault._connections

    async def database_down(*args: Any, **kwargs: Any) -> Any:
        raise AutoReconnect("primary went away")

    monkeypatch.setattr(connections, "update_one", database_down)
    monkeypatch.setattr(sync.service.vault, "_sleep", _no_sleep)

    with pytest.raises(ReauthRequired, match="could not be stored"):
        await sync.service.vault.access_token(REALM)


async def _no_sleep(_: float) -> None:
    return None


async def test_revoked_refresh_token_marks_the_connection_needs_reauth(
    sync: SyncUnderTest, emulator: RunningEmulator, clock: MovableClock
) -> None:
    await connect(sync, emulator, clock)
    emulator.state.expire_refresh_tokens(REALM)
    clock.advance(hours=2)

    with pytest.raises(ReauthRequired):
        await sync.service.vault.access_token(REALM)

    conn = await sync.service.vault.get(REALM)
    assert conn.status is ConnectionStatus.NEEDS_REAUTH
    assert conn.reauth_reason == "refresh token rejected: invalid_grant"
    calls = refreshes(emulator)
    with pytest.raises(ReauthRequired):  # and nobody bothers Intuit again
        await sync.service.qbo.query(REALM, Select("Customer").render())
    assert refreshes(emulator) == calls


async def test_reconnect_during_a_refresh_wins(
    sync: SyncUnderTest,
    emulator: RunningEmulator,
    clock: MovableClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await connect(sync, emulator, clock)
    clock.advance(hours=2)
    intuit = sync.service.intuit
    original = intuit.refresh
    reconnected: list[str] = []

    async def refresh_while_user_reconnects(token: str) -> TokenGrant:
        grant = await original(token)
        # The owner's fresh consent lands between Intuit's answer and our write.
        fresh = TokenGrant.from_response(emulator.state.issue_tokens(REALM), clock())
        await sync.service.vault.connect(REALM, "alice", fresh)
        reconnected.append(fresh.access_token)
        return grant

    monkeypatch.setattr(intuit, "refresh", refresh_while_user_reconnects)

    token = await sync.service.vault.access_token(REALM)

    stored = await sync.service.vault.get(REALM)
    assert token == reconnected[0] == stored.access_token
    assert stored.version == 2  # connect and reconnect; the refresh lost its compare-and-swap


async def test_customer_named_o_brien_is_found_exactly(
    sync: SyncUnderTest, emulator: RunningEmulator, clock: MovableClock
) -> None:
    await connect(sync, emulator, clock)
    for name in ("O'Brien", "O'Briens Ltd", "OBrien", "Brien"):
        emulator.state.create_customer(REALM, {"DisplayName": name})

    found = await sync.service.qbo.query(
        REALM, Select("Customer").where("DisplayName", "=", "O'Brien").render()
    )

    assert [c["DisplayName"] for c in found["Customer"]] == ["O'Brien"]


async def test_burst_of_429s_is_retried_with_backoff(
    sync: SyncUnderTest, emulator: RunningEmulator, clock: MovableClock
) -> None:
    await connect(sync, emulator, clock)
    emulator.state.create_customer(REALM, {"DisplayName": "Acme"})
    emulator.state.set_faults([{"kind": "429", "times": 2}])

    page = await sync.service.qbo.query(REALM, Select("Customer").render())

    assert page["Customer"][0]["DisplayName"] == "Acme"
    assert sync.service.qbo.calls[REALM] == 3


async def test_persistent_429s_end_as_throttled_after_three_retries(
    sync: SyncUnderTest, emulator: RunningEmulator, clock: MovableClock
) -> None:
    await connect(sync, emulator, clock)
    emulator.state.set_faults([{"kind": "429", "times": 10}])

    with pytest.raises(QboThrottled) as caught:
        await sync.service.qbo.query(REALM, Select("Customer").render())

    assert caught.value.status == 429
    assert caught.value.code == "3001"  # parsed from Intuit's XML fault body
    assert sync.service.qbo.calls[REALM] == 4


# aiohttp itself re-sends an idempotent GET once on a dropped keep-alive connection, so it takes
# two drops in a row for our retry to be needed.
@pytest.mark.parametrize(
    ("kind", "times"), [("503", 1), ("malformed_json", 1), ("drop_connection", 2)]
)
async def test_transient_failures_are_retried(
    sync: SyncUnderTest, emulator: RunningEmulator, clock: MovableClock, kind: str, times: int
) -> None:
    await connect(sync, emulator, clock)
    emulator.state.create_customer(REALM, {"DisplayName": "Acme"})
    emulator.state.set_faults([{"kind": kind, "times": times}])

    page = await sync.service.qbo.query(REALM, Select("Customer").render())

    assert page["Customer"][0]["DisplayName"] == "Acme"
    assert sync.service.qbo.calls[REALM] == 2


async def test_server_errors_that_persist_fail_gracefully(
    sync: SyncUnderTest, emulator: RunningEmulator, clock: MovableClock
) -> None:
    await connect(sync, emulator, clock)
    emulator.state.set_faults([{"kind": "500", "times": 10}])
    with pytest.raises(QboUnavailable) as caught:
        await sync.service.qbo.query(REALM, Select("Customer").render())
    assert caught.value.status == 500
    assert caught.value.intuit_tid


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    configure_logging("DEBUG", json=True, stream=buffer, cache=False)
    yield buffer
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


async def test_no_token_reaches_the_logs(
    sync: SyncUnderTest,
    emulator: RunningEmulator,
    clock: MovableClock,
    captured_logs: io.StringIO,
) -> None:
    seen: set[str] = set()
    await connect(sync, emulator, clock)
    seen |= {(c := await sync.service.vault.get(REALM)).access_token, c.refresh_token}
    emulator.state.expire_access_tokens(REALM)
    await sync.service.qbo.query(REALM, Select("Customer").render())  # 401 -> refresh
    seen |= {(c := await sync.service.vault.get(REALM)).access_token, c.refresh_token}
    emulator.state.expire_refresh_tokens(REALM)
    clock.advance(hours=2)
    with pytest.raises(ReauthRequired):
        await sync.service.vault.access_token(REALM)

    logs = captured_logs.getvalue()
    assert "connection.token_refreshed" in logs  # the logs were captured at all
    assert "connection.needs_reauth" in logs
    for secret in seen:
        assert secret not in logs


async def test_a_connection_read_serves_the_realm_briefly_and_a_revoked_token_still_ends_it(
    sync: SyncUnderTest, emulator: RunningEmulator, clock: MovableClock, mongo_db: Any
) -> None:
    """Commands of a busy realm do not each read its connection; what the cached copy misses
    (a disconnect through another replica) is caught by Intuit's 401, whose refresh reads again."""
    await connect(sync, emulator, clock)
    vault = sync.service.vault
    first = await vault.access_token(REALM)
    # Another replica disconnects the realm: tokens revoked at Intuit, the document updated.
    emulator.state.expire_access_tokens(REALM)  # Intuit answers 401 to the revoked token
    await mongo_db.connections.update_one(
        {"_id": REALM},
        {"$set": {"status": "disconnected", "access_token": None, "refresh_token": None}},
    )
    assert await vault.access_token(REALM) == first  # served from the copy read just now
    with pytest.raises(ReauthRequired):
        await sync.service.qbo.query(REALM, Select("Customer").render())
    assert refreshes(emulator) == 0  # the 401's refresh read the document, not Intuit
    with pytest.raises(ReauthRequired):  # and from then on the realm stays disconnected
        await vault.access_token(REALM)
