"""How customer, connection and command records leave the api."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

from services.api.handlers.commands import render_command
from services.api.handlers.customers import render_customer
from services.api.store import CONNECTION_FIELDS
from services.common.connect_links import ConnectLinks

NOW = datetime(2030, 1, 3, tzinfo=UTC)
LINKS = ConnectLinks(b"a test secret of at least 32 bytes", lambda: NOW)


def reconnect_via(sync_public_url: str) -> Callable[[str], str]:
    return lambda user: LINKS.url(sync_public_url, user)


def user_of_link(url: str, sync_public_url: str) -> str:
    """The user a reconnect URL was signed for, after checking where it points."""
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == sync_public_url.rstrip("/")
    assert parts.path == "/oauth/connect"
    query = parse_qs(parts.query)
    assert set(query) == {"link"}, "the user is named only inside the signed link"
    return LINKS.verify(query["link"][0])


MAPPING = {
    "_id": "cust-42",
    "local_customer_id": "cust-42",
    "realm_id": "9130350000000001",
    "qbo_customer_id": "58",
    "display_name": "Amy's Bird Sanctuary",
    "mapped_at": datetime(2030, 1, 1, tzinfo=UTC),
    "last_synced_at": datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
    "last_sync_command_id": "4f7c2a9e-1b3d-4c5e-8f60-7a8b9c0d1e2f",
}


def connection(status: str, user: str = "alice@example.com") -> dict[str, object]:
    return {
        "_id": "9130350000000001",
        "status": status,
        "user_id": user,
        "reauth_reason": "invalid_grant" if status == "needs_reauth" else None,
        "refresh_token_hard_expires_at": datetime(2031, 1, 1, tzinfo=UTC),
        "updated_at": datetime(2030, 1, 2, tzinfo=UTC),
    }


def test_the_api_never_asks_for_token_fields() -> None:
    assert set(CONNECTION_FIELDS) == {
        "_id",
        "status",
        "user_id",
        "reauth_reason",
        "refresh_token_hard_expires_at",
        "updated_at",
    }


def test_needs_reauth_comes_with_a_reconnect_link_for_the_connection_user() -> None:
    body = render_customer(
        MAPPING, connection("needs_reauth"), reconnect_via("https://sync.example.com/")
    ).wire()
    conn = body["connection"]
    assert conn["needs_reauth"] is True
    assert conn["reauth_reason"] == "invalid_grant"
    assert user_of_link(conn["reconnect_url"], "https://sync.example.com") == "alice@example.com"
    assert body["customer"]["last_synced_at"] == "2030-01-02T03:04:05Z"


def test_an_active_connection_has_no_reconnect_link() -> None:
    body = render_customer(
        MAPPING, connection("active"), reconnect_via("http://127.0.0.1:8000")
    ).wire()
    assert body["connection"]["needs_reauth"] is False
    assert body["connection"]["reconnect_url"] is None


def test_a_disconnected_company_can_be_reconnected_too() -> None:
    body = render_customer(
        MAPPING, connection("disconnected"), reconnect_via("http://127.0.0.1:8000")
    ).wire()
    assert body["connection"]["needs_reauth"] is False
    url = body["connection"]["reconnect_url"]
    assert user_of_link(url, "http://127.0.0.1:8000") == "alice@example.com"


def test_a_realm_without_connection_record() -> None:
    assert render_customer(MAPPING, None, reconnect_via("http://x")).wire()["connection"] is None


def test_command_records_are_whitelisted() -> None:
    doc = {
        "_id": "4f7c2a9e-1b3d-4c5e-8f60-7a8b9c0d1e2f",
        "type": "RefreshInvoices",
        "realm_id": "9130350000000001",
        "local_customer_id": "cust-42",
        "status": "succeeded",
        "issued_at": "2030-01-01T00:00:00.000Z",
        "issued_by": "api",
        "queued_at": datetime(2030, 1, 1, tzinfo=UTC),
        "started_at": datetime(2030, 1, 1, 0, 0, 1, tzinfo=UTC),
        "finished_at": datetime(2030, 1, 1, 0, 0, 2, tzinfo=UTC),
        "attempts": 1,
        "result": {"fetched": 3, "stored": 2, "events": 2, "debug": "x"},
        "idempotency_key": "k-1",
        "published_at": datetime(2030, 1, 1, tzinfo=UTC),
    }
    rendered = render_command(doc).wire()
    assert rendered["command_id"] == doc["_id"]
    assert rendered["result"] == {"fetched": 3, "stored": 2, "events": 2}
    assert rendered["finished_at"] == "2030-01-01T00:00:02Z"
    assert "idempotency_key" not in rendered
    assert "published_at" not in rendered


def test_a_throttled_command_says_when_it_runs_again() -> None:
    doc = {
        "_id": "4f7c2a9e-1b3d-4c5e-8f60-7a8b9c0d1e2f",
        "type": "RefreshInvoices",
        "realm_id": "9130350000000001",
        "status": "throttled",
        "reason": "HTTP 429, code 3001: message=ThrottleExceeded",
        "attempts": 1,
        "resumes_at": datetime(2030, 1, 1, 0, 1, tzinfo=UTC),
    }
    rendered = render_command(doc).wire()
    assert rendered["status"] == "throttled"
    assert rendered["resumes_at"] == "2030-01-01T00:01:00Z"
    assert "resumes_at" not in render_command({**doc, "status": "running"}).wire()


def test_an_inactive_merged_customer_is_rendered_with_its_qbo_facts() -> None:
    merged = {
        **MAPPING,
        "active": False,
        "qbo_sync_token": 12,
        "merged_from": "57",
        "customer_read_at": datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
    }
    customer = render_customer(merged, None, reconnect_via("http://x")).wire()["customer"]
    assert (customer["active"], customer["qbo_sync_token"], customer["merged_from"]) == (
        False,
        "12",
        "57",
    )
    assert customer["customer_read_at"] == "2030-01-02T03:04:05Z"


def test_a_mapping_stored_before_the_customer_was_read_has_no_facts() -> None:
    customer = render_customer(MAPPING, None, reconnect_via("http://x")).wire()["customer"]
    assert (customer["active"], customer["qbo_sync_token"], customer["merged_from"]) == (
        None,
        None,
        None,
    )
