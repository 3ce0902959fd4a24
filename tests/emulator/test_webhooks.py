"""Signed webhooks in both formats, batching, multi-realm and lost deliveries."""

from __future__ import annotations

import re
from typing import Any

import aiohttp

from qbo_emulator.config import EmulatorConfig
from qbo_emulator.testing import RunningEmulator, running_emulator
from qbo_emulator.webhooks import sign

from .helpers import (
    OTHER_REALM,
    REALM,
    WebhookReceiver,
    admin_post,
    expected_signature,
    webhook_receiver,
)

UTC_MILLIS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def configure(
    session: aiohttp.ClientSession, emu: RunningEmulator, **settings: Any
) -> dict[str, Any]:
    status, body = await admin_post(session, emu, "/webhooks", settings)
    assert status == 200, body
    result: dict[str, Any] = body
    return result


async def flush(session: aiohttp.ClientSession, emu: RunningEmulator) -> None:
    status, body = await admin_post(session, emu, "/webhooks/flush")
    assert status == 200 and body == {"pending": 0}


async def make_changes(session: aiohttp.ClientSession, emu: RunningEmulator) -> None:
    await admin_post(session, emu, f"/realms/{REALM}/customers", {"DisplayName": "Hooked"})
    await admin_post(
        session, emu, f"/realms/{REALM}/invoices", {"CustomerRef": {"value": "1"}, "TotalAmt": 10}
    )
    await admin_post(session, emu, f"/realms/{REALM}/invoices/1", {"PrivateNote": "edited"})
    await admin_post(session, emu, f"/realms/{REALM}/invoices/1/void")
    await admin_post(
        session, emu, f"/realms/{REALM}/invoices", {"CustomerRef": {"value": "1"}, "TotalAmt": 5}
    )
    async with session.delete(emu.url(f"/_emulator/realms/{REALM}/invoices/2")) as response:
        assert response.status == 200


def assert_signed(receiver: WebhookReceiver, token: str) -> None:
    assert receiver.received
    for delivery in receiver.received:
        assert delivery.headers["Content-Type"] == "application/json"
        assert delivery.headers["intuit-signature"] == expected_signature(delivery.body, token)
        assert delivery.headers["intuit-signature"] != expected_signature(delivery.body, "wrong")


async def test_cloudevents_format(emu: RunningEmulator, session: aiohttp.ClientSession) -> None:
    async with webhook_receiver() as receiver:
        await configure(session, emu, url=receiver.url, format="cloudevents", enabled=True)
        await make_changes(session, emu)
        await flush(session, emu)
    assert_signed(receiver, emu.config.webhook_verifier_token)
    events = [event for payload in receiver.payloads() for event in payload]
    assert all(isinstance(payload, list) for payload in receiver.payloads())
    assert [(e["type"], e["intuitentityid"]) for e in events] == [
        ("qbo.customer.created.v1", "1"),
        ("qbo.invoice.created.v1", "1"),
        ("qbo.invoice.updated.v1", "1"),
        ("qbo.invoice.voided.v1", "1"),
        ("qbo.invoice.created.v1", "2"),
        ("qbo.invoice.deleted.v1", "2"),
    ]
    for event in events:
        assert event["specversion"] == "1.0"
        assert event["intuitaccountid"] == REALM
        assert event["source"].startswith("intuit.")
        assert event["datacontenttype"] == "application/json"
        assert event["time"].endswith("Z")
        assert event["data"] == {}
    assert len({e["id"] for e in events}) == len(events)


async def test_legacy_format(emu: RunningEmulator, session: aiohttp.ClientSession) -> None:
    async with webhook_receiver() as receiver:
        await configure(session, emu, url=receiver.url, format="legacy", enabled=True)
        await make_changes(session, emu)
        await flush(session, emu)
    assert_signed(receiver, emu.config.webhook_verifier_token)
    entities: list[dict[str, Any]] = []
    for payload in receiver.payloads():
        notifications = payload["eventNotifications"]
        assert [n["realmId"] for n in notifications] == [REALM]
        entities.extend(notifications[0]["dataChangeEvent"]["entities"])
    assert [(e["name"], e["id"], e["operation"]) for e in entities] == [
        ("Customer", "1", "Create"),
        ("Invoice", "1", "Create"),
        ("Invoice", "1", "Update"),
        ("Invoice", "1", "Void"),
        ("Invoice", "2", "Create"),
        ("Invoice", "2", "Delete"),
    ]
    assert all(UTC_MILLIS.match(e["lastUpdated"]) for e in entities)


