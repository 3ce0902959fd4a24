"""The dashboard in a real browser, against the real api, projector, Kafka and MongoDB.

The sync service is played by the test: it answers the RefreshInvoices command the dashboard
publishes the way the sync worker does (status record, then an InvoiceUpdated event), so the
page's whole loop - POST, poll the command, reload once the event is projected - is exercised.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from playwright.async_api import Page, expect
from pymongo.asynchronous.database import AsyncDatabase
from yarl import URL

from services.common.connect_links import ConnectLinks, load_connect_link_secret
from services.common.kafka import make_consumer
from services.common.messages import RefreshInvoices, parse_command
from services.common.mongo import Document
from services.common.schemas import INVOICE_UPDATED, default_schemas
from services.common.settings import Settings
from tests.api_support import (
    RunningApi,
    invoice_event,
    produce_events,
    running_api,
    seed_connection,
    seed_mapping,
)
from tests.support import eventually


@pytest.fixture
async def api(settings: Settings, mongo_db: AsyncDatabase[Document]) -> AsyncIterator[RunningApi]:
    await seed_mapping(mongo_db, "cust-42", last_synced_at=datetime.now(UTC))
    await seed_connection(mongo_db)
    today = datetime.now(UTC).date()
    await produce_events(
        settings,
        invoice_event("101", 1, total_amt="0.10", doc_number="1001", due_date="2020-01-15"),
        invoice_event(
            "102", 1, total_amt="0.20", doc_number="1002", due_date=f"{today.year + 1}-06-30"
        ),
        invoice_event("103", 1, total_amt="1250.00", balance=0, doc_number="1003"),
        invoice_event("104", 2, total_amt=0, balance=0, status="voided", doc_number="1004"),
        invoice_event("105", 3, total_amt="75.50", deleted=True, doc_number="1005"),
    )
    async with running_api(settings) as running:
        await eventually(lambda: mongo_db["read_invoices"].count_documents({}), lambda n: n == 5)
        yield running


class FakeSyncWorker:
    """Consumes RefreshInvoices like the sync worker and reports what it did."""

    def __init__(self, settings: Settings, db: AsyncDatabase[Document]) -> None:
        self.settings = settings
        self.db = db
        self.handled: list[RefreshInvoices] = []
        self.new_balance = Decimal("0.05")
        # Set by the test once the page showed the running command: QBO "takes a moment".
        self.proceed = asyncio.Event()

    async def run(self) -> None:
        consumer = make_consumer(
            self.settings.kafka_bootstrap_servers,
            self.settings.sync_consumer_group,
            self.settings.commands_topic,
        )
        await consumer.start()
        try:
            async for record in consumer:
                command = parse_command(record.value)
                assert isinstance(command, RefreshInvoices)
                await self.handle(command)
                await consumer.commit()
        finally:
            await consumer.stop()

    async def handle(self, command: RefreshInvoices) -> None:
        commands = self.db["commands"]
        now = datetime.now(UTC)
        await commands.update_one(
            {"_id": command.command_id},
            {"$set": {"status": "running", "started_at": now, "attempts": 1}},
            upsert=True,
        )
        await self.proceed.wait()
        # Invoice 101 was partly paid in QuickBooks: a new version, published after the write.
        await produce_events(
            self.settings,
            invoice_event(
                "101",
                2,
                total_amt="0.10",
                balance=self.new_balance,
                doc_number="1001",
                due_date="2020-01-15",
            ),
        )
        await commands.update_one(
            {"_id": command.command_id},
            {
                "$set": {
                    "status": "succeeded",
                    "finished_at": datetime.now(UTC),
                    "result": {"fetched": 5, "stored": 1, "events": 1},
                }
            },
        )
        await self.db["customer_mappings"].update_one(
            {"_id": command.local_customer_id},
            {
                "$set": {
                    "last_synced_at": datetime.now(UTC),
                    "last_sync_command_id": command.command_id,
                }
            },
        )
        self.handled.append(command)


@pytest.fixture
async def sync_worker(
    settings: Settings, mongo_db: AsyncDatabase[Document]
) -> AsyncIterator[FakeSyncWorker]:
    worker = FakeSyncWorker(settings, mongo_db)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_dashboard_shows_exact_totals_and_refreshes_to_the_new_balance(
    page: Page, api: RunningApi, sync_worker: FakeSyncWorker, tmp_path: Path
) -> None:
    await page.goto(f"{api.base_url}/?customer=cust-42#token=dev-token")

    card = page.get_by_test_id("invoice-card")
    await expect(card).to_be_visible()
    await expect(page.get_by_test_id("total-balance")).to_have_text("$0.30")
    await expect(page.get_by_test_id("total-overdue")).to_have_text("$0.10")
    await expect(page.get_by_test_id("total-amt")).to_have_text("$1,250.30")
    await expect(page.get_by_test_id("total-count")).to_have_text("5")
    await expect(page.get_by_test_id("connection-status")).to_have_text("Connected")
    await expect(page.get_by_role("heading", name="Amy's Bird Sanctuary")).to_be_visible()
    # The token left the address bar and lives in the tab's session storage.
    assert "token" not in page.url
    assert await page.evaluate("sessionStorage.getItem('qbo-sync.api-token')") == "dev-token"

    rows = page.locator("[data-testid=invoice-row]")
    await expect(rows).to_have_count(5)
    statuses = {
        await row.locator("td.doc").inner_text(): await row.get_by_test_id(
            "invoice-status"
        ).inner_text()
        for row in await rows.all()
    }
    assert statuses == {
        "#1001": "Overdue",
        "#1002": "Open",
        "#1003": "Paid",
        "#1004": "Voided",
        "#1005": "Deleted",
    }
    row_1001 = page.locator("[data-testid=invoice-row][data-invoice-id='101']")
    await expect(row_1001.get_by_test_id("invoice-balance")).to_have_text("$0.10")
    await expect(row_1001).to_contain_text("days overdue")

    await page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

    await page.get_by_test_id("refresh").click()
    refresh_status = page.get_by_test_id("refresh-status")
    await expect(refresh_status).to_have_text("Fetching from QuickBooks…", timeout=30_000)
    await expect(page.get_by_test_id("refresh")).to_be_disabled()
    sync_worker.proceed.set()
    await expect(page.get_by_test_id("total-balance")).to_have_text("$0.25", timeout=30_000)
    await expect(row_1001.get_by_test_id("invoice-balance")).to_have_text("$0.05")
    # 0.05 of 0.10 still owed: partially paid, and still overdue.
    await expect(row_1001.get_by_test_id("invoice-partially-paid")).to_have_text("Partially paid")
    await expect(row_1001.get_by_test_id("invoice-status")).to_have_text("Overdue")
    await expect(refresh_status).to_contain_text("Updated")
    await expect(page.get_by_test_id("refresh")).to_be_enabled()
    assert len(sync_worker.handled) == 1
    assert sync_worker.handled[0].local_customer_id == "cust-42"
    assert sync_worker.handled[0].issued_by == "api"
    await page.screenshot(path=str(tmp_path / "dashboard-after-refresh.png"), full_page=True)


async def test_dashboard_filters_by_status(page: Page, api: RunningApi) -> None:
    await page.goto(f"{api.base_url}/?customer=cust-42#token=dev-token")
    await expect(page.locator("[data-testid=invoice-row]")).to_have_count(5)
    await page.get_by_test_id("status-filter").select_option("overdue")
    await expect(page.locator("[data-testid=invoice-row]")).to_have_count(1)
    await expect(page.get_by_test_id("total-balance")).to_have_text("$0.10")
    await page.get_by_test_id("status-filter").select_option("paid")
    await expect(page.locator("[data-testid=invoice-row] td.doc")).to_have_text(["#1003"])


async def test_dashboard_shows_and_filters_partially_paid_invoices_with_home_amounts(
    page: Page, api: RunningApi, settings: Settings, mongo_db: AsyncDatabase[Document]
) -> None:
    event = invoice_event(
        "106", 1, total_amt="100.00", balance="40.00", doc_number="1006", due_date="2099-01-31"
    )
    # As from a multicurrency company whose home currency is not the invoice's.
    event["data"] |= {
        "exchange_rate": Decimal("1.3512"),
        "home_total_amt": Decimal("135.12"),
        "home_balance": Decimal("54.05"),
    }
    default_schemas().validate(INVOICE_UPDATED, event)
    await produce_events(settings, event)
    await eventually(lambda: mongo_db["read_invoices"].count_documents({}), lambda n: n == 6)

    await page.goto(f"{api.base_url}/?customer=cust-42#token=dev-token")
    rows = page.locator("[data-testid=invoice-row]")
    await expect(rows).to_have_count(6)
    row_1006 = page.locator("[data-testid=invoice-row][data-invoice-id='106']")
    await expect(row_1006.get_by_test_id("invoice-status")).to_have_text("Open")
    await expect(row_1006.get_by_test_id("invoice-partially-paid")).to_have_text("Partially paid")
    await expect(row_1006.get_by_test_id("invoice-home-balance")).to_have_text("home 54.05")
    # Nothing else is partially paid: no pill, no home amounts.
    await expect(page.get_by_test_id("invoice-partially-paid")).to_have_count(1)
    await expect(page.get_by_test_id("invoice-home-balance")).to_have_count(1)

    await page.get_by_test_id("status-filter").select_option("partially_paid")
    await expect(page.locator("[data-testid=invoice-row] td.doc")).to_have_text(["#1006"])
    await expect(page.get_by_test_id("total-balance")).to_have_text("$40.00")
    await page.get_by_test_id("status-filter").select_option("open")
    await expect(rows).to_have_count(3)  # open keeps its meaning: 1001, 1002 and 1006


async def test_dashboard_offers_a_reconnect_link_when_quickbooks_needs_reauth(
    page: Page,
    api: RunningApi,
    mongo_db: AsyncDatabase[Document],
    settings: Settings,
    tmp_path: Path,
) -> None:
    await seed_connection(
        mongo_db, status="needs_reauth", reauth_reason="invalid_grant", user_id="bob"
    )
    await page.goto(f"{api.base_url}/?customer=cust-42#token=dev-token")
    await expect(page.get_by_test_id("connection-status")).to_have_text("Needs reconnect")
    link = page.get_by_test_id("reconnect-link")
    await expect(link).to_be_visible()
    href = URL(str(await link.get_attribute("href")))
    assert (href.host, href.port, href.path) == ("127.0.0.1", 8000, "/oauth/connect")
    # Signed for the connection's own user, so the sync service starts the connect for bob.
    links = ConnectLinks(load_connect_link_secret(settings), lambda: datetime.now(UTC))
    assert links.verify(href.query["link"]) == "bob"
    await expect(page.get_by_test_id("reauth")).to_contain_text("invalid_grant")
    await page.screenshot(path=str(tmp_path / "dashboard-needs-reauth.png"), full_page=True)


async def test_dashboard_asks_for_a_token_and_explains_unknown_customers(
    page: Page, api: RunningApi
) -> None:
    await page.goto(f"{api.base_url}/?customer=cust-42#token=wrong-token")
    await expect(page.locator("#notice-text")).to_contain_text("not accepted")
    await expect(page.get_by_test_id("invoice-card")).to_be_hidden()
    await page.fill("#token-input", "dev-token")
    await page.click("#token-form button")
    await expect(page.get_by_test_id("total-balance")).to_have_text("$0.30")

    await page.fill("#customer-input", "nobody")
    await page.click("#customer-form button")
    await expect(page.locator("#notice-text")).to_contain_text(
        "not linked to a QuickBooks customer"
    )
    assert page.url.endswith("/?customer=nobody")


async def test_dashboard_marks_a_customer_merged_away_in_quickbooks(
    page: Page, api: RunningApi, mongo_db: AsyncDatabase[Document]
) -> None:
    await mongo_db["customer_mappings"].update_one(
        {"_id": "cust-42"}, {"$set": {"active": False, "merged_from": "57"}}
    )
    await page.goto(f"{api.base_url}/?customer=cust-42#token=dev-token")
    await expect(page.get_by_test_id("customer-inactive")).to_have_text(
        "Inactive in QuickBooks (merged)"
    )
    await mongo_db["customer_mappings"].update_one({"_id": "cust-42"}, {"$set": {"active": True}})
    await page.reload()
    await expect(page.get_by_test_id("customer-inactive")).to_be_hidden()
