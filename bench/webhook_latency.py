"""Figure 4: from a change in QuickBooks to the new figure in the api.

One invoice at a time: the emulator changes its balance (which queues a signed webhook to the
sync service), then the api's listing is polled until it shows the new balance. The path is the
whole system: emulator webhook batching (50 ms, as Intuit batches), the sync receiver, the
commands topic, a worker's QBO read and write, the events topic, the projector, the api query.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from decimal import Decimal

from pymongo.asynchronous.database import AsyncDatabase

from bench.api_client import ApiClient
from bench.emulator_admin import EmulatorAdmin
from services.common.mongo import Document
from services.sync.store import FINISHED


async def webhook_latencies(
    admin: EmulatorAdmin,
    api: ApiClient,
    sync_url: str,
    realm_id: str,
    local_customer_id: str,
    invoice_ids: Sequence[str],
    changes: int,
    within_s: float = 30.0,
    poll_s: float = 0.005,
    first: int = 0,
) -> list[float]:
    """From a change in QuickBooks until the api shows it, for changes `first`, `first + 1`, ...
    (the number makes each change's balance unique, so no change is taken for another)."""
    await admin.configure_webhooks(
        url=f"{sync_url}/webhooks/quickbooks", enabled=True, drop_next=0, drop_probability=0.0
    )
    samples: list[float] = []
    for i in range(first, first + changes):
        invoice_id = invoice_ids[i % len(invoice_ids)]
        balance = Decimal(1000 + i) + Decimal("0.37")  # unique per change: no false positive
        began = time.perf_counter()
        await admin.update_invoice(realm_id, invoice_id, {"Balance": balance})
        while True:
            body = await api.invoices_page(local_customer_id)
            shown = {inv["invoice_id"]: inv["balance"] for inv in body["invoices"]}
            if shown.get(invoice_id) == balance:
                break
            if time.perf_counter() - began > within_s:
                raise TimeoutError(f"invoice {invoice_id} did not show {balance} in {within_s} s")
            await asyncio.sleep(poll_s)
        samples.append(time.perf_counter() - began)
    return samples


async def _succeeded_sync_changes(db: AsyncDatabase[Document]) -> int:
    return await db["commands"].count_documents({"type": "SyncChanges", "status": "succeeded"})


async def write_latencies(
    admin: EmulatorAdmin,
    db: AsyncDatabase[Document],
    realm_id: str,
    invoice_ids: Sequence[str],
    changes: int,
    within_s: float = 300.0,
    first: int = 0,
) -> list[float]:
    """From a change in QuickBooks until the worker has stored it and its event is acked.

    Used with a large write model (figure 4b), where it is the worker's database work, not the
    api, that decides the latency; it needs no api, only the command log.
    """
    samples: list[float] = []
    for i in range(first, first + changes):
        invoice_id = invoice_ids[i % len(invoice_ids)]
        # A change shown in the api a moment ago may not have its command finished yet (the
        # event goes out first): counted now, it would be taken for this change's.
        settled_by = time.perf_counter() + within_s
        while await db["commands"].count_documents(
            {"type": "SyncChanges", "status": {"$nin": FINISHED}}
        ):
            if time.perf_counter() > settled_by:
                raise TimeoutError(f"webhook commands still unfinished after {within_s} s")
            await asyncio.sleep(0.05)
        done = await _succeeded_sync_changes(db)
        began = time.perf_counter()
        await admin.update_invoice(
            realm_id, invoice_id, {"Balance": Decimal(2000 + i) + Decimal("0.41")}
        )
        while await _succeeded_sync_changes(db) <= done:
            if time.perf_counter() - began > within_s:
                raise TimeoutError(
                    f"the change of invoice {invoice_id} was not stored in {within_s} s"
                )
            await asyncio.sleep(0.05)
        samples.append(time.perf_counter() - began)
    return samples