async def test_changes_are_batched_and_realms_mixed(session: aiohttp.ClientSession) -> None:
    async with webhook_receiver() as receiver, running_emulator() as emu:
        emu.state.configure_webhooks(url=receiver.url, flush_interval_s=0.2)
        emu.state.create_customer(REALM, {"DisplayName": "A"})
        emu.state.create_customer(OTHER_REALM, {"DisplayName": "B"})
        emu.state.create_customer(REALM, {"DisplayName": "C"})
        await emu.state.webhooks.wait_idle()
        assert len(receiver.received) == 1  # one POST for the whole burst
        (payload,) = receiver.payloads()
        assert [e["intuitaccountid"] for e in payload] == [REALM, OTHER_REALM, REALM]

        emu.state.configure_webhooks(format="legacy")
        emu.state.create_customer(REALM, {"DisplayName": "D"})
        emu.state.create_customer(OTHER_REALM, {"DisplayName": "E"})
        await emu.state.webhooks.wait_idle()
        legacy = receiver.payloads()[1]
        assert [n["realmId"] for n in legacy["eventNotifications"]] == [REALM, OTHER_REALM]


async def test_max_batch_splits_deliveries(session: aiohttp.ClientSession) -> None:
    async with webhook_receiver() as receiver, running_emulator() as emu:
        emu.state.configure_webhooks(url=receiver.url, max_batch=2)
        for name in "VWXYZ":
            emu.state.create_customer(REALM, {"DisplayName": name})
        await emu.state.webhooks.wait_idle()
        assert [len(p) for p in receiver.payloads()] == [2, 2, 1]


async def test_dropped_deliveries_simulate_lost_webhooks(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    async with webhook_receiver() as receiver:
        await configure(session, emu, url=receiver.url, drop_next=1)
        emu.state.create_customer(REALM, {"DisplayName": "Lost"})
        await flush(session, emu)
        assert receiver.received == []
        emu.state.create_customer(REALM, {"DisplayName": "Found"})
        await flush(session, emu)
    assert len(receiver.received) == 1
    assert [e["intuitentityid"] for e in receiver.payloads()[0]] == ["2"]
    async with session.get(emu.url("/_emulator/webhooks")) as response:
        report = await response.json()
    assert [d["dropped"] for d in report["deliveries"]] == [True, False]
    assert report["deliveries"][1]["status"] == 200
    async with session.get(emu.url("/_emulator/stats")) as response:
        stats = await response.json()
    assert stats["webhooks"]["dropped"] == 1
    assert stats["webhooks"]["events_sent"] == 1


async def test_disabled_webhooks_send_nothing(
    emu: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    async with webhook_receiver() as receiver:
        await configure(session, emu, url=receiver.url, enabled=False)
        emu.state.create_customer(REALM, {"DisplayName": "Quiet"})
        await flush(session, emu)
    assert receiver.received == []
    assert emu.state.webhooks.counters.queued == 0


async def test_webhook_url_and_token_from_config(session: aiohttp.ClientSession) -> None:
    async with webhook_receiver() as receiver:
        config = EmulatorConfig(webhook_url=receiver.url, webhook_verifier_token="s3cret")
        async with running_emulator(config=config) as emu:
            emu.state.create_customer(REALM, {"DisplayName": "Configured"})
            await emu.state.webhooks.wait_idle()
    assert_signed(receiver, "s3cret")


async def test_failed_delivery_is_recorded(session: aiohttp.ClientSession) -> None:
    async with webhook_receiver() as receiver, running_emulator() as emu:
        receiver.status = 500
        emu.state.configure_webhooks(url=receiver.url)
        emu.state.create_customer(REALM, {"DisplayName": "Boom"})
        await emu.state.webhooks.wait_idle()
        assert emu.state.webhooks.deliveries[-1].status == 500
        assert emu.state.webhooks.counters.failed == 1


async def test_bad_settings_rejected(emu: RunningEmulator, session: aiohttp.ClientSession) -> None:
    status, _ = await admin_post(
        session, emu, "/webhooks", {"url": "http://x.test/", "format": "xml"}
    )
    assert status == 400
    assert emu.state.webhooks.settings.format == "cloudevents"  # nothing half-applied
    assert emu.state.webhooks.settings.url is None
    status, _ = await admin_post(session, emu, "/webhooks", {"colour": "blue"})
    assert status == 400


def test_sign_matches_reference_hmac() -> None:
    body = b'[{"specversion":"1.0"}]'
    assert sign(body, "token") == expected_signature(body, "token")
