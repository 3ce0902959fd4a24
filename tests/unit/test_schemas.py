"""Every example in schemas/examples/<schema>/ is checked against its schema: `valid-*` files
must pass and `invalid-*` files must fail, so the examples document the contract truthfully."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common import jsoncodec
from services.common.schemas import SCHEMAS_DIR, MessageInvalid, default_schemas

EXAMPLES = sorted((SCHEMAS_DIR / "examples").rglob("*.json"))


def test_every_message_schema_has_valid_and_invalid_examples() -> None:
    names = {p.parent.name for p in EXAMPLES}
    assert names == {
        "refresh-invoices.v1",
        "map-customer.v1",
        "invoice-updated.v1",
        "sync-changes.v1",
    }
    for name in names:
        kinds = {p.name.split("-")[0] for p in EXAMPLES if p.parent.name == name}
        assert kinds == {"valid", "invalid"}, name


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_example_matches_its_verdict(path: Path) -> None:
    document = jsoncodec.loads(path.read_bytes())
    schemas = default_schemas()
    if path.name.startswith("valid-"):
        schemas.validate(path.parent.name, document)
    else:
        with pytest.raises(MessageInvalid):
            schemas.validate(path.parent.name, document)


def test_unknown_command_type_is_named_in_the_error() -> None:
    with pytest.raises(MessageInvalid, match="unknown command type 'DeleteEverything'"):
        default_schemas().validate_command({"type": "DeleteEverything"})


def test_reason_points_at_the_offending_field() -> None:
    with pytest.raises(MessageInvalid) as caught:
        default_schemas().validate(
            "refresh-invoices.v1",
            {
                "type": "RefreshInvoices",
                "command_id": "4f7c2a9e-1b3d-4c5e-8f60-7a8b9c0d1e2f",
                "realm_id": "1",
                "issued_at": "yesterday",
                "issued_by": "api",
                "local_customer_id": "c",
            },
        )
    assert caught.value.path == "/issued_at"


def test_huge_invalid_value_gives_a_short_reason() -> None:
    with pytest.raises(MessageInvalid) as caught:
        default_schemas().validate(
            "map-customer.v1",
            {"type": "MapCustomer", "display_name": "x" * 100_000},
        )
    assert len(str(caught.value)) < 600
