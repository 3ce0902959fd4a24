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


def _mutations(document: dict[str, object]) -> list[dict[str, object]]:
    """Off-contract variants of a valid event: each breaks one rule of the schema."""
    data = document["data"]
    assert isinstance(data, dict)
    broken_data = [
        {**data, "total_amt": "12.50"},
        {**data, "invoice_id": "12a"},
        {**data, "due_date": "2026-02-30"},
        {**data, "currency": "usd"},
        {**data, "version": -1},
        {**data, "extra": 1},
        {**data, "last_updated_time": "2026-12-02 10:00:00"},
        {k: v for k, v in data.items() if k != "balance"},
    ]
    return [
        *({**document, "data": d} for d in broken_data),
        {**document, "time": "yesterday"},
        {**document, "specversion": "0.3"},
        {**document, "id": "invoice/1/2/3"},
    ]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fast_and_reference_validators_agree_on_every_example(path: Path) -> None:
    # `validate` trusts the compiled validator's "valid": it must never accept what the
    # reference validator refuses.
    document = jsoncodec.loads(path.read_bytes())
    schemas = default_schemas()
    name = path.parent.name
    reference_ok = not list(schemas.validators[name].iter_errors(document))
    assert schemas.compiled[name].is_valid(document) is reference_ok


def test_fast_validator_refuses_every_broken_event() -> None:
    schemas = default_schemas()
    valid = jsoncodec.loads(
        (SCHEMAS_DIR / "examples/invoice-updated.v1/valid-open.json").read_bytes()
    )
    for broken in _mutations(valid):
        assert list(schemas.validators["invoice-updated.v1"].iter_errors(broken)), broken
        assert not schemas.compiled["invoice-updated.v1"].is_valid(broken), broken
        with pytest.raises(MessageInvalid):
            schemas.validate("invoice-updated.v1", broken)
