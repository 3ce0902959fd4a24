"""The sync service's `/metrics` over real HTTP after a refresh that met 429s and a 401 at the
emulator, with real Kafka and FerretDB (docs/design.md, "Operators: metrics and traces"): each
figure is what the work must have made it, and the QBO calls agree with `/stats`."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from qbo_emulator.testing import RunningEmulator
from tests.integration.conftest import SYNC_AUTH, SyncUnderTest
from tests.integration.test_sync_worker import (
    REALM,
    add_invoices,
    connect_and_map,
    finished,
    refresh,
)
from tests.support import MovableClock

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(sync: SyncUnderTest) -> Samples:
    async with httpx.AsyncClient(base_url=sync.base_url, timeout=10) as http:
        answer = await http.get("/metrics", headers=SYNC_AUTH)
    assert answer.status_code == 200, answer.text
    return {
        (s.name, frozenset(s.labels.items())): float(s.value)
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def test_a_refresh_through_429s_and_a_401_moves_each_figure(
    worker: SyncUnderTest, emulator: RunningEmulator, clock: MovableClock
) -> None:
    qbo_customer = await connect_and_map(worker, emulator, clock)
    add_invoices(emulator, qbo_customer, 10)
    emulator.state.set_faults(
        [
            {"kind": "429", "path_contains": "/query", "times": 2},
            {"kind": "401", "path_contains": "/query", "times": 1},
        ]
    )
    before = await scrape(worker)

    status = await finished(worker, await refresh(worker))
    assert status["status"] == "succeeded", status

    after = await scrape(worker)
    commands = {"type": "RefreshInvoices"}
    assert value(before, "qbo_sync_commands_total", **commands, outcome="succeeded") == 0
    assert value(after, "qbo_sync_commands_total", **commands, outcome="succeeded") == 1
    assert value(after, "qbo_sync_commands_total", **commands, outcome="dead_lettered") == 0
    assert value(after, "qbo_sync_events_emitted_total") == 10
    assert value(after, "qbo_sync_qbo_throttled_total", realm_id=REALM) == 2
    assert value(after, "qbo_sync_qbo_calls_total", realm_id=REALM, status_class="4xx") == 3
    assert value(after, "qbo_sync_token_refreshes_total", outcome="refreshed") == 1
    assert value(after, "qbo_sync_outbox_oldest_age_seconds") == 0
    lags = [v for (name, _), v in after.items() if name == "qbo_sync_consumer_lag_records"]
    assert lags and all(lag == 0 for lag in lags)  # the command was read: nothing waits

    async with httpx.AsyncClient(base_url=worker.base_url, timeout=10) as http:
        stats = (await http.get("/stats", headers=SYNC_AUTH)).json()
    calls = sum(
        v
        for (name, labels), v in after.items()
        if name == "qbo_sync_qbo_calls_total" and ("realm_id", REALM) in labels
    )
    assert calls == stats["qbo_calls_by_realm"][REALM]  # every attempt, as /stats counts them
