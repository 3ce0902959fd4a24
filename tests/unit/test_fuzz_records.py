"""Property-based fuzzing of the Kafka records both services consume (docs/design.md invariant 9):
whatever the bytes, headers or key, a record is handled or dead-lettered with a reason, and the
code reading it never raises anything else."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from hypothesis import given
from hypothesis import strategies as st

from services.api.projector import Rejected, parse_event
from services.common import jsoncodec
from services.common.messages import Command, parse_command
from services.common.schemas import MessageInvalid, default_schemas
from services.sync.quickbooks.mapping import MAX_DISPLAY_NAME, UnmappableCustomer, customer_facts
from services.sync.store import Attempt
from services.sync.worker import CommandWorker, WorkerOptions
from tests.unit.fuzz import FUZZ, amounts, json_values, raw_bytes, with_type

NOW = datetime(2030, 3, 15, tzinfo=UTC)
headers = st.lists(st.tuples(st.text(max_size=20), st.binary(max_size=40)), max_size=4)
keys = st.one_of(st.none(), st.binary(max_size=40))


def record(
    value: bytes | None, key: bytes | None = None, hdrs: Any = ()
) -> ConsumerRecord[Any, Any]:
    return ConsumerRecord(
        topic="t",
        partition=0,
        offset=7,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key or b""),
        serialized_value_size=len(value or b""),
        headers=list(hdrs),
    )


# ------------------------------------------------------------------------------ commands


def _parse(raw: bytes | None) -> Command | None:
    try:
        return parse_command(raw)
    except MessageInvalid as exc:
        assert exc.reason
        return None


@FUZZ
@given(raw_bytes)
def test_parse_command_accepts_or_refuses_any_bytes(raw: bytes) -> None:
    _parse(raw)


@FUZZ
@given(st.sampled_from(["RefreshInvoices", "MapCustomer", "SyncChanges"]).flatmap(with_type))
def test_parse_command_accepts_or_refuses_any_command_shaped_object(doc: dict[str, Any]) -> None:
    parsed = _parse(jsoncodec.dumpb(doc))
    if parsed is not None:  # what is accepted is a valid command that round-trips
        default_schemas().validate_command(parsed.to_dict())
        assert parse_command(parsed.to_bytes()) == parsed


@pytest.mark.parametrize("depth", [65, 1_000, 100_000])
def test_nested_array_bombs_are_refused_with_a_reason(depth: int) -> None:
    with pytest.raises(MessageInvalid, match="nested deeper than 64"):
        parse_command(b"[" * depth + b"]" * depth)


class DeadLetterSink:
    """In-memory stand-in for the producer: records what would be dead-lettered."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, dict[str, bytes]]] = []

    async def send_and_wait(
        self, topic: str, value: bytes | None, key: bytes | None = None, headers: Any = None
    ) -> None:
        self.sent.append((topic, value, key, dict(headers or [])))


class DispatchLog(CommandWorker):
    """The worker with its handlers replaced by a list: only its record handling is fuzzed."""

    dispatched: list[Command]

    async def dispatch(self, command: Command, owed: bool = True) -> dict[str, Any]:
        self.dispatched.append(command)
        return {}


class CommandLogSink:
    async def running(self, command: Command, attempt: int) -> Attempt:
        return Attempt(attempt, datetime.now(UTC))

    async def finished(self, *args: Any) -> None:
        return None


@FUZZ
@given(st.one_of(raw_bytes, st.none()), keys, headers)
async def test_the_worker_dead_letters_or_runs_any_record(
    value: bytes | None, key: bytes | None, hdrs: Any
) -> None:
    sink = DeadLetterSink()
    worker = DispatchLog(
        None,  # process() never touches the consumer
        sink,
        None,  # type: ignore[arg-type]
        CommandLogSink(),  # type: ignore[arg-type]
        WorkerOptions(commands_topic="t", dead_letter_topic="dlq"),
    )
    worker.dispatched = []

    await worker.process(record(value, key, hdrs))

    assert len(sink.sent) + len(worker.dispatched) == 1
    for topic, sent_value, sent_key, sent_headers in sink.sent:
        assert (topic, sent_value, sent_key) == ("dlq", value, key)
        assert sent_headers["dlq.reason"] and sent_headers["dlq.offset"] == b"7"


