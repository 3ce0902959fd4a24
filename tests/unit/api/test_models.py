"""The api's models: the one source of the OpenAPI components, and of request validation."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from services.api import models
from services.api.openapi import OPENAPI, component_schemas
from services.api.responses import invalid_body


def test_the_components_are_the_models_and_the_models_they_reference() -> None:
    schemas = OPENAPI["components"]["schemas"]
    published = {m.__name__ for m in (*models.RESPONSES, *models.REQUESTS)}
    referenced = {"Invoice", "Totals", "Page", "CommandResult", "CustomerMapping", "Connection"}
    assert set(schemas) == published | referenced | {"ReadinessChecks"}
    for model in (models.Invoice, models.Command, models.CustomerMapping, models.Connection):
        schema = schemas[model.__name__]
        # Members in wire order; those without a default always written, so required.
        assert list(schema["properties"]) == list(model.model_fields)
        always = [name for name, f in model.model_fields.items() if f.is_required()]
        assert schema["required"] == always
        assert schema["additionalProperties"] is False
    assert "resumes_at" not in schemas["Command"]["required"]


def test_two_different_models_of_one_name_are_refused() -> None:
    first = type("Twin", (models.Body,), {"__annotations__": {"a": int}})
    second = type("Twin", (models.Body,), {"__annotations__": {"b": str}})
    with pytest.raises(ValueError, match="Twin"):
        component_schemas(responses=(first,), requests=(second,))


@pytest.mark.parametrize(
    ("body", "member"),
    [
        ({"correlation_id": None}, "correlation_id"),
        ({"correlation_id": 5}, "correlation_id"),
        ({"correlation_id": ""}, "correlation_id"),
        ({"correlation_id": "x" * 129}, "correlation_id"),
        ({"realm_id": "1"}, "realm_id"),
    ],
)
def test_a_refused_refresh_body_is_a_400_naming_the_member(
    body: dict[str, Any], member: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        models.RefreshRequest.model_validate(body)
    error = invalid_body(refused.value)
    assert (error.status, error.code) == (400, "bad_request")
    assert error.message.startswith(f"{member}: ")


def test_a_refresh_body_may_be_empty_or_name_a_correlation_id() -> None:
    assert models.RefreshRequest.model_validate({}).correlation_id is None
    assert models.RefreshRequest.model_validate({"correlation_id": "c-1"}).correlation_id == "c-1"
    # Absent, never null: the document gives no default a client could send back.
    schema = OPENAPI["components"]["schemas"]["RefreshRequest"]
    assert schema["properties"]["correlation_id"] == {
        "type": "string",
        "minLength": 1,
        "maxLength": 128,
    }
    assert schema["additionalProperties"] is False


def test_an_optional_member_is_written_only_when_set() -> None:
    fields: dict[str, Any] = {
        "command_id": "4f7c2a9e-1b3d-4c5e-8f60-7a8b9c0d1e2f",
        "type": "RefreshInvoices",
        "realm_id": "1",
        "local_customer_id": None,
        "status": "running",
        "reason": None,
        "issued_at": None,
        "issued_by": None,
        "queued_at": None,
        "started_at": None,
        "finished_at": None,
        "attempts": 0,
        "result": {"fetched": 2},
    }
    running = models.Command.model_validate(fields).wire()
    assert "resumes_at" not in running
    assert running["result"] == {"fetched": 2}
    throttled = models.Command.model_validate({**fields, "resumes_at": None}).wire()
    assert throttled["resumes_at"] is None
