"""The sync service's Prometheus metrics (docs/design.md, "Operators: metrics and traces"): each
figure read back from the exposition text `/metrics` serves, after the work that must move it.
The worker runs with the fakes of test_worker_scheduling.py; QBO and Intuit's token endpoint are
a real HTTP server on loopback, so the counts come from the session's own trace hooks."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiokafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from pymongo.errors import ServerSelectionTimeoutError

from services.sync.handlers import CommandRejected
from services.sync.metrics import MeteredIntuitOAuthClient, SyncMetrics
from services.sync.oauth.intuit import InvalidGrant, OAuthError
from services.sync.quickbooks.client import QboClient, RetryPolicy
from services.sync.quickbooks.errors import QboThrottled
from tests.unit.test_worker_scheduling import P0, P1, World

REALM = "9130350000000001"


def sample(metrics: SyncMetrics, name: str, **labels: str) -> float:
    """`name{labels}` as `/metrics` renders it (parsed back from the exposition text)."""
    for family in text_string_to_metric_families(metrics.render().decode()):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    raise AssertionError(f"{name}{labels} is not exposed")


async def test_commands_are_counted_by_type_and_outcome_as_the_worker_finishes_them() -> None:
    w = World(max_attempts=2, throttle_pause_s=60)
    metrics = w.worker.metrics
    done, _ = w.command(P0, "1001")
    rejected, _ = w.command(P0, "1002")
    w.worker.failures[rejected] = [CommandRejected("no such customer")]
    throttled, _ = w.command(P1, "1003")
    w.worker.failures[throttled] = [QboThrottled("throttled", status=429)]
    broken, _ = w.command(P1, "1004")
    w.worker.failures[broken] = [OSError("database away"), OSError("database away")]
    w.consumer.add(P0, "1005", b"{not json")
    assert (
        sample(metrics, "qbo_sync_commands_total", type="RefreshInvoices", outcome="succeeded") == 0
    )

    await w.poll()
    await w.time.advance(1)  # the broken command's retry back-off
    await w.poll()

    def commands(outcome: str) -> float:
        return sample(metrics, "qbo_sync_commands_total", type="RefreshInvoices", outcome=outcome)

    assert w.log.status(done) == "succeeded" and w.log.status(broken) == "failed"
    assert commands("succeeded") == 1
    assert commands("failed") == 1
    assert commands("throttled") == 1
    assert commands("dead_lettered") == 1
    assert commands("needs_reauth") == 0
    assert sample(metrics, "qbo_sync_dead_letters_total", reason="MessageInvalid") == 1
    assert sample(metrics, "qbo_sync_dead_letters_total", reason="OSError") == 1

    await w.time.advance(60)  # the throttled realm's pause ends and its command runs
    await w.poll()
    assert commands("succeeded") == 2
    assert commands("throttled") == 1


async def test_counts_kept_for_stats_are_read_at_each_scrape() -> None:
    metrics = SyncMetrics()
    emitted = [0]
    reasons: Counter[str] = Counter()
    metrics.read_at_scrape("qbo_sync_events_emitted", "events", lambda: emitted[0])
    metrics.read_at_scrape("qbo_sync_webhook_events_rejected", "r", lambda: reasons, "reason")
    emitted[0] += 3
    reasons.update(["bad_realm", "bad_realm", "bad_type"])

    assert sample(metrics, "qbo_sync_events_emitted_total") == 3
    assert sample(metrics, "qbo_sync_webhook_events_rejected_total", reason="bad_realm") == 2
    assert sample(metrics, "qbo_sync_webhook_events_rejected_total", reason="bad_type") == 1


class FakeLagConsumer:
    """What `observe` reads of AIOKafkaConsumer: assignment, high watermarks, positions."""

    def __init__(self, highwater: dict[int, int | None], position: dict[int, int]) -> None:
        self._highwater = highwater
        self._position = position

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition("commands", p) for p in self._highwater}

    def highwater(self, tp: TopicPartition) -> int | None:
        return self._highwater[tp.partition]

    async def position(self, tp: TopicPartition) -> int:
        return self._position[tp.partition]


async def test_outbox_age_and_consumer_lag_are_read_before_a_scrape() -> None:
    metrics = SyncMetrics()
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    opened = now - timedelta(seconds=95)

    async def oldest() -> datetime | None:
        return opened

    consumer: Any = FakeLagConsumer({0: 120, 1: 40, 2: None}, {0: 100, 1: 40, 2: 0})
    await metrics.observe(oldest, now, consumer)

    assert sample(metrics, "qbo_sync_outbox_oldest_age_seconds") == 95
    assert sample(metrics, "qbo_sync_consumer_lag_records", partition="0") == 20
    assert sample(metrics, "qbo_sync_consumer_lag_records", partition="1") == 0
    with pytest.raises(AssertionError, match="not exposed"):
        sample(metrics, "qbo_sync_consumer_lag_records", partition="2")  # nothing fetched yet

    async def none_open() -> datetime | None:
        return None

    await metrics.observe(none_open, now, None)  # the worker stopped: its partitions go
    assert sample(metrics, "qbo_sync_outbox_oldest_age_seconds") == 0
    with pytest.raises(AssertionError, match="not exposed"):
        sample(metrics, "qbo_sync_consumer_lag_records", partition="0")


async def test_a_figure_that_cannot_be_read_is_nan_not_a_failed_scrape() -> None:
    metrics = SyncMetrics()

    async def database_away() -> datetime | None:
        raise ServerSelectionTimeoutError("no server")

    consumer: Any = FakeLagConsumer({0: 7}, {0: 5})
    await metrics.observe(database_away, datetime.now(UTC), consumer)

    assert math.isnan(sample(metrics, "qbo_sync_outbox_oldest_age_seconds"))
    assert sample(metrics, "qbo_sync_consumer_lag_records", partition="0") == 2


class Intuit:
    """QBO's query endpoint answering the statuses queued for it, and the token endpoint."""

    def __init__(self) -> None:
        self.query_statuses: list[int] = []
        self.token_answers: list[tuple[int, dict[str, Any]]] = []

    async def query(self, request: web.Request) -> web.Response:
        status = self.query_statuses.pop(0)
        if status == 200:
            return web.json_response({"QueryResponse": {}})
        return web.Response(status=status, text="<Fault/>", content_type="application/xml")

    async def token(self, request: web.Request) -> web.Response:
        status, body = self.token_answers.pop(0)
        return web.json_response(body, status=status)


