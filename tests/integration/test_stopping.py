"""How the services stop (docs/design.md "Stopping"), on real processes, Kafka and FerretDB.

SIGTERM ends each service with exit 0 after its Kafka consumer has left its group, whether or
not the process is PID 1 (uvicorn raises the signal again once it has drained HTTP; Python's
default would end the process there). A sync worker told to stop while it is still joining
its group behind a crashed member (which the broker waits for until its session times out)
exits within the 10 s grace period, having taken nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from services.common.settings import Settings
from tests.infra import ROOT, free_port
from tests.integration.test_worker_crash import settings_env
from tests.support import eventually

pytestmark = pytest.mark.integration

# Docker's and Kubernetes' default grace period before SIGKILL.
GRACE_S = 10

Spawn = Callable[[str, str], Awaitable["Running"]]


class Running:
    def __init__(self, process: asyncio.subprocess.Process, log: Path, base: str) -> None:
        self.process = process
        self.log = log
        self.base = base

    def events(self) -> list[str]:
        """The `event` of each JSON log line written so far."""
        events = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):  # not a JSON log line
                events.append(str(json.loads(line)["event"]))
        return events

    async def wait_for_event(self, event: str) -> None:
        async def logged() -> list[str]:
            return self.events()

        await eventually(logged, lambda events: event in events, timeout_s=60)

    async def wait_answering(self, path: str) -> None:
        async with httpx.AsyncClient(timeout=2) as client:

            async def status() -> int:
                try:
                    return (await client.get(self.base + path)).status_code
                except httpx.TransportError:
                    return 0

            await eventually(status, lambda code: code == 200, timeout_s=60)

    async def terminate(self) -> tuple[int, float]:
        """SIGTERM; the exit code and the seconds it took."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.process.wait(), 60)
        return code, time.monotonic() - started


@pytest.fixture
async def spawn(settings: Settings, tmp_path: Path) -> AsyncIterator[Spawn]:
    """Starts `python -m <module>` (not PID 1) with this test's settings, logging to a file."""
    started: list[asyncio.subprocess.Process] = []

    async def start(module: str, name: str) -> Running:
        port = free_port()
        log = tmp_path / f"{name}.log"
        env = {**settings_env(settings), "LOG_LEVEL": "INFO", "LOG_JSON": "true"}
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                module,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        started.append(process)
        return Running(process, log, f"http://127.0.0.1:{port}")

    yield start
    for process in started:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _group(settings: Settings, group: str) -> dict[str, Any]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    described: dict[str, Any] = response.to_object()["groups"][0]
    return described


async def test_sigterm_ends_the_sync_service_with_exit_0_after_its_worker_left_the_group(
    spawn: Spawn, settings: Settings
) -> None:
    sync = await spawn("services.sync", "sync")
    await sync.wait_answering("/readyz")
    await sync.wait_for_event("worker.partitions_assigned")
    assert len((await _group(settings, settings.sync_consumer_group))["members"]) == 1

    code, took = await sync.terminate()

    assert code == 0, sync.log.read_text()
    assert took < GRACE_S
    group = await _group(settings, settings.sync_consumer_group)
    # Left, rather than dropped after its session timeout: the group is empty at once.
    assert (group["state"], group["members"]) == ("Empty", [])


async def test_sigterm_ends_the_api_with_exit_0(spawn: Spawn) -> None:
    api = await spawn("services.api", "api")
    await api.wait_answering("/readyz")

    code, took = await api.terminate()

    assert code == 0, api.log.read_text()
    assert took < GRACE_S


async def test_a_worker_stopped_while_joining_behind_a_crashed_member_exits_in_the_grace_period(
    spawn: Spawn, settings: Settings
) -> None:
    crashed = await spawn("services.sync", "crashed")
    await crashed.wait_for_event("worker.partitions_assigned")
    crashed.process.kill()  # no LeaveGroup: the broker waits for it until its session expires
    await crashed.process.wait()

    joining = await spawn("services.sync", "joining")
    await joining.wait_answering("/healthz")
    code, took = await joining.terminate()

    events = joining.events()
    assert code == 0, joining.log.read_text()
    assert "kafka.start_abandoned" in events, events
    assert "worker.partitions_assigned" not in events, events
    assert took < GRACE_S
