"""The AsyncAPI 3.0 document of the Kafka topics, generated from the contracts in `schemas/`.

The JSON Schemas are the one source of each message's shape (`x-kafka-topic` and
`x-kafka-key` say where it travels); this module only arranges them as AsyncAPI channels,
operations and messages, with the valid examples of `schemas/examples/` attached, so Kafka
consumers get what OpenAPI gives HTTP clients. `docs/asyncapi.json` is its output, and a test
fails when the committed file drifts from what the schemas say.

    python -m services.common.asyncapi            # rewrite docs/asyncapi.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from services.common.schemas import SCHEMAS_DIR
from services.common.settings import Settings

DOCUMENT_PATH = SCHEMAS_DIR.parent / "docs" / "asyncapi.json"
SCHEMA_FORMAT = "application/schema+json;version=draft-2020-12"

# Headers the sync worker and the api's projector put on a dead letter (the value is the
# original record's bytes, unchanged, under the original key).
DEAD_LETTER_HEADERS: dict[str, str] = {
    "dlq.reason": "why the record can never be processed, readable by a person",
    "dlq.error_type": "the kind of failure (e.g. MessageInvalid)",
    "dlq.topic": "the topic the record was read from",
    "dlq.partition": "its partition there",
    "dlq.offset": "its offset there",
}
# Headers every producer adds while tracing is on, none when off (docs/design.md, "Operators:
# metrics and traces").
TRACE_CONTEXT_HEADERS: dict[str, str] = {
    "traceparent": "W3C trace context of the span that produced the record (tracing on only)",
    "tracestate": "the W3C tracestate that came with it, if any",
}


def _headers(described: dict[str, str], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            name: {"type": "string", "description": why} for name, why in described.items()
        },
        "required": required,
    }


def _channel_id(topic: str) -> str:
    return "".join(part.capitalize() for part in topic.replace("-", ".").split("."))


def _examples(name: str) -> list[dict[str, Any]]:
    folder = SCHEMAS_DIR / "examples" / name
    return [
        {"name": path.stem, "payload": json.loads(path.read_text())}
        for path in sorted(folder.glob("valid-*.json"))
    ]


def _message(path: Path, schema: dict[str, Any]) -> dict[str, Any]:
    name = path.name.removesuffix(".schema.json")
    relative = path.relative_to(SCHEMAS_DIR.parent).as_posix()
    return {
        "name": schema["title"],
        "title": schema["title"],
        "summary": schema.get("description", ""),
        "contentType": "application/json",
        "headers": _headers(TRACE_CONTEXT_HEADERS, []),
        "payload": {"schemaFormat": SCHEMA_FORMAT, "schema": {"$ref": f"../{relative}"}},
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": f"record key: {schema['x-kafka-key']}"},
                "bindingVersion": "0.5.0",
            }
        },
        "examples": _examples(name),
    }


def build_document(settings: Settings | None = None) -> dict[str, Any]:
    """The AsyncAPI document for the default topic names (or those of `settings`)."""
    s = settings or Settings()
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for path in sorted(SCHEMAS_DIR.rglob("*.schema.json")):
        schema = json.loads(path.read_text())
        topic = schema.get("x-kafka-topic")
        if topic is None:
            continue  # shared definitions, not a message
        message = _message(path, schema)
        messages[message["name"]] = message
        channel = channels.setdefault(
            _channel_id(topic), {"address": topic, "messages": {}, "description": ""}
        )
        channel["messages"][message["name"]] = {"$ref": f"#/components/messages/{message['name']}"}

    channels[_channel_id(s.commands_topic)]["description"] = (
        "Commands for the sync service, keyed by realm id so one worker owns a company's QBO "
        "calls. Any service may produce them; the api's refreshInvoices endpoint does."
    )
    channels[_channel_id(s.invoice_events_topic)]["description"] = (
        "One InvoiceUpdated CloudEvent per stored invoice version, at least once: keep the "
        "highest data.version per invoice and ignore anything not newer."
    )
    dead_letter = _channel_id(s.dead_letter_topic)
    messages["DeadLetter"] = {
        "name": "DeadLetter",
        "title": "DeadLetter",
        "summary": "A record that can never be processed, with the reason in its headers.",
        "headers": _headers(
            {**DEAD_LETTER_HEADERS, **TRACE_CONTEXT_HEADERS}, list(DEAD_LETTER_HEADERS)
        ),
        "payload": {"description": "the original record's bytes, unchanged (maybe not JSON)"},
    }
    channels[dead_letter] = {
        "address": s.dead_letter_topic,
        "description": "Dead letters of the commands and invoice-events consumers.",
        "messages": {"DeadLetter": {"$ref": "#/components/messages/DeadLetter"}},
    }

    def operation(action: str, channel: str, summary: str) -> dict[str, Any]:
        return {
            "action": action,
            "summary": summary,
            "channel": {"$ref": f"#/channels/{channel}"},
            "messages": [
                {"$ref": f"#/channels/{channel}/messages/{name}"}
                for name in channels[channel]["messages"]
            ],
        }

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "qbo-sync messages",
            "version": "1.0.0",
            "description": (
                "The Kafka topics of qbo-sync, seen from the system: it receives commands, "
                "sends invoice events and dead letters. Topic names are the defaults "
                "(COMMANDS_TOPIC, INVOICE_EVENTS_TOPIC, DEAD_LETTER_TOPIC)."
            ),
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": {
            "receiveCommands": operation(
                "receive", _channel_id(s.commands_topic), "The sync worker runs commands."
            ),
            "sendInvoiceEvents": operation(
                "send", _channel_id(s.invoice_events_topic), "Every stored invoice version."
            ),
            "sendDeadLetters": operation("send", dead_letter, "Records that can never succeed."),
        },
        "components": {"messages": messages},
    }


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    DOCUMENT_PATH.write_text(render(build_document()))
    print(f"wrote {DOCUMENT_PATH.relative_to(SCHEMAS_DIR.parent)}")


if __name__ == "__main__":
    main()