@pytest.fixture
async def intuit() -> AsyncIterator[tuple[Intuit, str]]:
    fake = Intuit()
    app = web.Application()
    app.router.add_get("/v3/company/{realm}/query", fake.query)
    app.router.add_post("/oauth2/v1/tokens/bearer", fake.token)
    async with TestServer(app, host="127.0.0.1") as server:
        yield fake, str(server.make_url("")).rstrip("/")


class Tokens:
    async def access_token(self, realm_id: str) -> str:
        return "access-token"

    async def refresh_after_401(self, realm_id: str, rejected: str) -> str:
        return "access-token"


async def no_wait(_: float) -> None:
    return None


async def test_qbo_calls_are_counted_per_attempt_by_realm_and_status_class(
    intuit: tuple[Intuit, str],
) -> None:
    fake, base_url = intuit
    metrics = SyncMetrics()
    fake.query_statuses = [429, 503, 200]
    async with aiohttp.ClientSession(trace_configs=[metrics.qbo_call_counting()]) as http:
        client = QboClient(
            http, base_url, Tokens(), retry=RetryPolicy(max_retries=2), sleep=no_wait
        )
        await client.query(REALM, "select * from Invoice")

    assert sample(metrics, "qbo_sync_qbo_calls_total", realm_id=REALM, status_class="4xx") == 1
    assert sample(metrics, "qbo_sync_qbo_calls_total", realm_id=REALM, status_class="5xx") == 1
    assert sample(metrics, "qbo_sync_qbo_calls_total", realm_id=REALM, status_class="2xx") == 1
    assert sample(metrics, "qbo_sync_qbo_throttled_total", realm_id=REALM) == 1
    assert client.calls[REALM] == 3  # the same attempts /stats counts


async def test_token_refreshes_are_counted_by_outcome(intuit: tuple[Intuit, str]) -> None:
    fake, base_url = intuit
    metrics = SyncMetrics()
    grant = {
        "access_token": "a2",
        "refresh_token": "r2",
        "expires_in": 3600,
        "x_refresh_token_expires_in": 8_640_000,
    }
    fake.token_answers = [(200, grant), (400, {"error": "invalid_grant"}), (500, {})]
    async with aiohttp.ClientSession() as http:
        client = MeteredIntuitOAuthClient(
            metrics,
            http,
            authorize_url=f"{base_url}/connect/oauth2",
            token_url=f"{base_url}/oauth2/v1/tokens/bearer",
            revoke_url=f"{base_url}/revoke",
            client_id="client",
            client_secret="secret",
            redirect_uri="http://127.0.0.1/oauth/callback",
            clock=lambda: datetime.now(UTC),
        )
        assert (await client.refresh("r1")).refresh_token == "r2"
        with pytest.raises(InvalidGrant):
            await client.refresh("r2")
        with pytest.raises(OAuthError):
            await client.refresh("r2")

    for outcome in ("refreshed", "invalid_grant", "failed"):
        assert sample(metrics, "qbo_sync_token_refreshes_total", outcome=outcome) == 1
