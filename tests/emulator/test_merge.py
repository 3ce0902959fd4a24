"""A customer merge and changes whose webhooks are lost, as QBO makes them: the absorbed customer
is inactive and marked deleted, its invoices name the survivor with a new SyncToken, one Merge
notification names both customers, and CDC (not webhooks) sees the moved invoices."""

from __future__ import annotations

from typing import Any

import aiohttp

from qbo_emulator.testing import RunningEmulator, running_emulator

from .helpers import REALM, admin_post, api_get, run_query, webhook_receiver
from .test_cdc import since


async def _merge_setup(emu: RunningEmulator) -> tuple[str, str, list[str]]:
    absorbed = emu.state.create_customer(REALM, {"DisplayName": "Acme Ltd"})["Id"]
    survivor = emu.state.create_customer(REALM, {"DisplayName": "Acme Limited"})["Id"]
    invoices = [
        emu.state.create_invoice(REALM, {"CustomerRef": {"value": absorbed}, "TotalAmt": 10})["Id"]
        for _ in range(2)
    ]
    return absorbed, survivor, invoices


async def test_merge_moves_invoices_and_leaves_the_absorbed_customer_inactive(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    absorbed, survivor, invoices = await _merge_setup(emu)
    assert absorbed == "1"  # the queries below name it

    status, body = await admin_post(
        session, emu, f"/realms/{REALM}/customers/{absorbed}/merge", {"into": survivor}
    )

    assert status == 200, body
    assert body["moved_invoices"] == invoices
    for invoice_id in invoices:
        invoice = emu.state.get_invoice(REALM, invoice_id)
        assert invoice["CustomerRef"] == {"value": survivor, "name": "Acme Limited"}
        assert invoice["SyncToken"] == "1"
    gone = emu.state.get_customer(REALM, absorbed)
    assert gone["Active"] is False
    assert gone["DisplayName"] == "Acme Ltd (deleted)"
    assert gone["SyncToken"] == "1"
    assert emu.state.get_customer(REALM, survivor)["Balance"] == 20
    # A Customer query without a condition on Active sees active customers only (as QBO).
    status, found = await run_query(session, emu, token, "select * from Customer where Id = '1'")
    assert status == 200 and "Customer" not in found["QueryResponse"]
    status, found = await run_query(
        session,
        emu,
        token,
        "select * from Customer where Id = '1' and Active IN (true, false)",
    )
    assert [c["Active"] for c in found["QueryResponse"]["Customer"]] == [False]


async def test_merge_is_one_notification_naming_both_customers_in_both_formats(
    session: aiohttp.ClientSession,
) -> None:
    for fmt in ("legacy", "cloudevents"):
        async with running_emulator() as emu, webhook_receiver() as receiver:
            emu.state.configure_webhooks(url=receiver.url, format=fmt, enabled=False)
            absorbed, survivor, _ = await _merge_setup(emu)
            emu.state.configure_webhooks(enabled=True)

            status, _ = await admin_post(
                session, emu, f"/realms/{REALM}/customers/{absorbed}/merge", {"into": survivor}
            )
            assert status == 200
            await emu.state.webhooks.wait_idle()

        payloads: list[Any] = receiver.payloads()
        if fmt == "legacy":
            entities = [
                e
                for p in payloads
                for n in p["eventNotifications"]
                for e in n["dataChangeEvent"]["entities"]
            ]
            assert [(e["name"], e["id"], e["operation"], e["deletedId"]) for e in entities] == [
                ("Customer", survivor, "Merge", absorbed)
            ]
        else:
            events = [e for p in payloads for e in p]
            assert [(e["type"], e["intuitentityid"], e["data"]) for e in events] == [
                ("qbo.customer.merged.v1", survivor, {"deletedid": absorbed})
            ]


async def test_cdc_sees_the_moved_invoices_and_the_absorbed_customer(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    absorbed, survivor, invoices = await _merge_setup(emu)
    start = since(emu, 1)
    emu.state.merge_customers(REALM, absorbed, survivor)

    status, body, _ = await api_get(
        session, emu, "cdc", token, entities="Invoice,Customer", changedSince=start
    )

    assert status == 200, body
    responses = body["CDCResponse"][0]["QueryResponse"]
    moved = {i["Id"]: i["CustomerRef"]["value"] for i in responses[0]["Invoice"]}
    assert moved == dict.fromkeys(invoices, survivor)
    customers = {c["Id"]: c["Active"] for c in responses[1]["Customer"]}
    assert customers == {absorbed: False, survivor: True}


async def test_changes_can_be_made_without_their_webhook(
    emu: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    async with webhook_receiver() as receiver:
        emu.state.configure_webhooks(url=receiver.url, format="cloudevents", enabled=False)
        absorbed, survivor, invoices = await _merge_setup(emu)
        emu.state.configure_webhooks(enabled=True)

        status, moved = await admin_post(
            session,
            emu,
            f"/realms/{REALM}/invoices/{invoices[0]}?notify=false",
            {"CustomerRef": {"value": survivor}},
        )
        assert status == 200 and moved["Invoice"]["CustomerRef"]["value"] == survivor
        url = emu.url(f"/_emulator/realms/{REALM}/invoices/{invoices[1]}?notify=false")
        async with session.delete(url) as response:
            assert response.status == 200
        status, _ = await admin_post(
            session,
            emu,
            f"/realms/{REALM}/customers/{absorbed}/merge?notify=false",
            {"into": survivor},
        )
        assert status == 200
        await emu.state.webhooks.wait_idle()

    assert receiver.received == []
    assert emu.state.realm(REALM).is_deleted("Invoice", invoices[1])


async def test_a_merge_into_itself_or_of_an_inactive_customer_is_refused(
    emu: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    absorbed, survivor, _ = await _merge_setup(emu)
    merge = f"/realms/{REALM}/customers/{absorbed}/merge"
    status, body = await admin_post(session, emu, merge, {"into": absorbed})
    assert status == 400 and body["Fault"]["Error"][0]["code"] == "2010"
    status, body = await admin_post(session, emu, merge, {})
    assert status == 400
    status, body = await admin_post(
        session, emu, f"/realms/{REALM}/invoices/1?notify=maybe", {"PrivateNote": "x"}
    )
    assert status == 400
    assert (await admin_post(session, emu, merge, {"into": survivor}))[0] == 200
    status, body = await admin_post(session, emu, merge, {"into": survivor})
    assert status == 400  # already merged: inactive
