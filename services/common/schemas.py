"""JSON Schema validation of messages against the contracts in `schemas/`.

Both services validate what they produce and what they consume, so a malformed message is
caught at the edge with a readable reason (and, for consumers, sent to the dead-letter topic)
instead of failing deep inside a handler.

Every message is checked twice over only when it is invalid: a compiled validator
(`jsonschema_rs`, a few microseconds an event) answers whether it is valid, and only a message it
refuses goes through the reference validator (`jsonschema`, ~0.3 ms an event), which decides and
words the reason. Validating every event with the reference validator alone was most of the sync
worker's CPU per stored invoice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource


def _contracts() -> Path:
    """The `schemas` package's folder: the repository's `schemas/` in a checkout or an editable
    install, the installed copy otherwise (the contracts are its package data)."""
    found = resources.files("schemas")
    if not isinstance(found, Path):
        raise RuntimeError(f"the schemas package must be installed as files, not {found!r}")
    return found


SCHEMAS_DIR = _contracts()

# Command "type" -> schema name; the commands topic carries several kinds of command.
COMMAND_SCHEMAS: Mapping[str, str] = {
    "RefreshInvoices": "refresh-invoices.v1",
    "MapCustomer": "map-customer.v1",
    "SyncChanges": "sync-changes.v1",
}
INVOICE_UPDATED = "invoice-updated.v1"


class MessageInvalid(ValueError):
    """A message does not match its contract. `reason` is safe to log and to dead-letter."""

    def __init__(self, schema: str, reason: str, path: str = "") -> None:
        self.schema = schema
        self.reason = reason
        self.path = path
        where = f" at {path}" if path else ""
        super().__init__(f"{schema}: {reason}{where}")


@dataclass(frozen=True)
class SchemaSet:
    validators: Mapping[str, Draft202012Validator]
    # Compiled twins of `validators`, same schemas and formats: the fast "is it valid?" answer.
    compiled: Mapping[str, Any] = field(default_factory=dict)

    def names(self) -> list[str]:
        return sorted(self.validators)

    def validate(self, name: str, document: Any) -> None:
        validator = self.validators.get(name)
        if validator is None:
            raise MessageInvalid(name, "unknown schema")
        fast = self.compiled.get(name)
        if fast is not None and fast.is_valid(document):
            return
        # The reference validator has the last word: a message is refused only if it refuses it.
        error = best_match(validator.iter_errors(document))
        if error is not None:
            path = "/" + "/".join(str(p) for p in error.absolute_path)
            raise MessageInvalid(name, _short(error.message), path if path != "/" else "")

    def validate_command(self, document: Any) -> str:
        """Validate a command of any kind; returns its type."""
        if not isinstance(document, dict):
            raise MessageInvalid("command", "a command must be a JSON object")
        kind = document.get("type")
        name = COMMAND_SCHEMAS.get(kind) if isinstance(kind, str) else None
        if name is None:
            known = ", ".join(sorted(COMMAND_SCHEMAS))
            raise MessageInvalid("command", f"unknown command type {kind!r} (known: {known})")
        self.validate(name, document)
        return str(kind)


def _short(message: str, limit: int = 300) -> str:
    # jsonschema quotes the whole offending instance; a 5 MB payload must not become a 5 MB reason.
    return message if len(message) <= limit else message[: limit - 3] + "..."


def load_schemas(directory: Path = SCHEMAS_DIR) -> SchemaSet:
    """Load every `*.schema.json` below `directory`, resolving `$ref`s between them by `$id`."""
    resources: list[tuple[str, Resource[Any]]] = []
    by_name: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.rglob("*.schema.json")):
        contents = json.loads(path.read_text())
        Draft202012Validator.check_schema(contents)
        resources.append((contents["$id"], Resource.from_contents(contents)))
        by_name[path.name.removesuffix(".schema.json")] = contents
    registry: Registry[Any] = Registry().with_resources(resources)
    compiled_registry = jsonschema_rs.Registry([(uri, r.contents) for uri, r in resources])
    return SchemaSet(
        {
            name: Draft202012Validator(
                schema, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER
            )
            for name, schema in by_name.items()
        },
        {
            name: jsonschema_rs.Draft202012Validator(
                schema, registry=compiled_registry, validate_formats=True
            )
            for name, schema in by_name.items()
        },
    )


@lru_cache(maxsize=1)
def default_schemas() -> SchemaSet:
    return load_schemas()
