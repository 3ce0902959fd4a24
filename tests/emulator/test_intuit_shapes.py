"""What Intuit returns, field for field: fault bodies, invoices, payments, CDC pages."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from qbo_emulator import jsonenc
from qbo_emulator.config import EmulatorConfig
from qbo_emulator.testing import RunningEmulator, running_emulator
from qbo_emulator.timeutil import format_entity_time

from .helpers import MINOR, REALM, admin_post, api_get, bearer

NS = "{http://schema.intuit.com/finance/v3}"


async def raw_query(
    session: aiohttp.ClientSession, emu: RunningEmulator, token: str
) -> tuple[int, str, bytes]:
    async with session.get(
        emu.url(f"/v3/company/{REALM}/query"),
        params={"query": "select * from Invoice", "minorversion": MINOR},
        headers=bearer(token),
    ) as response:
        return response.status, response.content_type, await response.read()


async def test_401_fault_bodies_in_each_of_intuits_shapes(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    emu.state.set_faults([{"kind": "401", "times": 1, "body": "json"}])
    status, content_type, body = await raw_query(session, emu, token)
    doc: Any = jsonenc.loads(body)
    assert (status, content_type) == (401, "application/json")
    assert doc["Fault"]["type"] == "AUTHENTICATION"
    assert doc["Fault"]["Error"][0]["code"] == "3200"
    assert isinstance(doc["time"], str)

    emu.state.set_faults([{"kind": "401", "times": 1, "body": "json_lowercase"}])
    status, content_type, body = await raw_query(session, emu, token)
    doc = jsonenc.loads(body)
    assert (status, content_type) == (401, "application/json")
    assert "Fault" not in doc
    assert doc["fault"]["type"] == "AUTHENTICATION"
    assert doc["fault"]["error"] == [
        {
            "message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
            "detail": "Token expired: injected fault",
            "code": "3200",
            "element": None,
        }
    ]
    assert isinstance(doc["time"], int) and abs(doc["time"] / 1000 - time.time()) < 60
    assert doc["cdcresponse"] == [] and doc["queryResponse"] is None

    emu.state.set_faults([{"kind": "401", "times": 1, "body": "xml"}])
    status, content_type, body = await raw_query(session, emu, token)
    assert (status, content_type) == (401, "application/xml")
    root = ET.fromstring(body)  # noqa: S314 - our own emulator's output
    fault = root.find(f"{NS}Fault")
    assert fault is not None and fault.get("type") == "AuthenticationFault"
    error = fault.find(f"{NS}Error")
    assert error is not None and error.get("code") == "100"
    assert error.findtext(f"{NS}Message") == "General Authentication Error"
    assert "statusCode: 401" in (error.findtext(f"{NS}Detail") or "")


async def test_403_fault_and_the_configured_style_for_real_token_failures(
    session: aiohttp.ClientSession,
) -> None:
    async with running_emulator(config=EmulatorConfig(auth_fault_style="xml")) as emu:
        status, content_type, body = await raw_query(session, emu, "never-issued")
        assert (status, content_type) == (401, "application/xml")
        assert b'<Error code="100">' in body
        token = str(emu.state.issue_tokens(REALM)["access_token"])
        emu.state.set_faults([{"kind": "403", "times": 1, "body": "json_lowercase"}])
        status, _, body = await raw_query(session, emu, token)
        doc = jsonenc.loads(body)
        assert status == 403
        assert doc["fault"]["type"] == "SERVICE"
        assert doc["fault"]["error"][0]["code"] == "3100"


async def test_fault_rules_and_config_refuse_unknown_body_shapes(
    emu: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    status, error = await admin_post(session, emu, "/faults", {"kind": "401", "body": "yaml"})
    assert status == 400 and "yaml" in error["error"]
    with pytest.raises(ValueError, match="auth_fault_style"):
        EmulatorConfig(auth_fault_style="Fault")


async def test_429_is_intuits_xml_with_intuits_detail(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    emu.state.set_faults([{"kind": "429", "times": 1}])
    async with session.get(
        emu.url(f"/v3/company/{REALM}/query"),
        params={"query": "select * from Invoice", "minorversion": MINOR},
        headers=bearer(token),
    ) as response:
        assert response.status == 429
        assert "Retry-After" not in response.headers
        body = await response.read()
    error = ET.fromstring(body).find(f"{NS}Fault/{NS}Error")  # noqa: S314
    assert error is not None and error.get("code") == "3001"
    assert error.findtext(f"{NS}Detail") == "The request limit was reached.  Try again later"


async def test_invoice_carries_the_fields_intuit_returns(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    customer = emu.state.create_customer(
        REALM,
        {
            "DisplayName": "Amy's Bird Sanctuary",
            "PrimaryEmailAddr": {"Address": "birds@example.test"},
            "BillAddr": {"Line1": "4581 Finch St.", "City": "Bayshore", "PostalCode": "94326"},
            "ShipAddr": {"Line1": "4581 Finch St.", "City": "Bayshore", "PostalCode": "94326"},
        },
    )
    assert customer["BillAddr"]["Id"] != customer["ShipAddr"]["Id"]
    created = emu.state.create_invoice(
        REALM, {"CustomerRef": {"value": customer["Id"]}, "TotalAmt": "50.00"}
    )
    status, body, _ = await api_get(session, emu, f"invoice/{created['Id']}", token)
    assert status == 200
    invoice = body["Invoice"]
    for flag in (
        "AllowIPNPayment",
        "AllowOnlinePayment",
        "AllowOnlineCreditCardPayment",
        "AllowOnlineACHPayment",
    ):
        assert invoice[flag] is False
    assert invoice["CustomField"] == [{"DefinitionId": "1", "Name": "Crew #", "Type": "StringType"}]
    assert invoice["BillAddr"] == customer["BillAddr"]
    assert invoice["ShipAddr"] == customer["ShipAddr"]
    assert invoice["BillEmail"] == {"Address": "birds@example.test"}
    assert invoice["SalesTermRef"] == {"value": "3"}
    assert invoice["CurrencyRef"] == {"value": "USD", "name": "United States Dollar"}
    assert invoice["LinkedTxn"] == []
    sales = invoice["Line"][0]
    assert sales["Description"] == "Services"
    assert sales["SalesItemLineDetail"]["TaxCodeRef"] == {"value": "NON"}
    # A home-currency invoice has no exchange rate and no home amounts; none is emailed yet.
    assert not {"ExchangeRate", "HomeTotalAmt", "HomeBalance", "DeliveryInfo"} & set(invoice)

    emailed = emu.state.update_invoice(REALM, created["Id"], {"EmailStatus": "EmailSent"})
    assert emailed["DeliveryInfo"]["DeliveryType"] == "Email"
    assert emailed["DeliveryInfo"]["DeliveryTime"] == emailed["MetaData"]["LastUpdatedTime"]


async def test_foreign_currency_invoice_has_exchange_rate_and_home_amounts(
    emu: RunningEmulator,
) -> None:
    customer = emu.state.create_customer(REALM, {"DisplayName": "Maple Leaf Ltd"})
    invoice = emu.state.create_invoice(
        REALM,
        {
            "CustomerRef": {"value": customer["Id"]},
            "TotalAmt": "100.00",
            "CurrencyRef": {"value": "CAD", "name": "Canadian Dollar"},
            "ExchangeRate": "0.7321",
        },
    )
    assert invoice["ExchangeRate"] == Decimal("0.7321")
    assert invoice["HomeTotalAmt"] == Decimal("73.21")
    assert invoice["HomeBalance"] == Decimal("73.21")
    paid = emu.state.update_invoice(REALM, invoice["Id"], {"Balance": "40.00"})
    assert paid["HomeBalance"] == Decimal("29.28")
    assert paid["HomeTotalAmt"] == Decimal("73.21")


async def test_payment_applies_to_invoices_and_shows_in_reads_queries_and_cdc(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    since = format_entity_time(emu.state.clock() - 1)
    customer = emu.state.create_customer(REALM, {"DisplayName": "Acme"})
    first = emu.state.create_invoice(REALM, {"CustomerRef": {"value": "1"}, "TotalAmt": "71.00"})
    second = emu.state.create_invoice(REALM, {"CustomerRef": {"value": "1"}, "TotalAmt": "20.00"})
    status, body = await admin_post(
        session,
        emu,
        f"/realms/{REALM}/payments",
        {
            "Payment": {
                "CustomerRef": {"value": customer["Id"]},
                "TotalAmt": "65.00",
                "Line": [
                    {"Amount": "55.00", "LinkedTxn": [{"TxnId": first["Id"], "TxnType": "Invoice"}]}
                ],
            }
        },
    )
    assert status == 201, body
    payment = body["Payment"]
    assert payment["UnappliedAmt"] == Decimal("10.00")
    assert payment["DepositToAccountRef"] == {"value": "4"}
    [line] = payment["Line"]
    assert line["LinkedTxn"] == [{"TxnId": first["Id"], "TxnType": "Invoice"}]
    assert [nv["value"] for nv in line["LineEx"]["any"]] == [
        {"Name": "txnId", "Value": first["Id"]},
        {"Name": "txnOpenBalance", "Value": "71.00"},
        {"Name": "txnReferenceNumber", "Value": first["DocNumber"]},
    ]
    paid = emu.state.get_invoice(REALM, first["Id"])
    assert paid["Balance"] == Decimal("16.00") and paid["SyncToken"] == "1"
    assert paid["LinkedTxn"] == [{"TxnId": payment["Id"], "TxnType": "Payment"}]
    assert emu.state.get_customer(REALM, customer["Id"])["Balance"] == Decimal("36.00")

    status, read, _ = await api_get(session, emu, f"payment/{payment['Id']}", token)
    assert status == 200 and read["Payment"]["TotalAmt"] == Decimal("65.00")
    status, queried, _ = await api_get(
        session, emu, "query", token, query="select * from Payment where CustomerRef = '1'"
    )
    assert [p["Id"] for p in queried["QueryResponse"]["Payment"]] == [payment["Id"]]

    status, cdc, _ = await api_get(
        session, emu, "cdc", token, entities="Payment,Invoice,Bill", changedSince=since
    )
    assert status == 200
    payments, invoices, bills = cdc["CDCResponse"][0]["QueryResponse"]
    assert [p["Id"] for p in payments["Payment"]] == [payment["Id"]]
    assert [i["Id"] for i in invoices["Invoice"]] == [second["Id"], first["Id"]]
    assert bills == {}  # Intuit supports Bill in CDC; the emulator keeps no bills
    assert all("totalCount" not in page for page in (payments, invoices))


async def test_cdc_refuses_entities_intuit_does_not_capture(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    since = format_entity_time(emu.state.clock() - 60)
    for entity in ("TaxCode", "TimeActivity", "Gadget"):
        status, body, _ = await api_get(
            session, emu, "cdc", token, entities=f"Invoice,{entity}", changedSince=since
        )
        assert status == 400
        assert body["Fault"]["Error"][0]["element"] == "entities"


async def test_a_customer_address_keeps_its_id_when_edited(emu: RunningEmulator) -> None:
    customer = emu.state.create_customer(
        REALM, {"DisplayName": "Acme", "BillAddr": {"Line1": "1 Old Road"}}
    )
    moved = emu.state.update_customer(
        REALM, customer["Id"], {"BillAddr": {"Line1": "2 New Road", "City": "Bayshore"}}
    )
    assert moved["BillAddr"] == {
        "Id": customer["BillAddr"]["Id"],
        "Line1": "2 New Road",
        "City": "Bayshore",
    }
    # A new invoice copies the customer's current address.
    invoice = emu.state.create_invoice(
        REALM, {"CustomerRef": {"value": customer["Id"]}, "TotalAmt": 1}
    )
    assert invoice["BillAddr"] == moved["BillAddr"]
