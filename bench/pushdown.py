"""What the queries the README's FerretDB table lists cost on one MongoDB-protocol server.

Loads `--docs` invoice-shaped documents (~1.3 KB each, 100 per customer) into a scratch
database, with the services' (realm_id, qbo_customer_id) index, and prints the median time of:
find_one by `_id`, a version-guarded update_one, a customer's invoices, and `$in` on 50 `_id`s.

To compare FerretDB with and without the GIN indexes the local ferretdb-local keeps, point it at
a second ferretdb-local started with `-gin-interval 0` on a PostgreSQL database of its own.

    python -m bench.pushdown --uri mongodb://127.0.0.1:27017/ --docs 100000
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from pymongo import MongoClient


def invoice(n: int) -> dict[str, Any]:
    return {
        "_id": f"9130350000000001:{n}",
        "realm_id": "9130350000000001",
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


def median_ms(action: Callable[[int], object], runs: int) -> float:
    times = []
    for i in range(runs):
        began = time.perf_counter()
        action(i)
        times.append((time.perf_counter() - began) * 1_000)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.pushdown", description=__doc__)
    p.add_argument("--uri", default="mongodb://127.0.0.1:27017/")
    p.add_argument("--docs", type=int, default=100_000)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--keep", action="store_true", help="keep the scratch database")
    a = p.parse_args()

    client: MongoClient[dict[str, Any]] = MongoClient(a.uri)
    db = client["bench_pushdown"]
    try:
        coll = db["invoices"]
        if coll.estimated_document_count() != a.docs:
            coll.drop()
            coll.create_index([("realm_id", 1), ("qbo_customer_id", 1)], name="realm_customer")
            began = time.perf_counter()
            for start in range(0, a.docs, 1_000):
                coll.insert_many([invoice(n) for n in range(start, min(start + 1_000, a.docs))])
            print(f"loaded {a.docs} documents in {time.perf_counter() - began:.0f} s")
            time.sleep(3)  # ferretdb-local adds its GIN indexes within a second or so

        step = max(a.docs // a.runs, 1)
        customers = max(a.docs // 100, 1)

        def by_id(i: int) -> object:
            return coll.find_one({"_id": f"9130350000000001:{i * step}"})

        def guarded_ms(i: int) -> float:
            """The update alone; the read of the current version is not timed."""
            doc = coll.find_one({"_id": f"9130350000000001:{i * step + 1}"}, {"version": 1})
            if doc is None:
                raise RuntimeError("document missing")
            began = time.perf_counter()
            coll.update_one(
                {"_id": doc["_id"], "version": doc["version"]},
                {"$set": {"version": doc["version"] + 1}},
            )
            return (time.perf_counter() - began) * 1_000

        def customer(i: int) -> object:
            return list(coll.find({"realm_id": "9130350000000001", "qbo_customer_id": str(i)}))

        def in_ids(i: int) -> object:
            keys = [f"9130350000000001:{(i * 50 + k) % a.docs}" for k in range(50)]
            return list(coll.find({"_id": {"$in": keys}}))

        rows = [
            ("find_one({_id})", median_ms(by_id, a.runs)),
            ("update_one({_id, version})", statistics.median(map(guarded_ms, range(a.runs)))),
            (
                "find({realm_id, qbo_customer_id}) (100 docs)",
                median_ms(lambda i: customer(i % customers), a.runs),
            ),
            ("find({_id: {$in: 50 keys}})", median_ms(in_ids, max(a.runs // 4, 3))),
        ]
        print(f"{a.uri} with {a.docs} documents (median ms)")
        for name, ms in rows:
            print(f"  {name:<46} {ms:9.1f}")
    finally:
        if not a.keep:
            client.drop_database("bench_pushdown")
        client.close()


if __name__ == "__main__":
    main()
