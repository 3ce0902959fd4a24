"""Entity shapes and admin mutations (HTTP admin API and the Python API)."""

from __future__ import annotations

import itertools
import re
from decimal import Decimal

import aiohttp
import pytest

from qbo_emulator.books import BooksError, NotFoundError
from qbo_emulator.state import EmulatorState
from qbo_emulator.testing import RunningEmulator

from .helpers import REALM, admin_post, api_get

OFFSET_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$")


async def test_customer_shape(emu: RunningEmulator, session: aiohttp.ClientSession) -> None:
    status, body = await admin_post(
        session,
        emu,
        f"/realms/{REALM}/customers",
        {
            "DisplayName": "Amy's Bird Sanctuary",
            "CompanyName": "Amy's Bird Sanctuary",
            "GivenName": "Amy",
            "FamilyName": "Lauterbach",
            "PrimaryEmailAddr": {"Address": "birds@example.test"},
        },
    )
    assert status == 201
    c = body["Customer"]
    assert c["Id"] == "1"
    assert c["SyncToken"] == "0"
    assert c["Active"] is True
    assert c["Balance"] == 0
    assert c["CurrencyRef"] == {"value": "USD", "name": "United States Dollar"}
    assert c["PrimaryEmailAddr"] == {"Address": "birds@example.test"}
    assert c["domain"] == "QBO" and c["sparse"] is False
    assert OFFSET_TIME.match(c["MetaData"]["CreateTime"])
    assert c["MetaData"]["CreateTime"] == c["MetaData"]["LastUpdatedTime"]


