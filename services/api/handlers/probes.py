"""What operators and tools read: `/healthz`, `/readyz`, `/metrics` and `/openapi.json`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from services.api import models
from services.api.metrics import ApiMetrics
from services.api.openapi import OPENAPI
from services.api.producer import LazyProducer
from services.api.responses import JSON

log = structlog.get_logger(__name__)

PROBE_TIMEOUT_S = 2.0
ProjectorState = Literal["off", "running", "stopped"]


async def _probe(name: str, check: Awaitable[Any]) -> models.Reachability:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            await check
    except Exception as exc:
        log.warning("api.not_ready", dependency=name, error=repr(exc))
        return "unreachable"
    return "ok"


@dataclass(frozen=True)
class Probes:
    producer: LazyProducer
    ping_mongo: Callable[[], Awaitable[Any]]
    # A stopped projector means events are no longer read, so the process is not ready
    # (docs/design.md invariant 9).
    projector_state: Callable[[], ProjectorState]
    metrics: ApiMetrics

    async def healthz(self, _: Request) -> Response:
        return JSON(models.Health(status="ok"))

    async def readyz(self, _: Request) -> Response:
        kafka, mongo = await asyncio.gather(
            _probe("kafka", self.producer.ping(PROBE_TIMEOUT_S)),
            _probe("mongo", self.ping_mongo()),
        )
        checks = models.ReadinessChecks(kafka=kafka, mongo=mongo, projector=self.projector_state())
        ready = kafka == mongo == "ok" and checks.projector != "stopped"
        return JSON(
            models.Readiness(status="ready" if ready else "unavailable", checks=checks),
            status_code=200 if ready else 503,
        )

    async def prometheus(self, _: Request) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def openapi(self, _: Request) -> Response:
        return JSON(OPENAPI)
