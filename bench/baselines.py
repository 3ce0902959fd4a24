"""Figures 2 and 3: what the same data costs without qbo-sync's machinery.

* The naive baseline is the loop anyone would write first: one blocking HTTP request per page,
  then one `update_one(upsert=True)` per invoice, nothing in flight concurrently, no events.
  It can be time-boxed: on FerretDB v1 every `update_one` scans the collection, so its rate
  falls as the collection grows and 100,000 upserts would take hours.
* The raw insert is the database's own ceiling for these documents: `insert_many` of the very
  documents the sync stored, 1000 at a time (the page size), timing only the inserts; for
  figure 8, one stream per company, as many at once as the worker runs.

Both are blocking code (plain pymongo, urllib) and run in a worker thread of the orchestrator.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pymongo

PAGE = 1000


@dataclass(frozen=True)
class Throughput:
    count: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("nan")


def _micros(value: Any) -> int:
    return int(Decimal(str(value)) * 1_000_000)


def naive_document(realm_id: str, invoice: dict[str, Any]) -> dict[str, Any]:
    """About what qbo-sync stores per invoice, built the obvious way."""
    balance = _micros(invoice.get("Balance", 0))
    voided = "voided" in str(invoice.get("PrivateNote") or "").lower()
    return {
        "realm_id": realm_id,
        "invoice_id": invoice["Id"],
        "qbo_customer_id": (invoice.get("CustomerRef") or {}).get("value"),
        "doc_number": invoice.get("DocNumber"),
        "txn_date": invoice.get("TxnDate"),
        "due_date": invoice.get("DueDate"),
        "currency": (invoice.get("CurrencyRef") or {}).get("value"),
        "total_amt_micros": _micros(invoice.get("TotalAmt", 0)),
        "balance_micros": balance,
        "status": "voided" if voided else "paid" if balance == 0 else "open",
        "sync_token": int(invoice.get("SyncToken", 0)),
        "last_updated_text": (invoice.get("MetaData") or {}).get("LastUpdatedTime"),
        "raw_json": json.dumps(invoice, default=str),
    }


def naive_sync(
    emulator_url: str,
    realm_id: str,
    qbo_customer_id: str,
    access_token: str,
    mongodb_uri: str,
    database: str,
    limit: int | None,
    max_seconds: float | None,
) -> Throughput:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        mongodb_uri, retryWrites=False
    )
    collection = client[database]["baseline_invoices"]
    stored = 0
    start = 1
    began = time.perf_counter()
    try:
        while (limit is None or stored < limit) and not _over(began, max_seconds):
            # A QBO query (the emulator's), not SQL.
            statement = f"SELECT * FROM Invoice WHERE CustomerRef = '{qbo_customer_id}'"  # noqa: S608
            statement += f" ORDERBY Id STARTPOSITION {start} MAXRESULTS {PAGE}"
            query = urllib.parse.urlencode({"query": statement, "minorversion": "75"})
            request = urllib.request.Request(  # noqa: S310 - the emulator's loopback http URL
                f"{emulator_url}/v3/company/{realm_id}/query?{query}",
                headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                body = response.read()
            rows = json.loads(body, parse_float=Decimal)["QueryResponse"].get("Invoice", [])
            for invoice in rows[: None if limit is None else limit - stored]:
                if _over(began, max_seconds):
                    break
                collection.update_one(
                    {"_id": f"{realm_id}:{invoice['Id']}"},
                    {"$set": naive_document(realm_id, invoice)},
                    upsert=True,
                )
                stored += 1
            if len(rows) < PAGE:
                break
            start += PAGE
        return Throughput(stored, time.perf_counter() - began)
    finally:
        client.close()


def _over(began: float, max_seconds: float | None) -> bool:
    return max_seconds is not None and time.perf_counter() - began >= max_seconds


def raw_insert(
    mongodb_uri: str, database: str, realm_id: str, qbo_customer_id: str, limit: int | None
) -> Throughput:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        mongodb_uri, retryWrites=False
    )
    db = client[database]
    target = db["raw_insert_invoices"]
    inserted = 0
    timed = 0.0
    try:
        cursor = (
            db["invoices"]
            .find({"realm_id": realm_id, "qbo_customer_id": qbo_customer_id})
            .batch_size(PAGE)
        )
        if limit is not None:
            cursor = cursor.limit(limit)
        batch: list[dict[str, Any]] = []
        for doc in cursor:
            batch.append(doc)
            if len(batch) == PAGE:
                timed += _insert(target, batch)
                inserted += len(batch)
                batch = []
        if batch:
            timed += _insert(target, batch)
            inserted += len(batch)
        return Throughput(inserted, timed)
    finally:
        client.close()


def raw_insert_concurrent(
    mongodb_uri: str, database: str, customers: list[tuple[str, str]], streams: int
) -> Throughput:
    """`insert_many` of the invoices stored for `customers` ((realm, QBO customer) pairs) into a
    collection of their own, 1000 a call, one customer per stream and `streams` at once: the
    database's own rate for the writes of that many companies synced together (one stream, as
    figure 3 does, leaves most of a multi-core database idle). The documents are read first
    (one customer at a time, an equality FerretDB pushes down); only the inserts are timed."""
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        mongodb_uri, retryWrites=False, maxPoolSize=max(streams, 1) + 1
    )
    db = client[database]
    target = db["raw_insert_invoices"]
    try:
        docs = [
            list(db["invoices"].find({"realm_id": realm, "qbo_customer_id": customer}))
            for realm, customer in customers
        ]

        def insert_all(batch_of_customer: list[dict[str, Any]]) -> None:
            for start in range(0, len(batch_of_customer), PAGE):
                target.insert_many(batch_of_customer[start : start + PAGE], ordered=False)

        began = time.perf_counter()
        with ThreadPoolExecutor(max_workers=max(streams, 1)) as pool:
            for done in [pool.submit(insert_all, d) for d in docs]:
                done.result()
        return Throughput(sum(len(d) for d in docs), time.perf_counter() - began)
    finally:
        client.close()


def _insert(target: Any, batch: list[dict[str, Any]]) -> float:
    began = time.perf_counter()
    target.insert_many(batch, ordered=False)
    return time.perf_counter() - began
