"""The OpenAPI document is well-formed and covers every route the app serves."""

from __future__ import annotations

import re

from jsonschema import Draft202012Validator

from services.api.auth import ApiTokens
from services.api.models import LOCAL_CUSTOMER_ID_PATTERN
from services.api.openapi import OPENAPI
from services.api.routes import RouteContext, api_routes
from services.common.schemas import default_schemas


def test_component_schemas_are_valid_json_schema_2020_12() -> None:
    assert OPENAPI["openapi"].startswith("3.1.")
    for schema in OPENAPI["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)


def test_every_route_is_documented_with_its_methods() -> None:
    ctx = RouteContext(
        tokens=ApiTokens.of(["t"]),
        invoices=None,  # type: ignore[arg-type]
        sync_records=None,  # type: ignore[arg-type]
        commands=None,  # type: ignore[arg-type]
        publications=None,  # type: ignore[arg-type]
        producer=None,  # type: ignore[arg-type]
        metrics=None,  # type: ignore[arg-type]
        commands_topic="t",
        sync_public_url="http://x",
        links=None,  # type: ignore[arg-type]
        clock=None,  # type: ignore[arg-type]
        ping_mongo=None,  # type: ignore[arg-type]
    )
    served = {
        (r.path, m.lower()) for r in api_routes(ctx) for m in (r.methods or ()) if m != "HEAD"
    }
    documented = {(p, m) for p, ops in OPENAPI["paths"].items() for m in ops}
    assert served == documented


def test_every_api_route_needs_the_bearer_token() -> None:
    for path, operations in OPENAPI["paths"].items():
        for operation in operations.values():
            secured = operation.get("security") == [{"bearerAuth": []}]
            assert secured is path.startswith("/api/"), path
            if secured:
                assert "401" in operation["responses"], path


def test_customer_id_pattern_is_the_one_of_the_message_contracts() -> None:
    common = default_schemas().validators["common.v1"].schema
    assert common["$defs"]["localCustomerId"]["pattern"] == LOCAL_CUSTOMER_ID_PATTERN
    assert re.fullmatch(LOCAL_CUSTOMER_ID_PATTERN, "acme:o-brien@x.y_1")
