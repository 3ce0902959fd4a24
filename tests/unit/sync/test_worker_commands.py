"""The worker running real handlers over the fakes, the real QBO client and the emulator: who
retries what (docs/design.md invariant 13), dead-lettering with the reason, a throttled realm
deferred, a command delivered twice. Fake time: no test waits on the wall clock."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from aiokafka import TopicPartition

from services.common.messages import RefreshInvoices
from services.sync.worker import CommandWorker
from tests.fakes import settle
from tests.unit.sync.fakes import (
    AMOUNTS,
    REALM,
    TOPIC,
    Sync,
    add_invoices,
    keys,
    mapped_customer,
    refresh_command,
)

P0 = TopicPartition(TOPIC, 0)


async def run(sync: Sync, worker: CommandWorker, *commands: RefreshInvoices) -> None:
    for command in commands:
        sync.consumer.add(P0, REALM, command.to_bytes())
    await worker.poll_once()
    await settle()
    await worker.commit()


def fail_queries(sync: Sync, *rules: dict[str, Any]) -> None:
    sync.books.set_faults([{"path_contains": "/query", **rule} for rule in rules])


@pytest.mark.parametrize(
    ("expired_token", "calls"), [(False, 4), (True, 5)], ids=["token-valid", "token-expired"]
)
async def test_a_failing_page_is_retried_by_the_client_only_then_dead_lettered_with_the_reason(
    sync: Sync, expired_token: bool, calls: int
) -> None:
    add_invoices(sync, mapped_customer(sync), *AMOUNTS)
    rules = [{"kind": "401", "times": 1}] if expired_token else []
    fail_queries(sync, *rules, {"kind": "503", "times": 100})
    worker = sync.worker(max_attempts=3)
    command = refresh_command()

    await run(sync, worker, command)

    assert sync.calls(REALM, "query") == calls  # 1 + 3 retries (+ 1 after a refresh), not 12
    assert sync.backoffs == [0.5, 1.0, 2.0]
    assert sync.vault.refreshes == int(expired_token)
    assert sync.commands.history[command.command_id] == ["running", "failed"]
    (reason,) = sync.producer.reasons()
    assert reason.startswith("QboUnavailable: HTTP 503: server error")
    assert sync.commands.docs[command.command_id]["reason"] == reason
    assert sync.consumer.committed[P0] == 1
    assert sync.invoices.docs == {}


async def test_a_page_that_fails_briefly_is_retried_by_the_client_and_the_command_succeeds(
    sync: Sync,
) -> None:
    add_invoices(sync, mapped_customer(sync), *AMOUNTS)
    fail_queries(sync, {"kind": "500", "times": 1}, {"kind": "malformed_json", "times": 1})
    command = refresh_command()

    await run(sync, sync.worker(), command)

    assert sync.commands.status(command.command_id) == "succeeded"
    assert sync.calls(REALM, "query") == 2 + 2  # two failed answers, the page, the customer
    assert sync.backoffs == [0.5, 1.0]
    assert sync.producer.sent == []


async def test_a_throttled_realm_is_deferred_not_dead_lettered_then_runs(sync: Sync) -> None:
    ids = add_invoices(sync, mapped_customer(sync), *AMOUNTS[:2])
    fail_queries(sync, {"kind": "429", "times": 4})  # outlasts the client's 3 retries
    worker = sync.worker(throttle_pause_s=60)
    command = refresh_command()

    await run(sync, worker, command)

    doc = sync.commands.docs[command.command_id]
    assert doc["status"] == "throttled"
    assert doc["resumes_at"] == sync.clock.now + timedelta(seconds=60)
    assert sync.producer.sent == []
    assert sync.consumer.committed.get(P0, 0) == 0  # not done: nothing committed past it
    await sync.time.advance(60)
    await run(sync, worker)
    assert sync.commands.history[command.command_id] == [
        "running",
        "throttled",
        "running",
        "succeeded",
    ]
    assert sorted(sync.invoices.of_realm(REALM)) == sorted(ids)
    assert sync.consumer.committed[P0] == 1


async def test_events_owed_by_an_attempt_that_failed_after_its_writes_are_emitted_once(
    sync: Sync,
) -> None:
    ids = add_invoices(sync, mapped_customer(sync), *AMOUNTS)
    sync.events.down = 1  # Kafka is away when the page's events are produced
    worker = sync.worker(max_attempts=3, retry_base_delay_s=1.0)
    command = refresh_command()

    await run(sync, worker, command)
    assert sync.commands.status(command.command_id) == "running"  # waiting to try again
    assert sync.events.emitted == []
    await sync.time.advance(1)

    assert sync.commands.status(command.command_id) == "succeeded"
    assert sorted(sync.events.keys()) == keys(*ids)  # the owed events, each once
    assert sync.commands.docs[command.command_id]["result"]["events"] == 5
    assert sync.outbox.open_entries == {}
    assert sync.producer.sent == []


async def test_a_command_delivered_twice_runs_once(sync: Sync) -> None:
    add_invoices(sync, mapped_customer(sync), Decimal("4"))
    worker = sync.worker()
    command = refresh_command()

    await run(sync, worker, command)
    calls = sync.calls(REALM)
    await run(sync, worker, command)

    assert sync.calls(REALM) == calls  # metered reads are not paid twice
    assert worker.skipped == 1
    assert len(sync.events.emitted) == 1
    assert sync.consumer.committed[P0] == 2


async def test_a_command_for_an_unmapped_customer_fails_without_reading_qbo(sync: Sync) -> None:
    command = refresh_command()

    await run(sync, sync.worker(), command)

    doc = sync.commands.docs[command.command_id]
    assert doc["status"] == "failed"
    assert doc["reason"] == "customer cust-1 is not mapped to QBO"
    assert sync.calls(REALM) == 0
    assert sync.producer.sent == []  # a rejected command is recorded, not dead-lettered


async def test_a_realm_needing_reauthorisation_ends_its_command_as_such(sync: Sync) -> None:
    mapped_customer(sync)
    sync.vault.needs_reauth.add(REALM)
    command = refresh_command()

    await run(sync, sync.worker(), command)

    assert sync.commands.status(command.command_id) == "needs_reauth"
    assert sync.calls(REALM) == 0
