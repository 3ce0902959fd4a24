"""Prometheus metrics of the sync service (docs/design.md, "Operators: metrics and traces").

Each `SyncMetrics` has its own registry, so several services in one process (tests) do not
collide, and `/metrics` shows exactly this service's figures. Counters the service already
keeps for `/stats` (events emitted, webhook rejections, rejected invoices) are read at each
scrape rather than counted twice; QBO calls are counted by the HTTP session's trace hooks, at
the one place every attempt passes.

Label values are bounded: command types, outcomes, exception class names, status classes,
partitions, and realm ids (one per connected company). Never an invoice or customer id.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import aiohttp
import structlog
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from pymongo.errors import PyMongoError

from services.common.messages import COMMAND_TYPES
from services.sync.oauth.intuit import IntuitOAuthClient, InvalidGrant, TokenGrant

# What became of a command: its finished status, or why it has none yet.
SUCCEEDED, FAILED, NEEDS_REAUTH = "succeeded", "failed", "needs_reauth"
DEAD_LETTERED, THROTTLED, SKIPPED = "dead_lettered", "throttled", "skipped"
COMMAND_OUTCOMES = (SUCCEEDED, FAILED, NEEDS_REAUTH, DEAD_LETTERED, THROTTLED, SKIPPED)
REFRESH_OUTCOMES = ("refreshed", "invalid_grant", "failed")

log = structlog.get_logger(__name__)

_REALM_IN_PATH = re.compile(r"/v3/company/([^/]+)/")


class _TallyCollector(Collector):
    """A counter family read from a `collections.Counter` the service keeps anyway."""

    def __init__(self, name: str, documentation: str, label: str, read: Callable[[], Any]) -> None:
        self._name, self._documentation, self._label, self._read = name, documentation, label, read

    def collect(self) -> Iterator[CounterMetricFamily]:
        value = self._read()
        if isinstance(value, Tally):
            family = CounterMetricFamily(self._name, self._documentation, labels=[self._label])
            for label, count in sorted(value.items()):
                family.add_metric([str(label)], count)
        else:
            family = CounterMetricFamily(self._name, self._documentation, value=int(value))
        yield family


class SyncMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.commands = Counter(
            "qbo_sync_commands",
            "Commands handled by the worker, by type and outcome (succeeded, failed, "
            "needs_reauth, dead_lettered, throttled: deferred, skipped: already finished).",
            ["type", "outcome"],
            registry=self.registry,
        )
        for command_type in COMMAND_TYPES:
            for outcome in COMMAND_OUTCOMES:
                self.commands.labels(command_type, outcome)  # present at 0 for rates
        self.dead_letters = Counter(
            "qbo_sync_dead_letters",
            "Records the worker sent to the dead-letter topic, by reason (the error type).",
            ["reason"],
            registry=self.registry,
        )
        self.qbo_calls = Counter(
            "qbo_sync_qbo_calls",
            "HTTP attempts at the QBO Accounting API (Intuit meters each), by realm and status "
            "class (2xx, 4xx, 5xx, error: no answer).",
            ["realm_id", "status_class"],
            registry=self.registry,
        )
        self.qbo_throttled = Counter(
            "qbo_sync_qbo_throttled",
            "QBO answers 429 (throttled), by realm.",
            ["realm_id"],
            registry=self.registry,
        )
        self.token_refreshes = Counter(
            "qbo_sync_token_refreshes",
            "Access token refreshes at Intuit, by outcome (invalid_grant: must re-connect).",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in REFRESH_OUTCOMES:
            self.token_refreshes.labels(outcome)
        self.outbox_oldest_age = Gauge(
            "qbo_sync_outbox_oldest_age_seconds",
            "Age of the oldest open outbox entry (events owed), 0 when none is open.",
            registry=self.registry,
        )
        self.consumer_lag = Gauge(
            "qbo_sync_consumer_lag_records",
            "Commands on a partition this worker owns not yet fetched (high watermark minus "
            "position), per partition.",
            ["partition"],
            registry=self.registry,
        )

    def command(self, command_type: str, outcome: str) -> None:
        self.commands.labels(command_type, outcome).inc()

    def dead_lettered(self, reason: str) -> None:
        self.dead_letters.labels(reason).inc()

    def read_at_scrape(
        self, name: str, documentation: str, read: Callable[[], Any], label: str = ""
    ) -> None:
        """Expose a count the service keeps anyway (an int, or a Counter by `label`)."""
        self.registry.register(_TallyCollector(name, documentation, label, read))

    async def observe(
        self,
        oldest_outbox_entry: Callable[[], Any],
        now: datetime,
        consumer: AIOKafkaConsumer | None,
    ) -> None:
        """Refresh the gauges that are read rather than counted, just before a scrape. A figure
        that cannot be read now is NaN (or left out), never a failed scrape: the counters matter
        most while a dependency is away."""
        try:
            oldest: datetime | None = await oldest_outbox_entry()
        except (PyMongoError, TimeoutError) as exc:
            log.warning("metrics.outbox_unreadable", error=type(exc).__name__)
            self.outbox_oldest_age.set(math.nan)
        else:
            age = (now - oldest).total_seconds() if oldest is not None else 0.0
            self.outbox_oldest_age.set(max(age, 0.0))
        self.consumer_lag.clear()  # partitions handed to another member drop out
        if consumer is None:
            return
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue  # nothing fetched from it yet
            try:
                async with asyncio.timeout(1.0):
                    position = await consumer.position(tp)
            except (KafkaError, TimeoutError):
                continue  # being handed over, or its position is not known yet
            self.consumer_lag.labels(str(tp.partition)).set(max(highwater - position, 0))

    def qbo_call_counting(self) -> aiohttp.TraceConfig:
        """Trace hooks for the HTTP session: every attempt at a QBO company URL, counted."""

        async def answered(
            _: aiohttp.ClientSession, __: SimpleNamespace, params: aiohttp.TraceRequestEndParams
        ) -> None:
            if match := _REALM_IN_PATH.search(params.url.path):
                status = params.response.status
                self.qbo_calls.labels(match.group(1), f"{status // 100}xx").inc()
                if status == 429:
                    self.qbo_throttled.labels(match.group(1)).inc()

        async def unanswered(
            _: aiohttp.ClientSession,
            __: SimpleNamespace,
            params: aiohttp.TraceRequestExceptionParams,
        ) -> None:
            if match := _REALM_IN_PATH.search(params.url.path):
                self.qbo_calls.labels(match.group(1), "error").inc()

        config = aiohttp.TraceConfig()
        config.on_request_end.append(answered)
        config.on_request_exception.append(unanswered)
        return config

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MeteredIntuitOAuthClient(IntuitOAuthClient):
    """Intuit's OAuth client with its token refreshes counted by outcome."""

    def __init__(self, metrics: SyncMetrics, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._metrics = metrics

    async def refresh(self, refresh_token: str) -> TokenGrant:
        try:
            grant = await super().refresh(refresh_token)
        except InvalidGrant:
            self._metrics.token_refreshes.labels("invalid_grant").inc()
            raise
        except Exception:
            self._metrics.token_refreshes.labels("failed").inc()
            raise
        self._metrics.token_refreshes.labels("refreshed").inc()
        return grant
