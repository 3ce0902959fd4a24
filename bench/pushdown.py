"""What the queries the README's FerretDB table lists cost on MongoDB-protocol servers.

Loads `--docs` invoice-shaped documents (~1.3 KB each, 100 per customer) into a scratch
database of each server, with the services' (realm_id, qbo_customer_id) index, and prints the
median time of: find_one by `_id`, a version-guarded update_one, a customer's invoices, and
`$in` on 50 `_id`s. Runs alternate between the servers, so that a busy machine slows them alike.

To compare FerretDB with and without the GIN indexes the local ferretdb-local keeps, add a second
ferretdb-local started with `-gin-interval 0` on a PostgreSQL database of its own:

    python -m bench.pushdown --uri mongodb://127.0.0.1:27017/ --uri mongodb://127.0.0.1:27018/
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from pymongo import MongoClient
from pymongo.collection import Collection

REALM = "9130350000000001"
Query = Callable[[Collection[dict[str, Any]], int], object]


def invoice(n: int) -> dict[str, Any]:
    return {
        "_id": f"{REALM}:{n}",
        "realm_id": REALM,
        "qbo_customer_id": str(n // 100),
        "local_customer_id": f"cust-{n // 100}",
        "version": 1,
        "doc_number": f"INV-{n:07d}",
        "total_minor": 12_345 + n,
        "balance_minor": n % 5_000,
        "currency": "USD",
        "lines": [
            {"description": f"Service line {i} for invoice {n}", "amount_minor": 1_000 + i}
            for i in range(12)
        ],
        "memo": "x" * 300,
    }


def load(coll: Collection[dict[str, Any]], docs: int) -> None:
    if coll.estimated_document_count() == docs:
        return
    coll.drop()
    coll.create_index([("realm_id", 1), ("qbo_customer_id", 1)], name="realm_customer")
    began = time.perf_counter()
    for start in range(0, docs, 1_000):
        coll.insert_many([invoice(n) for n in range(start, min(start + 1_000, docs))])
    print(f"loaded {docs} documents in {time.perf_counter() - began:.0f} s")


def queries(docs: int, runs: int) -> list[tuple[str, Query, int]]:
    step = max(docs // runs, 1)

    def by_id(coll: Collection[dict[str, Any]], i: int) -> object:
        return coll.find_one({"_id": f"{REALM}:{i * step}"})

    def guarded(coll: Collection[dict[str, Any]], i: int) -> object:
        # Each run moves one document's version forward: the guard matches once per value.
        n = i * step + 1
        version = coll.find_one({"_id": f"{REALM}:{n}"}, {"version": 1})
        if version is None:
            raise RuntimeError("document missing")
        began = time.perf_counter()
        coll.update_one(
            {"_id": version["_id"], "version": version["version"]}, {"$inc": {"version": 1}}
        )
        return time.perf_counter() - began

    def customer(coll: Collection[dict[str, Any]], i: int) -> object:
        return list(coll.find({"realm_id": REALM, "qbo_customer_id": str(i % (docs // 100 or 1))}))

    def in_ids(coll: Collection[dict[str, Any]], i: int) -> object:
        return list(
            coll.find({"_id": {"$in": [f"{REALM}:{(i * 50 + k) % docs}" for k in range(50)]}})
        )

    return [
        ("find_one({_id})", by_id, runs),
        ("update_one({_id, version}) (the update alone)", guarded, runs),
        ("find({realm_id, qbo_customer_id}) (100 docs)", customer, runs),
        ("find({_id: {$in: 50 keys}})", in_ids, 3),
    ]


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.pushdown", description=__doc__)
    p.add_argument("--uri", action="append", help="repeat to compare servers")
    p.add_argument("--docs", type=int, default=100_000)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--keep", action="store_true", help="keep the scratch databases")
    p.add_argument("--no-in", action="store_true", help="skip $in, which reads every document")
    a = p.parse_args()
    uris: list[str] = a.uri or ["mongodb://127.0.0.1:27017/"]

    clients: list[MongoClient[dict[str, Any]]] = [MongoClient(uri) for uri in uris]
    colls = [client["bench_pushdown"]["invoices"] for client in clients]
    try:
        for coll in colls:
            load(coll, a.docs)
        time.sleep(3)  # ferretdb-local adds its GIN indexes within a second or so
        print(f"median ms at {a.docs} documents: " + " | ".join(uris))
        for name, query, runs in queries(a.docs, a.runs):
            if a.no_in and "$in" in name:
                continue
            times: list[list[float]] = [[] for _ in colls]
            for i in range(runs):
                for coll, spent in zip(colls, times, strict=True):
                    began = time.perf_counter()
                    result = query(coll, i)
                    elapsed = time.perf_counter() - began
                    spent.append(result if isinstance(result, float) else elapsed)
            medians = " | ".join(f"{statistics.median(t) * 1_000:10.1f}" for t in times)
            print(f"  {name:<48} {medians}")
    finally:
        for client in clients:
            if not a.keep:
                client.drop_database("bench_pushdown")
            client.close()


if __name__ == "__main__":
    main()
