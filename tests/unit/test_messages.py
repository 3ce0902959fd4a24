from __future__ import annotations

import pytest

from services.common.messages import MapCustomer, RefreshInvoices, parse_command
from services.common.schemas import MessageInvalid


def test_refresh_command_round_trips_and_is_keyed_by_realm() -> None:
    command = RefreshInvoices(realm_id="9130350000000001", issued_by="api", local_customer_id="c-9")
    assert parse_command(command.to_bytes()) == command
    assert command.kafka_key() == b"9130350000000001"


def test_map_customer_keeps_an_apostrophe_name() -> None:
    command = MapCustomer(
        realm_id="1", issued_by="service:crm", local_customer_id="c", display_name="O'Brien"
    )
    parsed = parse_command(command.to_bytes())
    assert isinstance(parsed, MapCustomer)
    assert parsed.display_name == "O'Brien"


def test_invalid_command_is_refused_before_it_is_produced() -> None:
    bad = RefreshInvoices(realm_id="not-a-realm", issued_by="api", local_customer_id="c")
    with pytest.raises(MessageInvalid, match="realm_id"):
        bad.to_bytes()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "tombstone"),
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"type": "RefreshInvoices"}', "required property"),
    ],
)
def test_poison_records_get_a_clear_reason(raw: bytes | None, reason: str) -> None:
    with pytest.raises(MessageInvalid, match=reason):
        parse_command(raw)
