"""Intuit's webhook bodies -> SyncChanges commands: signature, both formats, grouping, HTTP edge.

Payloads are the samples Intuit publishes (blog post of 2025-11-12, the webhooks "data objects"
page) and what the emulator sends, so the parser is tested against real shapes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from structlog.testing import capture_logs

from qbo_emulator.books import Change
from qbo_emulator.webhooks import cloudevents_payload, cloudevents_source, legacy_payload, sign
from services.common.messages import Command, EntityChange, SyncChanges, parse_command
from services.sync.webhooks import (
    MAX_CHANGES_PER_COMMAND,
    WEBHOOK_PATH,
    ChangeNotice,
    RejectedEvent,
    group_into_commands,
    parse_delivery,
    parse_notifications,
    verify_signature,
    webhook_routes,
)

TOKEN = "verifier-token-for-tests"
REALM = "9130350000000001"
OTHER_REALM = "9130350000000002"
T0 = datetime(2026, 11, 25, 8, 30, tzinfo=UTC).timestamp()


def dumps(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def invoice(entity_id: str, operation: str, realm: str = REALM, **extra: Any) -> ChangeNotice:
    return ChangeNotice(realm, "Invoice", entity_id, operation, extra.get("at"), extra.get("gone"))


# ------------------------------------------------------------------------------ signature


class TestSignature:
    body = b'{"eventNotifications":[]}'

    def good(self) -> str:
        digest = hmac.new(TOKEN.encode(), self.body, hashlib.sha256).digest()
        return base64.b64encode(digest).decode()

    def test_valid_signature_matches_the_emulator_and_intuit_recipe(self) -> None:
        assert self.good() == sign(self.body, TOKEN)
        assert verify_signature(self.body, self.good(), TOKEN)

    def test_a_tampered_body_fails(self) -> None:
        assert not verify_signature(self.body + b" ", self.good(), TOKEN)

    def test_the_wrong_token_fails(self) -> None:
        assert not verify_signature(self.body, self.good(), TOKEN + "x")

    @pytest.mark.parametrize("header", [None, "", "   "])
    def test_a_missing_header_fails(self, header: str | None) -> None:
        assert not verify_signature(self.body, header, TOKEN)

    @pytest.mark.parametrize("header", ["not base64 at all!", "é" * 44, "YWJj", "=" * 44])
    def test_garbage_headers_fail_without_raising(self, header: str) -> None:
        assert not verify_signature(self.body, header, TOKEN)

    def test_an_empty_verifier_token_never_verifies(self) -> None:
        assert not verify_signature(self.body, sign(self.body, ""), "")


# ------------------------------------------------------------------------- legacy format


def test_legacy_sample_with_invoices_of_two_realms() -> None:
    body = dumps(
        {
            "eventNotifications": [
                {
                    "realmId": REALM,
                    "dataChangeEvent": {
                        "entities": [
                            {
                                "name": "Invoice",
                                "id": "130",
                                "operation": "Update",
                                "lastUpdated": "2025-09-08T20:52:31.657Z",
                            },
                            {
                                "name": "Invoice",
                                "id": "131",
                                "operation": "Void",
                                "lastUpdated": "2025-09-08T20:52:32Z",
                            },
                        ]
                    },
                },
                {
                    "realmId": OTHER_REALM,
                    "dataChangeEvent": {
                        "entities": [
                            {
                                "name": "Invoice",
                                "id": "7",
                                "operation": "Delete",
                                "lastUpdated": "2015-10-05T14:42:19-0700",
                            }
                        ]
                    },
                },
            ]
        }
    )
    assert parse_notifications(body) == [
        ChangeNotice(
            REALM, "Invoice", "130", "Update", datetime(2025, 9, 8, 20, 52, 31, 657000, UTC)
        ),
        ChangeNotice(REALM, "Invoice", "131", "Void", datetime(2025, 9, 8, 20, 52, 32, tzinfo=UTC)),
        ChangeNotice(
            OTHER_REALM, "Invoice", "7", "Delete", datetime(2015, 10, 5, 21, 42, 19, tzinfo=UTC)
        ),
    ]


def test_legacy_merge_names_the_absorbed_customer() -> None:
    body = dumps(
        {
            "eventNotifications": [
                {
                    "realmId": REALM,
                    "dataChangeEvent": {
                        "entities": [
                            {
                                "name": "Customer",
                                "id": "58",
                                "operation": "Merge",
                                "lastUpdated": "2025-09-08T20:52:31.657Z",
                                "deletedId": "27",
                            }
                        ]
                    },
                }
            ]
        }
    )
    [notice] = parse_notifications(body)
    assert (notice.entity, notice.entity_id, notice.operation, notice.deleted_id) == (
        "Customer",
        "58",
        "Merge",
        "27",
    )


def test_intuit_blog_sample_for_an_account_is_ignored() -> None:
    # Intuit's own sample is about an Account, which this service does not sync.
    body = dumps(
        {
            "eventNotifications": [
                {
                    "realmId": "310687",
                    "dataChangeEvent": {
                        "entities": [
                            {
                                "id": "1234",
                                "operation": "Create",
                                "name": "Account",
                                "lastUpdated": "2025-09-08T20:52:31.657Z",
                            }
                        ]
                    },
                }
            ]
        }
    )
    with capture_logs() as logs:
        assert parse_notifications(body) == []
    assert logs[0]["event"] == "webhook.events_ignored"
    assert logs[0]["events"] == {"Account.Create": 1}


def test_legacy_unknown_entity_and_operation_are_dropped_the_rest_kept() -> None:
    body = dumps(
        {
            "eventNotifications": [
                {
                    "realmId": REALM,
                    "dataChangeEvent": {
                        "entities": [
                            {"name": "Payment", "id": "9", "operation": "Create"},
                            {"name": "Invoice", "id": "1", "operation": "Archive"},
                            {"name": "Invoice", "id": "2", "operation": "Emailed"},
                        ]
                    },
                }
            ]
        }
    )
    assert parse_notifications(body) == [ChangeNotice(REALM, "Invoice", "2", "Emailed", None)]


def test_what_the_emulator_sends_in_the_legacy_format() -> None:
    changes = [
        (REALM, Change(1, T0, "Invoice", "130", "Update")),
        (REALM, Change(2, T0 + 1.5, "Invoice", "131", "Void")),
        (OTHER_REALM, Change(3, T0 + 2, "Customer", "5", "Create")),
    ]
    notices = parse_notifications(dumps(legacy_payload(changes)))
    assert [(n.realm_id, n.entity, n.entity_id, n.operation) for n in notices] == [
        (REALM, "Invoice", "130", "Update"),
        (REALM, "Invoice", "131", "Void"),
        (OTHER_REALM, "Customer", "5", "Create"),
    ]
    assert notices[1].last_updated == datetime.fromtimestamp(T0 + 1.5, UTC)


# -------------------------------------------------------------------- CloudEvents format


def cloudevent(kind: str, entity_id: str, realm: str = REALM, **extra: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"88cd52aa-33b6-4351-9aa4-47572edbd068-{entity_id}",
        "source": "intuit.dsnBgbseACLLRZNxo2dfc4evmEJdxde58xeeYcZliOU=",
        "type": kind,
        "datacontenttype": "application/json",
        "time": "2025-09-10T21:31:25.179851517Z",
        "intuitentityid": entity_id,
        "intuitaccountid": realm,
        "data": {},
        **extra,
    }


def test_cloudevents_batch_mixing_realms_entities_and_operations() -> None:
    body = dumps(
        [
            cloudevent("qbo.invoice.updated.v1", "130"),
            cloudevent("qbo.invoice.voided.v1", "131", OTHER_REALM),
            cloudevent("qbo.invoice.deleted.v1", "132"),
            cloudevent("qbo.customer.created.v1", "5", OTHER_REALM),
            cloudevent("qbo.invoice.emailed.v1", "133"),
        ]
    )
    at = datetime(2025, 9, 10, 21, 31, 25, 179851, UTC)  # nanoseconds truncated
    assert parse_notifications(body) == [
        ChangeNotice(REALM, "Invoice", "130", "Update", at),
        ChangeNotice(OTHER_REALM, "Invoice", "131", "Void", at),
        ChangeNotice(REALM, "Invoice", "132", "Delete", at),
        ChangeNotice(OTHER_REALM, "Customer", "5", "Create", at),
        ChangeNotice(REALM, "Invoice", "133", "Emailed", at),
    ]


def test_cloudevents_merge_carries_the_absorbed_id_in_data() -> None:
    # Intuit's "data objects" page: a customer merge, `intuitentityid` is the survivor.
    event = cloudevent("qbo.customer.merged.v1", "123", time="2025-12-04T15:25:05Z")
    event["data"] = {"deletedid": "27"}
    [notice] = parse_notifications(dumps([event]))
    assert notice == ChangeNotice(
        REALM, "Customer", "123", "Merge", datetime(2025, 12, 4, 15, 25, 5, tzinfo=UTC), "27"
    )


def test_cloudevent_without_data_or_content_type_is_fine() -> None:
    # Intuit's sales-receipt sample has neither `datacontenttype` nor `data`.
    event = cloudevent("qbo.invoice.updated.v1", "150", time="2026-03-17T16:19:17Z")
    del event["data"], event["datacontenttype"]
    [notice] = parse_notifications(dumps([event]))
    assert (notice.entity_id, notice.operation, notice.deleted_id) == ("150", "Update", None)


def test_a_single_structured_cloudevent_is_accepted() -> None:
    [notice] = parse_notifications(dumps(cloudevent("qbo.invoice.created.v1", "1")))
    assert notice.operation == "Create"


def test_unknown_cloudevent_types_are_ignored_and_logged() -> None:
    body = dumps(
        [
            cloudevent("qbo.payment.created.v1", "9"),
            cloudevent("qbo.employee.created.v1", "000000011"),
            cloudevent("qbo.invoice.archived.v1", "1"),
            cloudevent("qbo.invoice.updated.v2", "2"),
            cloudevent("com.example.other", "3"),
            cloudevent("QBO.Invoice.Updated.v1", "4"),
        ]
    )
    with capture_logs() as logs:
        notices = parse_notifications(body)
    assert [(n.entity_id, n.operation) for n in notices] == [("4", "Update")]
    assert logs[0]["events"] == {
        "qbo.payment.created.v1": 1,
        "qbo.employee.created.v1": 1,
        "qbo.invoice.archived.v1": 1,
        "qbo.invoice.updated.v2": 1,
        "com.example.other": 1,
    }


def test_what_the_emulator_sends_in_the_cloudevents_format() -> None:
    changes = [
        (REALM, Change(1, T0, "Invoice", "130", "Update")),
        (OTHER_REALM, Change(2, T0 + 0.25, "Invoice", "131", "Delete")),
    ]
    body = dumps(cloudevents_payload(changes, cloudevents_source("client")))
    assert parse_notifications(body) == [
        ChangeNotice(REALM, "Invoice", "130", "Update", datetime.fromtimestamp(T0, UTC)),
        ChangeNotice(
            OTHER_REALM, "Invoice", "131", "Delete", datetime.fromtimestamp(T0 + 0.25, UTC)
        ),
    ]


@pytest.mark.parametrize(
    ("time", "expected"),
    [
        ("2025-09-10T21:31:25Z", datetime(2025, 9, 10, 21, 31, 25, tzinfo=UTC)),
        ("2025-09-10T14:31:25-07:00", datetime(2025, 9, 10, 21, 31, 25, tzinfo=UTC)),
        ("2025-09-10T21:31:25", None),  # no zone: no guess
        ("yesterday", None),
        (1757539885, None),
    ],
)
def test_change_time_is_a_hint_and_odd_values_become_none(
    time: Any, expected: datetime | None
) -> None:
    [notice] = parse_notifications(dumps([cloudevent("qbo.invoice.updated.v1", "1", time=time)]))
    assert notice.last_updated == expected


# ---------------------------------------------------------------------------- malformed


@pytest.mark.parametrize(
    ("body", "code", "reason"),
    [
        (b"", "not_json", "not JSON"),
        (b"{not json", "not_json", "not JSON"),
        (b"\xff\xfe\x00", "not_json", "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not_json", "not JSON"),
        (b'"hello"', "shape", "expected a CloudEvents array"),
        (b'{"events": []}', "shape", "expected a CloudEvents array"),
        (b'{"eventNotifications": {}}', "shape", "eventNotifications must be an array"),
    ],
)
def test_an_unreadable_body_is_one_rejection_with_a_reason(
    body: bytes, code: str, reason: str
) -> None:
    delivery = parse_delivery(body)
    assert delivery.notices == []
    [rejected] = delivery.rejected
    assert (rejected.where, rejected.code) == ("body", code)
    assert reason in rejected.reason


GOOD_LEGACY_ITEM = {"name": "Invoice", "id": "7", "operation": "Update"}


def legacy_body(*notifications: Any) -> bytes:
    return dumps({"eventNotifications": list(notifications)})


def realm_notification(*entities: Any, realm: Any = REALM) -> dict[str, Any]:
    return {"realmId": realm, "dataChangeEvent": {"entities": list(entities)}}


@pytest.mark.parametrize(
    ("bad", "where", "code", "reason"),
    [
        (7, "eventNotifications[0]", "not_an_object", r"eventNotifications\[0\] must be an object"),
        (
            {"dataChangeEvent": {"entities": [GOOD_LEGACY_ITEM]}},
            "eventNotifications[0]",
            "bad_id",
            r"eventNotifications\[0\].realmId must be a QBO id",
        ),
        (
            {"realmId": "1", "dataChangeEvent": {}},
            "eventNotifications[0]",
            "shape",
            "entities must be an array",
        ),
        (
            realm_notification(GOOD_LEGACY_ITEM, realm="1; drop"),
            "eventNotifications[0]",
            "bad_id",
            "realmId must be a QBO id",
        ),
        (
            realm_notification({"name": "Invoice", "id": "1 OR 1=1", "operation": "Update"}),
            "eventNotifications[0].dataChangeEvent.entities[0]",
            "bad_id",
            r"entities\[0\].id must be a QBO id",
        ),
        (
            realm_notification({"id": "1", "operation": "Update"}),
            "eventNotifications[0].dataChangeEvent.entities[0]",
            "missing_field",
            r"entities\[0\].name must be a non-empty string",
        ),
        (
            realm_notification("Invoice 1"),
            "eventNotifications[0].dataChangeEvent.entities[0]",
            "not_an_object",
            "must be an object",
        ),
        (
            realm_notification(
                {"name": "Customer", "id": "1", "operation": "Merge", "deletedId": [2]}
            ),
            "eventNotifications[0].dataChangeEvent.entities[0]",
            "bad_id",
            "deletedId must be a QBO id",
        ),
    ],
)
def test_a_malformed_legacy_event_is_rejected_and_its_neighbours_kept(
    bad: Any, where: str, code: str, reason: str
) -> None:
    # The bad part first, then a good item in the same realm and a good realm after it.
    if isinstance(bad, dict) and "dataChangeEvent" in bad and bad.get("realmId") == REALM:
        bad["dataChangeEvent"]["entities"].append(GOOD_LEGACY_ITEM)
    body = legacy_body(bad, realm_notification(GOOD_LEGACY_ITEM, realm=OTHER_REALM))
    delivery = parse_delivery(body)
    [rejected] = delivery.rejected
    assert (rejected.where, rejected.code) == (where, code)
    assert re.search(reason, rejected.reason)
    expected = [ChangeNotice(OTHER_REALM, "Invoice", "7", "Update", None)]
    if where.endswith("]") and "entities" in where:  # only the item: its realm's others stay
        expected.insert(0, ChangeNotice(REALM, "Invoice", "7", "Update", None))
    assert delivery.notices == expected


@pytest.mark.parametrize(
    ("bad", "code", "reason"),
    [
        (1, "not_an_object", r"\[0\] must be an object"),
        ({"intuitentityid": "1", "intuitaccountid": "1"}, "missing_field", r"\[0\].type must be"),
        (
            {"type": "qbo.invoice.updated.v1", "intuitentityid": "1"},
            "bad_id",
            r"\[0\].intuitaccountid must be a QBO id",
        ),
        (
            {"type": "qbo.invoice.updated.v1", "intuitentityid": 1, "intuitaccountid": "1"},
            "bad_id",
            r"\[0\].intuitentityid must be a QBO id",
        ),
        (
            {
                "type": "qbo.customer.merged.v1",
                "intuitentityid": "1",
                "intuitaccountid": "1",
                "data": {"deletedid": "x"},
            },
            "bad_id",
            r"\[0\].data.deletedid must be a QBO id",
        ),
    ],
)
def test_a_malformed_cloudevent_is_rejected_and_the_rest_of_the_array_kept(
    bad: Any, code: str, reason: str
) -> None:
    good = cloudevent("qbo.invoice.updated.v1", "130")
    delivery = parse_delivery(dumps([bad, good, good | {"intuitentityid": "131"}]))
    [rejected] = delivery.rejected
    assert (rejected.where, rejected.code) == ("[0]", code)
    assert re.search(reason, rejected.reason)
    assert [n.entity_id for n in delivery.notices] == ["130", "131"]


def test_a_single_malformed_structured_cloudevent_is_one_rejection() -> None:
    delivery = parse_delivery(dumps({"specversion": "1.0", "type": "qbo.invoice.updated.v1"}))
    assert delivery.notices == []
    assert [r.code for r in delivery.rejected] == ["bad_id"]


def test_every_malformed_event_of_a_delivery_is_reported() -> None:
    good = cloudevent("qbo.invoice.updated.v1", "130")
    delivery = parse_delivery(dumps([{}, good, "x", good | {"intuitaccountid": "no"}]))
    assert [(r.where, r.code) for r in delivery.rejected] == [
        ("[0]", "missing_field"),
        ("[2]", "not_an_object"),
        ("[3]", "bad_id"),
    ]
    assert all(isinstance(r, RejectedEvent) and r.reason for r in delivery.rejected)
    assert [n.entity_id for n in delivery.notices] == ["130"]


def test_empty_batches_are_valid() -> None:
    assert parse_delivery(b"[]").rejected == []
    assert parse_delivery(b'{"eventNotifications": []}') == parse_delivery(b"[]")
    assert parse_notifications(b"[]") == []


# ----------------------------------------------------------------------------- grouping


def test_one_command_per_realm_with_its_changes_in_order() -> None:
    at = datetime(2026, 11, 25, 8, 29, 58, 657000, UTC)
    commands = group_into_commands(
        [
            invoice("130", "Update", at=at),
            invoice("7", "Delete", OTHER_REALM),
            ChangeNotice(REALM, "Customer", "58", "Merge", None, "27"),
            invoice("131", "Void", at=at.replace(microsecond=179851)),
        ],
        correlation_id="webhook:abc",
    )
    assert [(c.realm_id, c.issued_by, c.correlation_id) for c in commands] == [
        (REALM, "webhook", "webhook:abc"),
        (OTHER_REALM, "webhook", "webhook:abc"),
    ]
    assert commands[0].changes == (
        EntityChange(
            entity="Invoice", id="130", operation="Update", last_updated="2026-11-25T08:29:58.657Z"
        ),
        EntityChange(
            entity="Customer", id="58", operation="Merge", last_updated=None, deleted_id="27"
        ),
        EntityChange(
            entity="Invoice",
            id="131",
            operation="Void",
            last_updated="2026-11-25T08:29:58.179851Z",
        ),
    )
    assert commands[1].changes == (
        EntityChange(entity="Invoice", id="7", operation="Delete", last_updated=None),
    )


def test_commands_are_valid_and_survive_the_commands_topic() -> None:
    [command] = group_into_commands(
        [
            invoice("1", "Update", at=datetime(2026, 1, 1, tzinfo=UTC)),
            ChangeNotice(REALM, "Customer", "58", "Merge", None, "27"),
        ]
    )
    assert command.kafka_key() == REALM.encode()
    assert parse_command(command.to_bytes()) == command
    update, merge = command.to_dict()["changes"]
    assert update == {
        "entity": "Invoice",
        "id": "1",
        "operation": "Update",
        "last_updated": "2026-01-01T00:00:00Z",
    }
    assert merge == {
        "entity": "Customer",
        "id": "58",
        "operation": "Merge",
        "last_updated": None,
        "deleted_id": "27",
    }


def test_duplicates_within_a_post_are_kept_once_with_the_latest_time() -> None:
    early = datetime(2026, 1, 1, 10, tzinfo=UTC)
    late = datetime(2026, 1, 1, 11, tzinfo=UTC)
    [command] = group_into_commands(
        [
            invoice("1", "Update", at=early),
            invoice("2", "Update", at=early),
            invoice("1", "Update", at=late),
            invoice("1", "Update", at=early),
            invoice("1", "Update"),
            invoice("1", "Delete", at=late),  # another operation is another change
        ]
    )
    assert [(c.id, c.operation, c.last_updated) for c in command.changes] == [
        ("1", "Update", "2026-01-01T11:00:00Z"),
        ("2", "Update", "2026-01-01T10:00:00Z"),
        ("1", "Delete", "2026-01-01T11:00:00Z"),
    ]


def test_large_batches_are_split_into_commands_of_at_most_1000_changes() -> None:
    notices = [invoice(str(i), "Update") for i in range(2 * MAX_CHANGES_PER_COMMAND + 500)]
    notices.append(invoice("1", "Update", OTHER_REALM))
    commands = group_into_commands(notices)
    assert [(c.realm_id, len(c.changes)) for c in commands] == [
        (REALM, 1000),
        (REALM, 1000),
        (REALM, 500),
        (OTHER_REALM, 1),
    ]
    assert [int(c.id) for cmd in commands[:3] for c in cmd.changes] == list(range(2500))
    for command in commands:
        command.to_bytes()  # within the schema's maxItems


def test_only_synced_entities_become_changes_and_cdc_can_reuse_the_grouping() -> None:
    notices = [
        ChangeNotice(REALM, "Payment", "9", "Create", None),
        ChangeNotice(REALM, "Customer", "3", "Update", None),
    ]
    [command] = group_into_commands(notices, issued_by="cdc")
    assert command.issued_by == "cdc"
    assert [c.entity for c in command.changes] == ["Customer"]
    assert group_into_commands([]) == []


# --------------------------------------------------------------------------------- HTTP


class Publisher:
    def __init__(self, error: Exception | None = None, delay_s: float = 0.0) -> None:
        self.batches: list[list[Command]] = []
        self.error = error
        self.delay_s = delay_s

    async def __call__(self, commands: Sequence[Command]) -> None:
        await asyncio.sleep(self.delay_s)
        if self.error is not None:
            raise self.error
        self.batches.append(list(commands))


def make_client(publisher: Publisher, **options: Any) -> httpx.AsyncClient:
    app = Starlette(routes=webhook_routes(TOKEN, publisher, **options))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sync")


@pytest.fixture
async def published() -> AsyncIterator[tuple[Publisher, httpx.AsyncClient]]:
    publisher = Publisher()
    async with make_client(publisher) as client:
        yield publisher, client


def signed(body: bytes, token: str = TOKEN) -> dict[str, str]:
    return {"intuit-signature": sign(body, token), "content-type": "application/json"}


ONE_UPDATE = dumps([cloudevent("qbo.invoice.updated.v1", "130")])


async def test_a_signed_delivery_is_published_then_acknowledged(
    published: tuple[Publisher, httpx.AsyncClient],
) -> None:
    publisher, client = published
    body = dumps(
        [
            cloudevent("qbo.invoice.updated.v1", "130"),
            cloudevent("qbo.invoice.updated.v1", "130"),
            cloudevent("qbo.invoice.voided.v1", "131", OTHER_REALM),
            cloudevent("qbo.payment.created.v1", "9"),
        ]
    )
    response = await client.post(WEBHOOK_PATH, content=body, headers=signed(body))
    assert response.status_code == 200
    assert response.json() == {"accepted": 2, "commands": 2}
    [batch] = publisher.batches
    assert all(isinstance(c, SyncChanges) for c in batch)
    assert [c.realm_id for c in batch] == [REALM, OTHER_REALM]
    assert batch[0].correlation_id == batch[1].correlation_id
    assert (batch[0].correlation_id or "").startswith("webhook:")


async def test_nothing_to_sync_is_acknowledged_without_publishing(
    published: tuple[Publisher, httpx.AsyncClient],
) -> None:
    publisher, client = published
    body = dumps([cloudevent("qbo.payment.created.v1", "9")])
    response = await client.post(WEBHOOK_PATH, content=body, headers=signed(body))
    assert (response.status_code, response.json()) == (200, {"accepted": 0, "commands": 0})
    assert publisher.batches == []


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"intuit-signature": sign(ONE_UPDATE, "another-app's-token")},
        {"intuit-signature": sign(ONE_UPDATE + b" ", TOKEN)},
        {"intuit-signature": "%%%not-base64%%%"},
    ],
    ids=["missing", "wrong-token", "other-body", "garbage"],
)
async def test_a_bad_signature_is_401_and_publishes_nothing(
    published: tuple[Publisher, httpx.AsyncClient], headers: dict[str, str]
) -> None:
    publisher, client = published
    response = await client.post(WEBHOOK_PATH, content=ONE_UPDATE, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_signature"
    assert publisher.batches == []


async def test_a_signed_delivery_with_a_malformed_event_syncs_the_rest_and_answers_200() -> None:
    publisher, counts = Publisher(), Counter[str]()
    body = dumps(
        [
            cloudevent("qbo.invoice.updated.v1", "130"),
            {"type": "qbo.invoice.updated.v1", "intuitaccountid": REALM, "intuitentityid": "x"},
            "not an event",
        ]
    )
    async with make_client(publisher, rejections=counts) as client:
        with capture_logs() as logs:
            response = await client.post(WEBHOOK_PATH, content=body, headers=signed(body))
    assert response.status_code == 200
    answer = response.json()
    assert (answer["accepted"], answer["commands"], answer["rejected_count"]) == (1, 1, 2)
    assert [r["where"] for r in answer["rejected"]] == ["[1]", "[2]"]
    [[command]] = publisher.batches
    assert isinstance(command, SyncChanges)
    assert [c.id for c in command.changes] == ["130"]
    assert counts == Counter({"bad_id": 1, "not_an_object": 1})
    rejected = [e for e in logs if e["event"] == "webhook.event_rejected"]
    assert [(e["where"], e["code"]) for e in rejected] == [
        ("[1]", "bad_id"),
        ("[2]", "not_an_object"),
    ]
    assert all(e["log_level"] == "warning" and e["reason"] for e in rejected)


@pytest.mark.parametrize(
    "body", [b'{"eventNotifications": "soon"}', b"{not json", b'"hello"'], ids=repr
)
async def test_a_signed_but_unreadable_body_is_200_counted_and_publishes_nothing(
    body: bytes,
) -> None:
    # Intuit sends a delivery again until it gets a 2xx: the same bytes could never be read.
    publisher, counts = Publisher(), Counter[str]()
    async with make_client(publisher, rejections=counts) as client:
        response = await client.post(WEBHOOK_PATH, content=body, headers=signed(body))
    assert response.status_code == 200
    answer = response.json()
    assert (answer["accepted"], answer["rejected_count"], answer["rejected"][0]["where"]) == (
        0,
        1,
        "body",
    )
    assert sum(counts.values()) == 1
    assert publisher.batches == []


async def test_rejections_are_counted_once_a_delivery_is_answered_2xx() -> None:
    counts = Counter[str]()
    body = dumps([cloudevent("qbo.invoice.updated.v1", "130"), 5])
    failing = Publisher(error=ConnectionError("down"))
    async with make_client(failing, rejections=counts) as client:
        assert (
            await client.post(WEBHOOK_PATH, content=body, headers=signed(body))
        ).status_code == 503
    assert counts == Counter()  # Intuit will send it again: counted then
    async with make_client(Publisher(), rejections=counts) as client:
        assert (
            await client.post(WEBHOOK_PATH, content=body, headers=signed(body))
        ).status_code == 200
    assert counts == Counter({"not_an_object": 1})


async def test_a_bad_signature_still_refuses_a_delivery_with_malformed_events() -> None:
    publisher, counts = Publisher(), Counter[str]()
    body = dumps([cloudevent("qbo.invoice.updated.v1", "130"), 5])
    async with make_client(publisher, rejections=counts) as client:
        response = await client.post(
            WEBHOOK_PATH, content=body, headers=signed(body, "another-app's-token")
        )
    assert response.status_code == 401
    assert publisher.batches == [] and counts == Counter()


async def test_an_oversized_body_is_413_by_its_content_length() -> None:
    publisher = Publisher()
    body = dumps([cloudevent("qbo.invoice.updated.v1", str(i)) for i in range(40)])
    async with make_client(publisher, max_body_bytes=1024) as client:
        response = await client.post(WEBHOOK_PATH, content=body, headers=signed(body))
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert publisher.batches == []


async def test_an_oversized_body_is_413_when_streamed_without_a_length() -> None:
    publisher = Publisher()
    body = dumps([cloudevent("qbo.invoice.updated.v1", str(i)) for i in range(40)])

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 256):
            yield body[start : start + 256]

    async with make_client(publisher, max_body_bytes=1024) as client:
        response = await client.post(WEBHOOK_PATH, content=chunks(), headers=signed(body))
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert publisher.batches == []


async def test_a_body_at_the_limit_is_accepted() -> None:
    publisher = Publisher()
    async with make_client(publisher, max_body_bytes=len(ONE_UPDATE)) as client:
        response = await client.post(WEBHOOK_PATH, content=ONE_UPDATE, headers=signed(ONE_UPDATE))
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("publisher", "options"),
    [
        (Publisher(error=ConnectionError("broker 127.0.0.1:9092 down; internals")), {}),
        (Publisher(delay_s=1.0), {"publish_timeout_s": 0.05}),
    ],
    ids=["raises", "too-slow"],
)
async def test_publish_failure_is_503_so_intuit_retries(
    publisher: Publisher, options: dict[str, Any]
) -> None:
    async with make_client(publisher, **options) as client:
        with capture_logs() as logs:
            response = await client.post(
                WEBHOOK_PATH, content=ONE_UPDATE, headers=signed(ONE_UPDATE)
            )
    assert response.status_code == 503
    assert response.headers["Retry-After"].isdigit()
    assert response.json()["error"] == "unavailable"
    assert "internals" not in response.text
    assert publisher.batches == []
    assert any(e["event"] == "webhook.publish_failed" for e in logs)


async def test_only_post_is_served(published: tuple[Publisher, httpx.AsyncClient]) -> None:
    _, client = published
    assert (await client.get(WEBHOOK_PATH)).status_code == 405


async def test_logs_name_realms_and_counts_never_the_signature_or_token(
    published: tuple[Publisher, httpx.AsyncClient],
) -> None:
    _, client = published
    headers = signed(ONE_UPDATE)
    with capture_logs() as logs:
        await client.post(WEBHOOK_PATH, content=ONE_UPDATE, headers=headers)
        await client.post(WEBHOOK_PATH, content=ONE_UPDATE, headers={"intuit-signature": "AAAA"})
    accepted = next(e for e in logs if e["event"] == "webhook.accepted")
    assert (accepted["realm_ids"], accepted["changes"], accepted["commands"]) == ([REALM], 1, 1)
    assert any(e["event"] == "webhook.rejected" for e in logs)
    text = repr(logs)
    assert TOKEN not in text
    assert headers["intuit-signature"] not in text
    assert "AAAA" not in text


def test_an_empty_verifier_token_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="verifier token is empty"):
        webhook_routes("", Publisher())
