"""The local FerretDB's equality filters are served by indexes, not by reading whole tables.

FerretDB v1.24 on PostgreSQL sends an equality filter as `_jsonb->$1 @> $2` (one pair per
field) but builds a MongoDB index as a btree, which `@>` cannot use. ferretdb-local keeps a GIN
index per indexed field (deploy/local/tools/cmd/ferretdb-local/gin.go). These tests fail if one
goes missing or PostgreSQL stops choosing it. They run only against that local FerretDB.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import TypeVar

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from services.api.store import INDEXES as API_INDEXES
from services.common.mongo import Document, ensure_indexes
from services.common.settings import Settings
from services.sync.store import INDEXES as SYNC_INDEXES
from tests.infra import LocalPostgres, local_postgres

pytestmark = pytest.mark.integration

T = TypeVar("T")
REALM = "9130350000000001"
GIN_FIELD = re.compile(r"USING gin \(\(\(_jsonb -> '((?:[^']|'')*)'::text\)\)")


@pytest.fixture
def postgres(settings: Settings) -> LocalPostgres:
    pg = local_postgres(settings.mongodb_uri)
    if pg is None:
        pytest.skip("runs against the local FerretDB on PostgreSQL (deploy/local/infra.sh)")
    return pg


# psql -c takes no bind parameters: names are quoted and values escaped by these two (the values
# are the test's own).
def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def table_of(pg: LocalPostgres, schema: str, collection: str) -> str:
    rows = pg.rows(
        f"SELECT _jsonb->>'table' FROM {quoted(schema)}._ferretdb_database_metadata "  # noqa: S608
        f"WHERE _jsonb->>'_id' = {literal(collection)}"
    )
    assert rows, f"FerretDB has no table for {schema}.{collection}"
    return rows[0][0]


def gin_indexes(pg: LocalPostgres, schema: str, table: str) -> dict[str, str]:
    """Field -> name of the GIN index on `_jsonb -> 'field'` of that table."""
    rows = pg.rows(
        "SELECT indexname, indexdef FROM pg_indexes "  # noqa: S608
        f"WHERE schemaname = {literal(schema)} AND tablename = {literal(table)}"
    )
    found = {}
    for name, definition in rows:
        match = GIN_FIELD.search(definition)
        if match:
            found[match.group(1).replace("''", "'")] = name
    return found


async def gin_fields_soon(pg: LocalPostgres, schema: str, table: str, want: set[str]) -> set[str]:
    return await until(lambda: set(gin_indexes(pg, schema, table)), lambda got: got == want, 15)


async def until(probe: Callable[[], T], ok: Callable[[T], bool], within_s: float) -> T:
    """Probe until ok(result): the GIN indexes come a reconcile round (about 1 s) later."""
    deadline = time.monotonic() + within_s
    while True:
        result = probe()
        if ok(result) or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.25)


async def test_every_indexed_field_gets_a_gin_index_and_loses_it_with_the_index(
    mongo_db: AsyncDatabase[Document], postgres: LocalPostgres
) -> None:
    schema = mongo_db.name
    specs = [*SYNC_INDEXES, *API_INDEXES]
    await ensure_indexes(mongo_db, specs)

    expected: dict[str, set[str]] = {}
    for spec in specs:
        expected.setdefault(spec.collection, {"_id"}).update(field for field, _ in spec.keys)
    for collection, fields in expected.items():
        table = table_of(postgres, schema, collection)
        assert await gin_fields_soon(postgres, schema, table, fields) == fields, collection

    # Dropping the MongoDB index drops the GIN indexes of its fields; `_id` keeps its own.
    commands = table_of(postgres, schema, "commands")
    await mongo_db["commands"].drop_index("realm_status")
    assert await gin_fields_soon(postgres, schema, commands, {"_id"}) == {"_id"}

    # A collection dropped under the reconciler's feet does not stop it.
    await mongo_db["outbox"].drop()
    await mongo_db["late"].create_index([("status", 1)], name="status")
    late = table_of(postgres, schema, "late")
    assert await gin_fields_soon(postgres, schema, late, {"_id", "status"}) == {"_id", "status"}


def plans(pg: LocalPostgres, statement: str, types: str, args: list[str]) -> list[str]:
    """EXPLAIN of a statement prepared as FerretDB's driver prepares it, once per argument
    list: past the fifth execution PostgreSQL may switch to a generic plan, which cannot match
    an index expression (the field name is a parameter there)."""
    commands = [f"PREPARE q({types}) AS {statement}"]
    commands += [f"EXPLAIN (COSTS OFF) EXECUTE q({a})" for a in args]
    found: list[str] = []
    for line in pg.run(*commands).splitlines():
        if line[:1].isspace() and found:  # a plan's later lines are indented
            found[-1] += "\n" + line
        else:
            found.append(line)
    return found


async def test_equality_filters_pushed_down_by_ferretdb_use_the_gin_indexes(
    mongo_db: AsyncDatabase[Document], postgres: LocalPostgres
) -> None:
    schema = mongo_db.name
    invoices = mongo_db["invoices"]
    await ensure_indexes(mongo_db, SYNC_INDEXES)
    await invoices.insert_many(
        [
            {
                "_id": f"{REALM}:{n}",
                "realm_id": REALM,
                "qbo_customer_id": str(n // 100),
                "version": 1,
                "memo": "m" * 600,
            }
            for n in range(3_000)
        ]
    )
    table = table_of(postgres, schema, "invoices")
    gins = await until(
        lambda: gin_indexes(postgres, schema, table),
        lambda got: {"_id", "realm_id", "qbo_customer_id"} <= set(got),
        within_s=15,
    )
    assert {"_id", "realm_id", "qbo_customer_id"} <= set(gins), gins
    postgres.rows(f"ANALYZE {quoted(schema)}.{quoted(table)}")

    # The statements FerretDB v1.24.2 sends for find_one({_id}), for the filter of a guarded
    # update_one({_id, version}), and for find({realm_id, qbo_customer_id}).
    source = f"SELECT _jsonb FROM {quoted(schema)}.{quoted(table)}"  # noqa: S608
    by_id = plans(
        postgres,
        f"{source} WHERE _jsonb->$1 @> $2",
        "text, jsonb",
        [f"'_id', '\"{REALM}:{n}\"'" for n in range(0, 2_800, 400)],
    )
    guarded = plans(
        postgres,
        f"{source} WHERE _jsonb->$1 @> $2 AND _jsonb->$3 @> $4",
        "text, jsonb, text, jsonb",
        [f"'_id', '\"{REALM}:{n}\"', 'version', '1'" for n in range(1, 2_800, 400)],
    )
    customer = plans(
        postgres,
        f"{source} WHERE _jsonb->$1 @> $2 AND _jsonb->$3 @> $4",
        "text, jsonb, text, jsonb",
        [f"'realm_id', '\"{REALM}\"', 'qbo_customer_id', '\"{c}\"'" for c in range(7)],
    )
    assert len(by_id) == len(guarded) == len(customer) == 7
    for plan in by_id + guarded:
        assert f"Bitmap Index Scan on {gins['_id']}" in plan, plan
        assert "Seq Scan" not in plan, plan
    for plan in customer:
        assert f"Bitmap Index Scan on {gins['qbo_customer_id']}" in plan, plan
        assert "Seq Scan" not in plan, plan

    # And the traffic itself: PostgreSQL counts scans of each index (its statistics reach the
    # view within about 10 s of a session going idle).
    def scans() -> dict[str, int]:
        rows = postgres.rows(
            "SELECT indexrelname, idx_scan FROM pg_stat_user_indexes "  # noqa: S608
            f"WHERE schemaname = {literal(schema)} AND relname = {literal(table)}"
        )
        return {name: int(count) for name, count in rows}

    before = scans()
    for n in range(5):
        assert await invoices.find_one({"_id": f"{REALM}:{n}"}) is not None
        updated = await invoices.update_one(
            {"_id": f"{REALM}:{n}", "version": 1}, {"$set": {"version": 2}}
        )
        assert updated.modified_count == 1
        cursor = invoices.find({"realm_id": REALM, "qbo_customer_id": "3"})
        assert len(await cursor.to_list()) == 100

    def grew(after: dict[str, int]) -> bool:
        return (
            after[gins["_id"]] >= before[gins["_id"]] + 10
            and after[gins["qbo_customer_id"]] >= before[gins["qbo_customer_id"]] + 5
        )

    after = await until(scans, grew, within_s=30)
    assert grew(after), (before, after)
