"""The whole system, each part in its own process as `make run` starts them: the QBO emulator,
the sync service (OAuth, mapping, command consumer) and the api (projector, HTTP, dashboard),
over real HTTP, Kafka and MongoDB, with a real browser at the end.

connect a company through OAuth -> map a customer -> refresh -> exact totals in the api;
then change an invoice in QuickBooks (the emulator), click Refresh in the dashboard, and see
the new balance.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import httpx
from playwright.async_api import Page, expect

from bench.stack import Stack
from services.common import jsoncodec
from services.sync.access import DEV_SYNC_TOKEN

REALM = "9130350000000001"  # the emulator's default company
CUSTOMER = "cust-e2e"
API_AUTH = {"Authorization": "Bearer dev-token"}
SYNC_AUTH = {"Authorization": f"Bearer {DEV_SYNC_TOKEN}"}


def body_of(response: httpx.Response) -> Any:
    return jsoncodec.loads(response.content)


async def emulator_post(stack: Stack, http: httpx.AsyncClient, path: str, fields: Any) -> Any:
    response = await http.post(
        f"{stack.emulator_url}/_emulator/realms/{REALM}{path}",
        content=jsoncodec.dumpb(fields),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code in (200, 201), response.text
    return body_of(response)


async def connect_company(stack: Stack, http: httpx.AsyncClient, user: str) -> None:
    """The app asks sync for a connect link for `user`; the browser follows it: sync -> Intuit
    (emulator) consent -> sync callback."""
    link = await http.post(
        f"{stack.sync_url}/connect-links", json={"user_id": user}, headers=SYNC_AUTH
    )
    assert link.status_code == 201, link.text + stack.logs_tail()
    start = await http.get(link.json()["connect_url"])
    assert start.status_code == 302, start.text + stack.logs_tail()
    consent = await http.get(start.headers["location"])
    assert consent.status_code == 302, consent.text
    callback = await http.get(consent.headers["location"])
    assert callback.status_code == 200, callback.text + stack.logs_tail()
    connected = body_of(callback)
    assert connected["connected"] is True
    assert connected["connection"]["realm_id"] == REALM
    assert "token" not in "".join(k for k in connected["connection"] if not k.endswith("_at"))


async def refresh_and_wait(stack: Stack, http: httpx.AsyncClient) -> dict[str, Any]:
    accepted = await http.post(
        f"{stack.api_url}/api/customers/{CUSTOMER}/refreshInvoices", headers=API_AUTH
    )
    assert accepted.status_code == 202, accepted.text
    status_url = stack.api_url + accepted.json()["status_url"]
    async with asyncio.timeout(60):
        while True:
            command: dict[str, Any] = (await http.get(status_url, headers=API_AUTH)).json()
            if command["status"] in ("succeeded", "failed", "needs_reauth"):
                break
            await asyncio.sleep(0.25)
    assert command["status"] == "succeeded", f"{command}\n{stack.logs_tail()}"
    return command


async def invoices_when(
    stack: Stack, http: httpx.AsyncClient, ready: Any, within_s: float = 30
) -> tuple[dict[str, Any], str]:
    """The invoice listing once `ready(body)` holds (the projector follows the events)."""
    async with asyncio.timeout(within_s):
        while True:
            response = await http.get(
                f"{stack.api_url}/api/customers/{CUSTOMER}/invoices", headers=API_AUTH
            )
            assert response.status_code == 200, response.text
            body = body_of(response)
            if ready(body):
                return body, response.text
            await asyncio.sleep(0.25)


async def test_connect_map_refresh_and_watch_a_change_arrive_in_the_dashboard(
    stack: Stack, page: Page
) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        customer = (
            await emulator_post(stack, http, "/customers", {"DisplayName": "Blue Heron Cafe"})
        )["Customer"]
        first = (
            await emulator_post(
                stack,
                http,
                "/invoices",
                {
                    "CustomerRef": {"value": customer["Id"]},
                    "TotalAmt": Decimal("0.10"),
                    "DocNumber": "E-1",
                },
            )
        )["Invoice"]
        await emulator_post(
            stack,
            http,
            "/invoices",
            {
                "CustomerRef": {"value": customer["Id"]},
                "TotalAmt": Decimal("0.20"),
                "DocNumber": "E-2",
            },
        )

        await connect_company(stack, http, user="alice")

        mapped = await http.post(
            f"{stack.sync_url}/customers/{CUSTOMER}/mapping",
            json={"realm_id": REALM, "qbo_customer_id": customer["Id"]},
            headers=SYNC_AUTH,
        )
        assert mapped.status_code == 200, mapped.text + stack.logs_tail()

        command = await refresh_and_wait(stack, http)
        assert command["result"]["fetched"] >= 2

        body, text = await invoices_when(stack, http, lambda b: b["totals"]["count"] == 2)
        assert body["totals"]["total_amt"] == Decimal("0.30")
        assert body["totals"]["balance"] == Decimal("0.30")
        assert '"total_amt":0.30' in text
        assert sorted(i["doc_number"] for i in body["invoices"]) == ["E-1", "E-2"]

        status = (
            await http.get(f"{stack.api_url}/api/customers/{CUSTOMER}", headers=API_AUTH)
        ).json()
        assert status["connection"]["status"] == "active"
        assert status["customer"]["last_synced_at"] is not None

        # The customer pays half of E-1 in QuickBooks.
        await emulator_post(
            stack,
            http,
            f"/invoices/{first['Id']}",
            {"Balance": Decimal("0.05"), "SyncToken": first["SyncToken"]},
        )

    await page.goto(f"{stack.api_url}/?customer={CUSTOMER}#token=dev-token")
    await expect(page.get_by_test_id("total-balance")).to_have_text("$0.30")
    await expect(page.get_by_role("heading", name="Blue Heron Cafe")).to_be_visible()
    await page.get_by_test_id("refresh").click()
    await expect(page.get_by_test_id("total-balance")).to_have_text("$0.25", timeout=60_000)
    await expect(page.get_by_test_id("total-amt")).to_have_text("$0.30")
    row = page.locator("[data-testid=invoice-row]", has_text="E-1")
    await expect(row.get_by_test_id("invoice-balance")).to_have_text("$0.05")
    await expect(page.get_by_test_id("refresh-status")).to_contain_text("Updated")