# --------------------------------------------------------------------------- invoice events


def _event(data: dict[str, Any]) -> dict[str, Any]:
    realm, invoice = data.get("realm_id", "1"), data.get("invoice_id", "2")
    return {
        "specversion": "1.0",
        "id": f"invoice/{realm}/{invoice}/v1",
        "source": "qbo-sync/sync",
        "type": "dev.qbo-sync.invoice.updated.v1",
        "subject": f"realms/{realm}/invoices/{invoice}",
        "time": "2030-01-01T00:00:00Z",
        "datacontenttype": "application/json",
        "data": data,
    }


event_data = st.fixed_dictionaries(
    {
        "realm_id": st.just("1"),
        "invoice_id": st.just("2"),
        "qbo_customer_id": st.just("3"),
        "local_customer_id": st.one_of(st.none(), st.just("c-1")),
        "status": st.sampled_from(["open", "paid", "voided", "deleted"]),
        "deleted": st.booleans(),
        "total_amt": st.one_of(amounts, json_values),
        "balance": st.one_of(amounts, json_values),
        "currency": st.one_of(st.none(), st.just("USD")),
        "due_date": st.one_of(st.none(), st.just("2030-01-01")),
        "doc_number": st.one_of(st.none(), st.text(max_size=70)),
        "last_updated_time": st.just("2030-01-01T00:00:00Z"),
        "version": st.integers(min_value=-1, max_value=2**70),
    },
)


def _project(value: bytes | None, key: bytes | None = None) -> dict[str, Any] | None:
    try:
        return parse_event(record(value, key), default_schemas(), NOW)
    except Rejected as exc:
        assert exc.reason and exc.error_type
        return None


@FUZZ
@given(st.one_of(raw_bytes, st.none()), keys)
def test_parse_event_accepts_or_rejects_any_record(value: bytes | None, key: bytes | None) -> None:
    _project(value, key)


@FUZZ
@given(event_data)
def test_an_accepted_event_keeps_its_amounts_exactly(data: dict[str, Any]) -> None:
    from services.common import money

    doc = _project(jsoncodec.dumpb(_event(data)), b"1:2")
    if doc is not None:
        assert money.stored_amount(doc, "total_amt") == data["total_amt"]
        assert money.stored_amount(doc, "balance") == data["balance"]
        assert money.sort_key(data["total_amt"]) == doc["total_amt_key"]


# ----------------------------------------------------------------------------- customers

customer_shaped = st.fixed_dictionaries(
    {},
    optional={
        "Id": st.one_of(st.just("58"), st.text(max_size=8), json_values),
        "SyncToken": st.one_of(st.just("3"), st.text(max_size=14), json_values),
        "Active": st.one_of(st.booleans(), json_values),
        "DisplayName": st.one_of(st.text(max_size=600), json_values),
        "status": st.one_of(st.just("Deleted"), json_values),
    },
)


@FUZZ
@given(st.one_of(json_values, customer_shaped))
def test_customer_facts_take_any_json(value: Any) -> None:
    """A Customer object from QBO (query or CDC) gives facts a mapping can store, or a clear
    refusal; nothing else escapes (docs/design.md invariants 9 and 12)."""
    try:
        facts = customer_facts(value)
    except UnmappableCustomer as exc:
        assert str(exc)
        return
    assert facts.qbo_customer_id.isdigit()
    assert facts.sync_token >= -1
    assert isinstance(facts.active, bool)
    assert facts.display_name is None or len(facts.display_name) <= MAX_DISPLAY_NAME
    assert facts.deleted == (facts.sync_token == -1)
    if facts.display_name is not None:
        facts.display_name.encode("utf-8")
