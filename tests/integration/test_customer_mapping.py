"""Mapping local customers to QBO customers: exact names, ids, ambiguity and misses are
answered with candidates, never a guess. Over HTTP and as a Kafka command."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from qbo_emulator.testing import RunningEmulator
from services.common.messages import MapCustomer
from services.common.mongo import Document
from services.sync.oauth.intuit import TokenGrant
from tests.integration.conftest import SYNC_AUTH, SyncUnderTest
from tests.integration.test_sync_worker import REALM, finished
from tests.support import MovableClock

pytestmark = pytest.mark.integration


@pytest.fixture
async def books(
    sync: SyncUnderTest, emulator: RunningEmulator, clock: MovableClock
) -> dict[str, str]:
    grant = TokenGrant.from_response(emulator.state.issue_tokens(REALM), clock())
    await sync.service.vault.connect(REALM, "alice", grant)
    ids = {}
    for name in ("O'Brien Plumbing", "Brien Electric", "Acme Ltd"):
        ids[name] = str(emulator.state.create_customer(REALM, {"DisplayName": name})["Id"])
    return ids


async def post_mapping(sync: SyncUnderTest, local_id: str, body: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{sync.base_url}/customers/{local_id}/mapping", json=body, headers=SYNC_AUTH
        ) as r:
            return r.status, await r.json()


async def test_exact_name_with_an_apostrophe_is_mapped(
    sync: SyncUnderTest, books: dict[str, str], mongo_db: AsyncDatabase[Document]
) -> None:
    status, body = await post_mapping(
        sync, "cust-7", {"realm_id": REALM, "display_name": "O'Brien Plumbing"}
    )
    assert status == 200, body
    assert body["mapping"]["qbo_customer_id"] == books["O'Brien Plumbing"]
    stored = await mongo_db.customer_mappings.find_one({"_id": "cust-7"})
    assert stored is not None and stored["qbo_customer_id"] == books["O'Brien Plumbing"]


async def test_missing_name_answers_404_with_candidates(
    sync: SyncUnderTest, books: dict[str, str], mongo_db: AsyncDatabase[Document]
) -> None:
    status, body = await post_mapping(sync, "cust-8", {"realm_id": REALM, "display_name": "Brien"})
    assert status == 404
    assert body["error"] == "not_found"
    names = sorted(c["display_name"] for c in body["candidates"])
    assert names == ["Brien Electric", "O'Brien Plumbing"]
    assert await mongo_db.customer_mappings.find_one({"_id": "cust-8"}) is None


async def test_by_id_and_unknown_id(sync: SyncUnderTest, books: dict[str, str]) -> None:
    status, body = await post_mapping(
        sync, "cust-9", {"realm_id": REALM, "qbo_customer_id": books["Acme Ltd"]}
    )
    assert (status, body["mapping"]["display_name"]) == (200, "Acme Ltd")
    status, body = await post_mapping(sync, "cust-9", {"realm_id": REALM, "qbo_customer_id": "999"})
    assert (status, body["error"]) == (404, "not_found")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"realm_id": REALM}, "bad_request"),
        ({"realm_id": "abc", "display_name": "x"}, "bad_request"),
        ([1, 2], "bad_json"),
    ],
)
async def test_malformed_requests_are_400(
    sync: SyncUnderTest, books: dict[str, str], body: Any, code: str
) -> None:
    status, answer = await post_mapping(sync, "cust-10", body)
    assert (status, answer["error"]) == (400, code)


async def test_unconnected_realm_is_a_clear_404(sync: SyncUnderTest) -> None:
    status, body = await post_mapping(sync, "cust-11", {"realm_id": "77", "display_name": "x"})
    assert (status, body["error"]) == (404, "not_connected")


async def test_map_customer_command_through_kafka(
    worker: SyncUnderTest, books: dict[str, str], mongo_db: AsyncDatabase[Document]
) -> None:
    ok = MapCustomer(
        realm_id=REALM, issued_by="service:crm", local_customer_id="c-1", display_name="Acme Ltd"
    )
    miss = MapCustomer(
        realm_id=REALM, issued_by="service:crm", local_customer_id="c-2", display_name="Nobody"
    )
    await worker.service.publish([ok, miss])

    assert (await finished(worker, ok.command_id))["status"] == "succeeded"
    failed = await finished(worker, miss.command_id)
    assert failed["status"] == "failed"
    assert failed["reason"] == "no QBO customer is named 'Nobody'"
    mapping = await mongo_db.customer_mappings.find_one({"_id": "c-1"})
    assert mapping is not None and mapping["qbo_customer_id"] == books["Acme Ltd"]


async def test_an_oversized_mapping_body_is_refused_before_it_is_parsed(
    sync: SyncUnderTest,
) -> None:
    body = {"realm_id": REALM, "display_name": "x" * (20 * 1024)}
    status, answer = await post_mapping(sync, "cust-7", body)
    assert status == 413
    assert answer["error"] == "too_large"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"[" * 8_000 + b"]" * 8_000, 400, "bad_json"),  # once a 500
        (b'{"realm_id": 1E+999999999}', 400, "bad_json"),
        (b"\xff", 400, "bad_json"),
        (b"", 400, "bad_json"),
        (b"{" + b" " * 20_000 + b"}", 413, "too_large"),
    ],
)
async def test_hostile_mapping_bodies_are_answered_4xx_json(
    sync: SyncUnderTest, mongo_db: AsyncDatabase[Document], body: bytes, status: int, code: str
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{sync.base_url}/customers/cust-9/mapping",
            data=body,
            headers={"Content-Type": "application/json", **SYNC_AUTH},
        ) as r:
            assert (r.status, (await r.json())["error"]) == (status, code)
    assert await mongo_db.customer_mappings.count_documents({}) == 0
