"""Change data capture: shape, deletes, the 1000-object cap and 30-day window."""

from __future__ import annotations

from decimal import Decimal

import aiohttp

from qbo_emulator.testing import RunningEmulator
from qbo_emulator.timeutil import company_date, format_entity_time, format_utc_millis

from .helpers import REALM, api_get


def since(emu: RunningEmulator, seconds_ago: float) -> str:
    return format_entity_time(emu.state.clock() - seconds_ago)


async def test_cdc_shape_with_updates_and_deletes(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    state = emu.state
    start = since(emu, 1)
    customer = state.create_customer(REALM, {"DisplayName": "Acme"})
    first = state.create_invoice(REALM, {"CustomerRef": {"value": customer["Id"]}, "TotalAmt": 10})
    second = state.create_invoice(REALM, {"CustomerRef": {"value": customer["Id"]}, "TotalAmt": 20})
    state.update_invoice(REALM, first["Id"], {"TotalAmt": "11.50"})
    state.delete_invoice(REALM, second["Id"])

    status, body, _ = await api_get(
        session, emu, "cdc", token, entities="Invoice,Customer", changedSince=start
    )
    assert status == 200
    assert isinstance(body["time"], str)
    responses = body["CDCResponse"][0]["QueryResponse"]
    invoices = responses[0]["Invoice"]
    customers = responses[1]["Customer"]
    assert responses[0]["startPosition"] == 1
    assert responses[0]["maxResults"] == 2
    # Intuit's CDC pages have no totalCount (unlike a query's count(*)).
    assert "totalCount" not in responses[0] and "totalCount" not in responses[1]
    # One row per object, in order of its latest change: the update, then the delete.
    assert [i["Id"] for i in invoices] == [first["Id"], second["Id"]]
    assert invoices[0]["TotalAmt"] == Decimal("11.50")
    assert invoices[0]["SyncToken"] == "1"
    deleted = invoices[1]
    assert deleted["status"] == "Deleted"
    assert deleted["domain"] == "QBO"
    assert set(deleted) == {"domain", "status", "Id", "MetaData"}
    assert set(deleted["MetaData"]) == {"LastUpdatedTime"}
    assert [c["DisplayName"] for c in customers] == ["Acme"]


async def test_cdc_excludes_changes_before_changed_since(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    state = emu.state
    now = state.clock()
    state.clock = lambda: now - 3600
    old = state.create_customer(REALM, {"DisplayName": "Old"})
    state.clock = lambda: now
    state.create_customer(REALM, {"DisplayName": "New"})
    _, body, _ = await api_get(
        session, emu, "cdc", token, entities="Customer", changedSince=format_entity_time(now - 60)
    )
    names = [c["DisplayName"] for c in body["CDCResponse"][0]["QueryResponse"][0]["Customer"]]
    assert names == ["New"]
    assert old["Id"] == "1"


async def test_cdc_empty_entity_is_empty_object(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    _, body, _ = await api_get(
        session, emu, "cdc", token, entities="Invoice", changedSince=since(emu, 60)
    )
    assert body["CDCResponse"] == [{"QueryResponse": [{}]}]


async def test_cdc_caps_at_1000_oldest_changes_per_entity(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    start = since(emu, 1)
    emu.state.seed(REALM, customers=3, invoices_per_customer=500)  # 1500 invoices
    _, body, _ = await api_get(
        session, emu, "cdc", token, entities="Invoice,Customer", changedSince=start
    )
    invoice_block, customer_block = body["CDCResponse"][0]["QueryResponse"]
    invoices = invoice_block["Invoice"]
    assert len(invoices) == 1000
    assert invoice_block["maxResults"] == 1000
    assert [i["Id"] for i in invoices] == [str(n) for n in range(1, 1001)]  # the oldest 1000
    assert len(customer_block["Customer"]) == 3  # the cap is per entity


async def test_cdc_rejects_changed_since_older_than_30_days(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    status, body, _ = await api_get(
        session, emu, "cdc", token, entities="Invoice", changedSince=since(emu, 31 * 86400)
    )
    assert status == 400
    assert body["Fault"]["type"] == "ValidationFault"
    assert "30 days" in body["Fault"]["Error"][0]["Detail"]
    status, _, _ = await api_get(
        session, emu, "cdc", token, entities="Invoice", changedSince=since(emu, 29 * 86400)
    )
    assert status == 200


async def test_cdc_parameter_validation(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    status, _, _ = await api_get(session, emu, "cdc", token, changedSince=since(emu, 60))
    assert status == 400
    status, _, _ = await api_get(session, emu, "cdc", token, entities="Invoice")
    assert status == 400
    status, _, _ = await api_get(
        session, emu, "cdc", token, entities="Invoice", changedSince="yesterday"
    )
    assert status == 400
    status, _, _ = await api_get(
        session, emu, "cdc", token, entities="Widget", changedSince=since(emu, 60)
    )
    assert status == 400


async def test_cdc_accepts_date_only_and_utc_forms(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    emu.state.create_customer(REALM, {"DisplayName": "Zed"})
    yesterday = emu.state.clock() - 86400
    for value in (company_date(yesterday).isoformat(), format_utc_millis(yesterday)):
        status, body, _ = await api_get(
            session, emu, "cdc", token, entities="Customer", changedSince=value
        )
        assert status == 200, body
        assert body["CDCResponse"][0]["QueryResponse"][0]["Customer"][0]["DisplayName"] == "Zed"