async def test_invoice_shape_with_computed_line(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    emu.state.create_customer(REALM, {"DisplayName": "Acme"})
    status, body = await admin_post(
        session,
        emu,
        f"/realms/{REALM}/invoices",
        {"CustomerRef": {"value": "1"}, "TotalAmt": "250.00", "DueDate": "2026-12-31"},
    )
    assert status == 201
    inv = body["Invoice"]
    assert inv["Id"] == "1" and inv["SyncToken"] == "0"
    assert inv["DocNumber"] == "1001"
    assert inv["CustomerRef"] == {"value": "1", "name": "Acme"}
    assert inv["DueDate"] == "2026-12-31"
    assert re.match(r"^\d{4}-\d\d-\d\d$", inv["TxnDate"])
    assert inv["TotalAmt"] == inv["Balance"] == Decimal("250.00")
    sales, subtotal = inv["Line"]
    assert sales == {
        "Id": "1",
        "LineNum": 1,
        "Description": "Services",
        "Amount": Decimal("250.00"),
        "DetailType": "SalesItemLineDetail",
        "SalesItemLineDetail": {
            "ItemRef": {"value": "1", "name": "Services"},
            "Qty": 1,
            "UnitPrice": Decimal("250.00"),
            "TaxCodeRef": {"value": "NON"},
        },
    }
    assert subtotal == {
        "Amount": Decimal("250.00"),
        "DetailType": "SubTotalLineDetail",
        "SubTotalLineDetail": {},
    }
    assert inv["EmailStatus"] == "NotSet" and inv["PrintStatus"] == "NotSet"
    assert OFFSET_TIME.match(inv["MetaData"]["LastUpdatedTime"])
    # The customer's balance follows its open invoices.
    status, read, _ = await api_get(session, emu, "customer/1", token)
    assert read["Customer"]["Balance"] == Decimal("250.00")


async def test_invoice_total_from_lines(emu: RunningEmulator) -> None:
    emu.state.create_customer(REALM, {"DisplayName": "Acme"})
    inv = emu.state.create_invoice(
        REALM,
        {
            "CustomerRef": {"value": "1"},
            "Line": [
                {"Amount": "10.10", "Description": "a"},
                {"SalesItemLineDetail": {"Qty": 3, "UnitPrice": "0.10"}},
            ],
        },
    )
    assert inv["TotalAmt"] == Decimal("10.40")
    assert [line.get("LineNum") for line in inv["Line"]] == [1, 2, None]
    assert inv["Line"][-1]["Amount"] == Decimal("10.40")


async def test_void_shape(emu: RunningEmulator, session: aiohttp.ClientSession, token: str) -> None:
    emu.state.create_customer(REALM, {"DisplayName": "Acme"})
    created = emu.state.create_invoice(REALM, {"CustomerRef": {"value": "1"}, "TotalAmt": "99.99"})
    status, body = await admin_post(session, emu, f"/realms/{REALM}/invoices/1/void")
    assert status == 200
    status, read, _ = await api_get(session, emu, "invoice/1", token)
    voided = read["Invoice"]
    assert voided["Id"] == created["Id"]
    assert voided["SyncToken"] == "1"
    assert voided["TotalAmt"] == 0 and voided["Balance"] == 0
    assert all(line["Amount"] == 0 for line in voided["Line"])
    assert voided["PrivateNote"] == "Voided"
    assert voided["DocNumber"] == created["DocNumber"]
    assert body["Invoice"] == voided
    customer = emu.state.get_customer(REALM, "1")
    assert customer["Balance"] == 0


async def test_update_bumps_sync_token_and_time(emu: RunningEmulator) -> None:
    state = emu.state
    state.create_customer(REALM, {"DisplayName": "Acme"})
    created = state.create_invoice(REALM, {"CustomerRef": {"value": "1"}, "TotalAmt": 100})
    now = state.clock()
    state.clock = lambda: now + 5
    updated = state.update_invoice(REALM, "1", {"Balance": "40", "SyncToken": "0"})
    assert updated["SyncToken"] == "1"
    assert updated["Balance"] == Decimal("40")
    assert updated["TotalAmt"] == Decimal("100")
    assert updated["MetaData"]["CreateTime"] == created["MetaData"]["CreateTime"]
    assert updated["MetaData"]["LastUpdatedTime"] > created["MetaData"]["LastUpdatedTime"]
    assert state.get_customer(REALM, "1")["Balance"] == Decimal("40")
    with pytest.raises(BooksError) as info:
        state.update_invoice(REALM, "1", {"Balance": "0", "SyncToken": "0"})
    assert info.value.code == "5010"


async def test_changes_in_the_same_instant_still_order(emu: RunningEmulator) -> None:
    state = emu.state
    frozen = state.clock()
    state.clock = lambda: frozen
    state.create_customer(REALM, {"DisplayName": "Acme"})
    state.create_invoice(REALM, {"CustomerRef": {"value": "1"}, "TotalAmt": 1})
    state.update_invoice(REALM, "1", {"TotalAmt": 2})
    log = state.realm(REALM).change_log
    assert [c.seq for c in log] == sorted(c.seq for c in log)
    assert all(a.ts < b.ts for a, b in itertools.pairwise(log))
    stored = state.realm(REALM).get_stored("Invoice", "1")
    assert stored.updated_ts > stored.created_ts


async def test_total_change_keeps_amount_paid(emu: RunningEmulator) -> None:
    state = emu.state
    state.create_customer(REALM, {"DisplayName": "Acme"})
    state.create_invoice(REALM, {"CustomerRef": {"value": "1"}, "TotalAmt": 100, "Balance": 70})
    updated = state.update_invoice(REALM, "1", {"TotalAmt": "150"})
    assert updated["Balance"] == Decimal("120")
    assert updated["Line"][0]["Amount"] == Decimal("150")


async def test_delete_hides_invoice(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    emu.state.create_customer(REALM, {"DisplayName": "Acme"})
    emu.state.create_invoice(REALM, {"CustomerRef": {"value": "1"}, "TotalAmt": 5})
    async with session.delete(emu.url(f"/_emulator/realms/{REALM}/invoices/1")) as response:
        assert response.status == 200
    status, body, _ = await api_get(session, emu, "invoice/1", token)
    assert status == 400
    assert body["Fault"]["Error"][0]["code"] == "610"
    status, body, _ = await api_get(
        session, emu, "query", token, query="select count(*) from Invoice"
    )
    assert body["QueryResponse"]["totalCount"] == 0
    async with session.delete(emu.url(f"/_emulator/realms/{REALM}/invoices/1")) as response:
        assert response.status == 404


async def test_customer_rename_updates_invoice_refs(emu: RunningEmulator) -> None:
    state = emu.state
    state.create_customer(REALM, {"DisplayName": "Old Name"})
    state.create_invoice(REALM, {"CustomerRef": {"value": "1"}, "TotalAmt": 5})
    renamed = state.update_customer(REALM, "1", {"DisplayName": "New Name"})
    assert renamed["SyncToken"] == "1"
    assert state.get_invoice(REALM, "1")["CustomerRef"] == {"value": "1", "name": "New Name"}
    assert state.get_invoice(REALM, "1")["SyncToken"] == "0"


async def test_admin_errors_are_intuit_faults(
    emu: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    await admin_post(session, emu, f"/realms/{REALM}/customers", {"DisplayName": "Dup"})
    status, body = await admin_post(
        session, emu, f"/realms/{REALM}/customers", {"DisplayName": "dup"}
    )
    assert status == 400
    assert body["Fault"]["Error"][0]["code"] == "6240"
    status, body = await admin_post(
        session, emu, f"/realms/{REALM}/invoices", {"CustomerRef": {"value": "42"}, "TotalAmt": 1}
    )
    assert status == 400
    assert body["Fault"]["Error"][0]["code"] == "2500"
    status, body = await admin_post(session, emu, f"/realms/{REALM}/invoices/7", {"TotalAmt": 1})
    assert status == 404
    assert body["Fault"]["Error"][0]["code"] == "610"
    async with session.post(
        emu.url(f"/_emulator/realms/{REALM}/customers"), data=b"{not json"
    ) as response:
        assert response.status == 400


async def test_admin_update_customer_and_accepts_wrapped_body(
    emu: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    await admin_post(session, emu, f"/realms/{REALM}/customers", {"Customer": {"DisplayName": "A"}})
    status, body = await admin_post(
        session, emu, f"/realms/{REALM}/customers/1", {"Active": False, "CompanyName": "A Inc"}
    )
    assert status == 200
    assert body["Customer"]["Active"] is False
    assert body["Customer"]["CompanyName"] == "A Inc"
    assert body["Customer"]["SyncToken"] == "1"
    status, body = await admin_post(
        session, emu, f"/realms/{REALM}/invoices", {"CustomerRef": "1", "TotalAmt": 3}
    )
    assert status == 201
    status, body = await admin_post(
        session, emu, f"/realms/{REALM}/invoices/1", {"Invoice": {"PrivateNote": "hi"}}
    )
    assert status == 200 and body["Invoice"]["PrivateNote"] == "hi"


def test_python_api_without_a_server() -> None:
    state = EmulatorState()
    state.create_customer(REALM, {"DisplayName": "Solo"})
    invoice = state.create_invoice(REALM, {"CustomerRef": {"value": "1"}, "TotalAmt": "1.10"})
    invoice["TotalAmt"] = Decimal("999")  # callers get copies, never the stored dict
    assert state.get_invoice(REALM, "1")["TotalAmt"] == Decimal("1.10")
    state.delete_invoice(REALM, "1")
    with pytest.raises(NotFoundError):
        state.get_invoice(REALM, "1")
    assert state.realm(REALM).is_deleted("Invoice", "1")


def test_reset_forgets_everything() -> None:
    state = EmulatorState()
    state.seed(REALM, 2, 2)
    state.issue_tokens(REALM)
    state.set_faults([{"kind": "500"}])
    state.reset()
    assert state.realms == {}
    assert state.tokens.access_tokens == {}
    assert state.faults.rules == []
