"""The AsyncAPI document of the Kafka topics: generated from `schemas/`, committed, consistent."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import validators

from services.common.asyncapi import DOCUMENT_PATH, build_document, render
from services.common.kafka import topics_for
from services.common.schemas import default_schemas
from services.common.settings import Settings

DOCUMENT: dict[str, Any] = json.loads(DOCUMENT_PATH.read_text())
# The AsyncAPI 3.0.0 JSON Schema as the AsyncAPI Initiative publishes it (npm package
# @asyncapi/specs 6.11.1, schemas/3.0.0-without-$id.json, Apache-2.0), kept here so the check
# needs no network.
SPEC_SCHEMA = Path(__file__).parents[1] / "fixtures" / "asyncapi-3.0.0.schema.json.gz"


def _resolve(pointer: str) -> Any:
    node: Any = DOCUMENT
    for part in pointer.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def test_the_committed_document_is_what_the_schemas_generate() -> None:
    # Regenerate with `python -m services.common.asyncapi` after changing a schema or example.
    assert DOCUMENT_PATH.read_text() == render(build_document())


def test_it_is_a_valid_asyncapi_3_document_with_the_three_topics() -> None:
    spec = json.loads(gzip.decompress(SPEC_SCHEMA.read_bytes()))
    errors = list(validators.validator_for(spec)(spec).iter_errors(DOCUMENT))
    assert errors == [], [e.message[:200] for e in errors]
    assert DOCUMENT["asyncapi"] == "3.0.0"
    addresses = {channel["address"] for channel in DOCUMENT["channels"].values()}
    assert addresses == {spec.name for spec in topics_for(Settings())}
    for operation in DOCUMENT["operations"].values():
        assert operation["action"] in {"send", "receive"}
        channel_ref = operation["channel"]["$ref"]
        for message in operation["messages"]:
            assert message["$ref"].startswith(channel_ref + "/messages/")


def test_every_reference_resolves() -> None:
    refs = _refs(DOCUMENT)
    assert refs
    for ref in refs:
        if ref.startswith("#/"):
            assert _resolve(ref) is not None, ref
        else:
            target = (DOCUMENT_PATH.parent / ref).resolve()
            assert target.is_file(), ref


@pytest.mark.parametrize("name", sorted(DOCUMENT["components"]["messages"]))
def test_every_example_message_validates_against_its_schema(name: str) -> None:
    message = DOCUMENT["components"]["messages"][name]
    schema_ref = message["payload"].get("schema", {}).get("$ref")
    if schema_ref is None:
        assert name == "DeadLetter"  # raw bytes: no schema, headers only
        assert set(message["headers"]["required"]) >= {"dlq.reason", "dlq.topic"}
        return
    schema_name = Path(schema_ref).name.removesuffix(".schema.json")
    assert message["examples"], f"{name} has no example"
    for example in message["examples"]:
        default_schemas().validate(schema_name, example["payload"])
