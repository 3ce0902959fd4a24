"""The read API over real HTTP, with its projector, real Kafka and a real MongoDB-protocol server.

The world: customer `cust-42` mapped to QBO customer 58, six invoices of that customer projected
from real InvoiceUpdated events (plus one of another customer), "today" fixed at 2030-03-15.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from pymongo.asynchronous.database import AsyncDatabase

from services.api.app import api_service
from services.api.auth import InsecureConfiguration
from services.api.store import CONNECTION_FIELDS, SyncRecords
from services.common import jsoncodec
from services.common.connect_links import ConnectLinks, load_connect_link_secret
from services.common.messages import RefreshInvoices, parse_command
from services.common.mongo import Document
from services.common.settings import Settings
from tests.api_support import (
    REALM,
    RunningApi,
    consume_all,
    invoice_event,
    produce,
    produce_events,
    running_api,
    seed_connection,
    seed_mapping,
)
from tests.support import bound_socket, eventually

pytestmark = pytest.mark.integration

NOW = datetime(2030, 3, 15, 12, 0, tzinfo=UTC)
TOKEN = "integration-token-1"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

# doc number -> (invoice id, event kwargs)
INVOICES: dict[str, dict[str, Any]] = {
    "A-1": {"invoice_id": "101", "total_amt": "0.10", "due_date": "2030-03-01"},  # overdue
    "A-2": {"invoice_id": "102", "total_amt": "0.20", "due_date": "2030-04-01"},  # open
    "A-3": {"invoice_id": "103", "total_amt": "5.00", "balance": 0, "due_date": "2030-02-01"},
    "A-4": {
        "invoice_id": "104",
        "total_amt": 0,
        "balance": 0,
        "status": "voided",
        "due_date": None,
    },
    "A-5": {"invoice_id": "105", "total_amt": "9.99", "deleted": True, "due_date": "2030-01-01"},
    "A-6": {"invoice_id": "106", "total_amt": "1234.56", "balance": "1000.01", "due_date": None},
}


@pytest.fixture
def api_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "api_tokens": SecretStr(f"other-token, {TOKEN}"),
            "sync_public_url": "http://sync.test:8000",
        }
    )


@pytest.fixture
async def api(api_settings: Settings) -> AsyncIterator[RunningApi]:
    async with running_api(api_settings, clock=lambda: NOW) as running:
        yield running


@pytest.fixture
async def client(api: RunningApi) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as c:
        yield c


@pytest.fixture
async def world(api_settings: Settings, mongo_db: AsyncDatabase[Document], api: RunningApi) -> None:
    await seed_mapping(mongo_db, "cust-42", last_synced_at=datetime(2030, 3, 15, 11, tzinfo=UTC))
    await seed_mapping(mongo_db, "cust-99", qbo_customer_id="59", display_name="Other")
    await seed_connection(mongo_db)
    events = [
        invoice_event(
            spec["invoice_id"],
            1,
            doc_number=doc,
            **{k: v for k, v in spec.items() if k != "invoice_id"},
        )
        for doc, spec in INVOICES.items()
    ]
    events.append(invoice_event("201", 1, qbo_customer_id="59", local_customer_id="cust-99"))
    await produce_events(api_settings, *events)
    await eventually(
        lambda: mongo_db["read_invoices"].count_documents({}), lambda n: n == len(events)
    )


async def get_json(client: httpx.AsyncClient, path: str, **params: str) -> dict[str, Any]:
    response = await client.get(path, params=params, headers=AUTH)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = jsoncodec.loads(response.content)
    return body


def doc_numbers(body: dict[str, Any]) -> list[str]:
    return [i["doc_number"] for i in body["invoices"]]


@pytest.mark.usefixtures("world")
async def test_totals_are_exact_decimals(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/api/customers/cust-42/invoices", params={"status": "open"}, headers=AUTH
    )
    assert response.status_code == 200
    # 0.10 + 0.20 (+ 1234.56 of which 1000.01 is owed), written digit for digit.
    assert '"total_amt":1234.86' in response.text
    assert '"balance":1000.31' in response.text
    assert '"overdue_balance":0.10' in response.text
    body = jsoncodec.loads(response.content)
    assert body["totals"] == {
        "count": 3,
        "total_amt": Decimal("1234.86"),
        "balance": Decimal("1000.31"),
        "overdue_balance": Decimal("0.10"),
        "currency": "USD",
    }
    a1 = next(i for i in body["invoices"] if i["doc_number"] == "A-1")
    assert (a1["total_amt"], a1["balance"], a1["overdue"]) == (
        Decimal("0.10"),
        Decimal("0.10"),
        True,
    )
    assert '"total_amt":0.10,' in response.text


@pytest.mark.usefixtures("world")
async def test_point_one_plus_point_two_is_point_three(
    client: httpx.AsyncClient, api_settings: Settings, mongo_db: AsyncDatabase[Document]
) -> None:
    await seed_mapping(mongo_db, "cust-7", qbo_customer_id="7")
    await produce_events(
        api_settings,
        invoice_event("701", 1, qbo_customer_id="7", local_customer_id="cust-7", total_amt="0.10"),
        invoice_event("702", 1, qbo_customer_id="7", local_customer_id="cust-7", total_amt="0.20"),
    )
    await eventually(
        lambda: mongo_db["read_invoices"].count_documents({"qbo_customer_id": "7"}),
        lambda n: n == 2,
    )
    response = await client.get("/api/customers/cust-7/invoices", headers=AUTH)
    totals = jsoncodec.loads(response.content)["totals"]
    assert totals["total_amt"] == Decimal("0.30")
    assert '"totals":{"count":2,"total_amt":0.30,"balance":0.30,' in response.text


@pytest.mark.usefixtures("world")
async def test_the_listing_shows_every_state_and_only_this_customer(
    client: httpx.AsyncClient,
) -> None:
    body = await get_json(client, "/api/customers/cust-42/invoices")
    assert sorted(doc_numbers(body)) == ["A-1", "A-2", "A-3", "A-4", "A-5", "A-6"]
    states = {i["doc_number"]: (i["status"], i["overdue"], i["deleted"]) for i in body["invoices"]}
    assert states == {
        "A-1": ("open", True, False),
        "A-2": ("open", False, False),
        "A-3": ("paid", False, False),
        "A-4": ("voided", False, False),
        "A-5": ("deleted", False, True),
        "A-6": ("open", False, False),
    }
    assert body["as_of"] == "2030-03-15"
    # Voided and deleted are counted but owe nothing.
    assert body["totals"]["count"] == 6
    assert body["totals"]["total_amt"] == Decimal("1239.86")
    assert body["totals"]["balance"] == Decimal("1000.31")


@pytest.mark.usefixtures("world")
@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("open", ["A-1", "A-2", "A-6"]),
        ("overdue", ["A-1"]),
        ("paid", ["A-3"]),
        ("voided", ["A-4"]),
        ("deleted", ["A-5"]),
        ("all", ["A-1", "A-2", "A-3", "A-4", "A-5", "A-6"]),
    ],
)
async def test_status_filters(client: httpx.AsyncClient, status: str, expected: list[str]) -> None:
    body = await get_json(
        client, "/api/customers/cust-42/invoices", status=status, sort="doc_number"
    )
    assert doc_numbers(body) == expected
    assert body["totals"]["count"] == len(expected)
    assert body["status"] == status


@pytest.mark.usefixtures("world")
@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        # Null due dates sort first ascending and last descending; ties by invoice.
        ("due_date", ["A-4", "A-6", "A-5", "A-3", "A-1", "A-2"]),
        ("-due_date", ["A-2", "A-1", "A-3", "A-5", "A-4", "A-6"]),
        ("total", ["A-4", "A-1", "A-2", "A-3", "A-5", "A-6"]),
        ("-total", ["A-6", "A-5", "A-3", "A-2", "A-1", "A-4"]),
        ("balance", ["A-3", "A-4", "A-1", "A-2", "A-5", "A-6"]),
        ("-doc_number", ["A-6", "A-5", "A-4", "A-3", "A-2", "A-1"]),
    ],
)
async def test_sorting(client: httpx.AsyncClient, sort: str, expected: list[str]) -> None:
    body = await get_json(client, "/api/customers/cust-42/invoices", sort=sort)
    assert doc_numbers(body) == expected
    assert body["sort"] == sort


@pytest.mark.usefixtures("world")
@pytest.mark.parametrize("sort", ["due_date", "-due_date", "total", "-balance", "doc_number"])
async def test_cursor_paging_visits_every_invoice_once_in_order(
    client: httpx.AsyncClient, sort: str
) -> None:
    everything = doc_numbers(await get_json(client, "/api/customers/cust-42/invoices", sort=sort))
    seen: list[str] = []
    params = {"sort": sort, "limit": "2"}
    for _ in range(10):
        page = await get_json(client, "/api/customers/cust-42/invoices", **params)
        seen += doc_numbers(page)
        assert page["totals"]["count"] == 6  # totals cover the whole listing on every page
        if not page["page"]["has_more"]:
            assert page["page"]["next_cursor"] is None
            break
        params["cursor"] = page["page"]["next_cursor"]
    assert seen == everything


@pytest.mark.usefixtures("world")
async def test_offset_paging(client: httpx.AsyncClient) -> None:
    page = await get_json(
        client, "/api/customers/cust-42/invoices", sort="doc_number", limit="2", offset="2"
    )
    assert doc_numbers(page) == ["A-3", "A-4"]
    assert page["page"] == {
        "limit": 2,
        "offset": 2,
        "next_cursor": page["page"]["next_cursor"],
        "has_more": True,
    }
    rest = await get_json(
        client,
        "/api/customers/cust-42/invoices",
        sort="doc_number",
        limit="2",
        cursor=page["page"]["next_cursor"],
    )
    assert doc_numbers(rest) == ["A-5", "A-6"]


@pytest.mark.usefixtures("world")
@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "201"},
        {"limit": "abc"},
        {"offset": "-1"},
        {"status": "late"},
        {"sort": "amount"},
        {"cursor": "garbage!"},
        {"cursor": "WyJ0b3RhbCIsNSwiYSJd", "sort": "due_date"},  # a cursor of sort=total
        {"cursor": "WyJ0b3RhbCIsNSwiYSJd", "sort": "total", "offset": "1"},
    ],
)
async def test_bad_query_parameters_are_400_json(
    client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    response = await client.get("/api/customers/cust-42/invoices", params=params, headers=AUTH)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "bad_parameter"
    assert set(body) == {"error", "message"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/customers/cust-42/invoices"),
        ("POST", "/api/customers/cust-42/refreshInvoices"),
        ("GET", "/api/customers/cust-42"),
        ("GET", "/api/commands/4f7c2a9e-1b3d-4c5e-8f60-7a8b9c0d1e2f"),
    ],
)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": "Bearer dev-token"},  # configured tokens replace the dev token
    ],
)
async def test_api_routes_need_a_configured_token(
    client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]
) -> None:
    response = await client.request(method, path, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_every_configured_token_is_accepted(client: httpx.AsyncClient) -> None:
    for token in ("other-token", TOKEN):
        response = await client.get(
            "/api/customers/nobody", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 404  # authenticated, and the customer is unknown


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/customers/nobody/invoices"),
        ("POST", "/api/customers/nobody/refreshInvoices"),
        ("GET", "/api/customers/nobody"),
        ("GET", "/api/commands/4f7c2a9e-1b3d-4c5e-8f60-7a8b9c0d1e2f"),
        ("GET", "/api/no-such-route"),
    ],
)
async def test_unknown_things_are_404_json(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path, headers=AUTH)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"] == "not_found"


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        ("GET", "/api/customers/bad%20id/invoices", "bad_customer_id"),
        ("GET", "/api/customers/" + "x" * 129, "bad_customer_id"),
        ("GET", "/api/customers/caf%C3%A9", "bad_customer_id"),
        ("POST", "/api/customers/o'brien/refreshInvoices", "bad_customer_id"),
        ("GET", "/api/commands/not-a-uuid", "bad_command_id"),
        ("GET", "/api/commands/4F7C2A9E-1B3D-4C5E-8F60-7A8B9C0D1E2F", "bad_command_id"),
    ],
)
async def test_malformed_ids_are_400_json(
    client: httpx.AsyncClient, method: str, path: str, code: str
) -> None:
    response = await client.request(method, path, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"] == code


@pytest.mark.usefixtures("world")
@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "bad_json"),
        (b"\xff\xfe", "bad_json"),
        (b"[1, 2]", "bad_request"),
        (b'{"correlation_id": 5}', "bad_request"),
        (b'{"correlation_id": null}', "bad_request"),
        (b'{"realm_id": "1"}', "bad_request"),
    ],
)
async def test_a_malformed_refresh_body_is_400_json(
    client: httpx.AsyncClient, body: bytes, code: str
) -> None:
    response = await client.post(
        "/api/customers/cust-42/refreshInvoices",
        content=body,
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == code


async def test_a_method_the_route_does_not_serve_is_405_json(client: httpx.AsyncClient) -> None:
    response = await client.delete("/api/customers/cust-42/invoices", headers=AUTH)
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


@pytest.mark.usefixtures("world")
@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"[" * 8_000 + b"]" * 8_000, 400, "bad_json"),  # 16 KB of nesting: once a 500
        (b'{"correlation_id":' * 500 + b"1" + b"}" * 500, 400, "bad_json"),  # 9.5 KB
        (b'{"correlation_id": 1E+999999999}', 400, "bad_json"),
        (b"\xff\xfe", 400, "bad_json"),
        (b" " * 20_000, 413, "too_large"),
    ],
)
async def test_hostile_refresh_bodies_are_answered_4xx_json_and_queue_nothing(
    client: httpx.AsyncClient,
    mongo_db: AsyncDatabase[Document],
    body: bytes,
    status: int,
    code: str,
) -> None:
    response = await client.post(
        "/api/customers/cust-42/refreshInvoices",
        content=body,
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert (response.status_code, response.json()["error"]) == (status, code)
    assert await mongo_db.commands.count_documents({}) == 0


@pytest.mark.usefixtures("world")
async def test_refresh_queues_a_command_and_publishes_it_keyed_by_realm(
    client: httpx.AsyncClient, api_settings: Settings, mongo_db: AsyncDatabase[Document]
) -> None:
    response = await client.post(
        "/api/customers/cust-42/refreshInvoices",
        json={"correlation_id": "req-1"},
        headers=AUTH,
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    command_id = accepted["command_id"]
    assert accepted == {
        "command_id": command_id,
        "status": "queued",
        "status_url": f"/api/commands/{command_id}",
    }
    assert response.headers["location"] == accepted["status_url"]

    (record,) = await consume_all(api_settings, api_settings.commands_topic, 1)
    assert record.key == REALM.encode()
    command = parse_command(record.value)  # validates against the RefreshInvoices schema
    assert isinstance(command, RefreshInvoices)
    assert command.command_id == command_id
    assert (command.realm_id, command.local_customer_id) == (REALM, "cust-42")
    assert (command.issued_by, command.correlation_id) == ("api", "req-1")

    stored = await mongo_db["commands"].find_one({"_id": command_id})
    assert stored is not None
    assert stored["status"] == "queued"
    publication = await mongo_db["command_publications"].find_one({"_id": f"{command_id}#0"})
    assert publication is not None
    assert publication["outcome"] == "published"

    status = await get_json(client, accepted["status_url"])
    assert status["status"] == "queued"
    assert status["issued_by"] == "api"
    assert status["local_customer_id"] == "cust-42"

    # The sync worker reports progress in the same record; the api shows it.
    await mongo_db["commands"].update_one(
        {"_id": command_id},
        {
            "$set": {
                "status": "succeeded",
                "started_at": NOW,
                "finished_at": NOW,
                "attempts": 1,
                "result": {"fetched": 6, "stored": 2, "events": 2},
            }
        },
    )
    status = await get_json(client, accepted["status_url"])
    assert status["status"] == "succeeded"
    assert status["result"] == {"fetched": 6, "stored": 2, "events": 2}
    assert status["finished_at"] == "2030-03-15T12:00:00Z"


@pytest.mark.usefixtures("world")
async def test_the_same_idempotency_key_gets_the_same_command_and_publishes_once(
    client: httpx.AsyncClient, api_settings: Settings, mongo_db: AsyncDatabase[Document]
) -> None:
    headers = {**AUTH, "Idempotency-Key": "refresh-2030-03-15-a"}
    first = await client.post("/api/customers/cust-42/refreshInvoices", headers=headers)
    second = await client.post("/api/customers/cust-42/refreshInvoices", headers=headers)
    other = await client.post(
        "/api/customers/cust-42/refreshInvoices", headers={**AUTH, "Idempotency-Key": "b"}
    )
    assert first.status_code == second.status_code == other.status_code == 202
    assert first.json()["command_id"] == second.json()["command_id"]
    assert other.json()["command_id"] != first.json()["command_id"]

    # A sentinel after the requests, on the realm's partition: everything before it is all the
    # api published.
    await produce(api_settings, [(REALM.encode(), b"sentinel")], topic=api_settings.commands_topic)
    records = await consume_all(api_settings, api_settings.commands_topic, 3)
    assert records[-1].value == b"sentinel"
    published = [parse_command(r.value).command_id for r in records[:-1]]
    assert published == [first.json()["command_id"], other.json()["command_id"]]
    assert await mongo_db["commands"].count_documents({}) == 2


@pytest.mark.usefixtures("world")
async def test_a_bad_idempotency_key_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/customers/cust-42/refreshInvoices",
        headers={**AUTH, "Idempotency-Key": "k" * 256},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "bad_idempotency_key"


@pytest.mark.usefixtures("world")
async def test_customer_status_with_a_connection_that_needs_reauth(
    client: httpx.AsyncClient, mongo_db: AsyncDatabase[Document], api_settings: Settings
) -> None:
    body = await get_json(client, "/api/customers/cust-42")
    assert body["customer"]["last_synced_at"] == "2030-03-15T11:00:00Z"
    assert body["customer"]["qbo_customer_id"] == "58"
    assert body["connection"]["status"] == "active"
    assert body["connection"]["reconnect_url"] is None

    await seed_connection(mongo_db, status="needs_reauth", reauth_reason="invalid_grant")
    response = await client.get("/api/customers/cust-42", headers=AUTH)
    body = response.json()
    assert body["connection"]["needs_reauth"] is True
    assert body["connection"]["reauth_reason"] == "invalid_grant"
    # A link the sync service accepts for the connection's own user, and for nobody else.
    reconnect = httpx.URL(body["connection"]["reconnect_url"])
    assert (reconnect.host, reconnect.port, reconnect.path) == ("sync.test", 8000, "/oauth/connect")
    links = ConnectLinks(load_connect_link_secret(api_settings), lambda: NOW)
    assert links.verify(reconnect.params["link"]) == "alice"
    assert body["connection"]["refresh_token_hard_expires_at"] == "2031-01-01T00:00:00Z"
    # The sealed tokens are in the same document; none of them reaches the response.
    connection = await mongo_db["connections"].find_one({"_id": REALM})
    assert connection is not None
    assert connection["access_token"] not in response.text
    assert connection["refresh_token"] not in response.text
    assert not {"access_token", "refresh_token"} & set(body["connection"])


async def test_connections_are_read_without_their_token_fields(
    mongo_db: AsyncDatabase[Document],
) -> None:
    await seed_connection(mongo_db)
    stored = await mongo_db["connections"].find_one({"_id": REALM})
    assert stored is not None and {"access_token", "refresh_token"} <= set(stored)
    loaded = await SyncRecords(mongo_db).connection(REALM)
    assert loaded is not None
    assert set(loaded) == set(CONNECTION_FIELDS)  # the server never sent the tokens


@pytest.mark.usefixtures("world")
async def test_an_unexpected_failure_is_a_json_500_without_internals(
    client: httpx.AsyncClient, mongo_db: AsyncDatabase[Document]
) -> None:
    command_id = "0d9e8f7a-6b5c-4d3e-9f2a-1b0c9d8e7f6a"
    await mongo_db["commands"].insert_one(
        {"_id": command_id, "type": "RefreshInvoices", "result": {"fetched": "many"}}
    )
    response = await client.get(f"/api/commands/{command_id}", headers=AUTH)
    assert response.status_code == 500
    assert response.json() == {"error": "internal", "message": "internal server error"}
    assert "Traceback" not in response.text


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    health = await client.get("/healthz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "checks": {"kafka": "ok", "mongo": "ok", "projector": "running"},
    }


async def test_readiness_is_503_once_the_projector_task_has_ended(
    api: RunningApi, client: httpx.AsyncClient
) -> None:
    task = api.service.projector_task
    assert task is not None
    task.cancel()  # however it ended, events are no longer projected by this process
    with contextlib.suppress(asyncio.CancelledError):
        await task
    ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["projector"] == "stopped"


async def test_readiness_is_503_while_dependencies_do_not_answer(settings: Settings) -> None:
    # Two loopback ports nothing listens on.
    dead = [bound_socket() for _ in range(2)]
    kafka_port, mongo_port = (s.getsockname()[1] for s in dead)
    for s in dead:
        s.close()
    unreachable = settings.model_copy(
        update={
            "kafka_bootstrap_servers": f"127.0.0.1:{kafka_port}",
            "mongodb_uri": f"mongodb://127.0.0.1:{mongo_port}/",
        }
    )
    async with running_api(unreachable, run_projector=False) as running:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=30) as c:
            health = await c.get("/healthz")
            ready = await c.get("/readyz")
    assert health.status_code == 200  # the process is up, it just cannot serve yet
    assert ready.status_code == 503
    assert ready.json() == {
        "status": "unavailable",
        "checks": {"kafka": "unreachable", "mongo": "unreachable", "projector": "off"},
    }


async def test_the_api_refuses_to_start_without_tokens_outside_local(settings: Settings) -> None:
    production = settings.model_copy(
        update={"environment": "production", "api_tokens": SecretStr("")}
    )
    with pytest.raises(InsecureConfiguration, match="API_TOKENS"):
        async with api_service(production):
            pass


@pytest.mark.usefixtures("world")
async def test_metrics_count_requests_and_projected_events(client: httpx.AsyncClient) -> None:
    await client.get("/api/customers/cust-42/invoices", headers=AUTH)
    await client.get("/api/customers/nobody/invoices", headers=AUTH)
    await client.get("/api/customers/cust-42/invoices")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    route = "/api/customers/{localCustomerId}/invoices"

    def sample(name: str, **labels: str) -> float:
        inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
        match = re.search(rf"^{re.escape(name)}\{{{re.escape(inner)}\}} (\S+)$", text, re.M)
        assert match, f"{name}{{{inner}}} missing"
        return float(match.group(1))

    assert sample("qbo_api_requests_total", method="GET", route=route, status="200") == 1
    assert sample("qbo_api_requests_total", method="GET", route=route, status="404") == 1
    assert sample("qbo_api_requests_total", method="GET", route=route, status="401") == 1
    assert sample("qbo_api_request_duration_seconds_count", method="GET", route=route) == 3
    assert sample("qbo_api_events_projected_total", outcome="stored") == 7
    assert sample("qbo_api_events_projected_total", outcome="dead_lettered") == 0
    lags = [
        float(v) for v in re.findall(r"^qbo_api_projector_lag_events\{[^}]*\} (\S+)$", text, re.M)
    ]
    assert lags and all(v == 0 for v in lags)
    assert "cust-42" not in text  # one series per route template, never per customer
