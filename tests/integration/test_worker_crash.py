"""SIGKILL the sync worker process in the middle of a refresh, start it again, and check that
nothing was lost and nothing stored twice (docs/design.md invariants 4 and 5)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import pytest
from pydantic import SecretStr
from pymongo.asynchronous.database import AsyncDatabase

from qbo_emulator.testing import RunningEmulator
from services.common.money import to_micros
from services.common.mongo import Document
from services.common.settings import Settings
from tests.infra import ROOT
from tests.integration.conftest import SyncUnderTest
from tests.integration.test_sync_worker import (
    add_invoices,
    connect_and_map,
    events,
    finished,
    refresh,
)
from tests.support import MovableClock, eventually

pytestmark = pytest.mark.integration


def settings_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "MONGODB_"))}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        env[name.upper()] = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
    env["LOG_LEVEL"] = "WARNING"
    return env


@pytest.fixture
async def worker_process(
    sync: SyncUnderTest,
) -> AsyncIterator[Callable[[], asyncio.Future[asyncio.subprocess.Process]]]:
    """Starts `python -m services.sync --role worker` with this test's settings."""
    started: list[asyncio.subprocess.Process] = []

    def start() -> asyncio.Future[asyncio.subprocess.Process]:
        async def spawn() -> asyncio.subprocess.Process:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.sync",
                "--role",
                "worker",
                cwd=ROOT,
                env=settings_env(sync.service.settings),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            started.append(proc)
            return proc

        return asyncio.ensure_future(spawn())

    yield start
    for proc in started:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_sigkill_mid_refresh_loses_and_duplicates_nothing(
    sync: SyncUnderTest,
    emulator: RunningEmulator,
    clock: MovableClock,
    settings: Settings,
    mongo_db: AsyncDatabase[Document],
    worker_process: Callable[[], asyncio.Future[asyncio.subprocess.Process]],
) -> None:
    qbo_customer = await connect_and_map(sync, emulator, clock)
    total = add_invoices(emulator, qbo_customer, 5000)
    # Slow pages keep the refresh in flight long enough to kill it between pages.
    emulator.state.set_faults([{"kind": "slow", "path_contains": "/query", "delay_s": 0.7}])
    first = await worker_process()
    command_id = await refresh(sync)

    async def stored() -> int:
        return await mongo_db.invoices.count_documents({})

    partial = await eventually(stored, lambda n: n >= 1000, timeout_s=60, interval_s=0.05)
    first.send_signal(signal.SIGKILL)
    await first.wait()
    assert 0 < partial < 5000, "the kill must land mid-command"
    status = await sync.service.commands.get(command_id)
    assert status is not None and status["status"] == "running"

    emulator.state.set_faults([])
    await worker_process()  # a new member of the group takes the uncommitted command
    done = await finished(sync, command_id, timeout_s=120)

    assert done["status"] == "succeeded", done
    invoices = [d async for d in mongo_db.invoices.find({}, {"total_amt_micros": 1, "version": 1})]
    assert len(invoices) == 5000  # nothing lost
    assert {d["version"] for d in invoices} == {1}  # nothing stored twice
    assert sum(d["total_amt_micros"] for d in invoices) == to_micros(total)
    assert await mongo_db.outbox.count_documents({}) == 0  # no event still owed

    emitted = await events(settings)
    versions = Counter((e["data"]["invoice_id"], e["data"]["version"]) for e in emitted)
    assert len(versions) == 5000  # every stored version has its event
    assert {v for (_, v) in versions} == {1}
    distinct = {e["id"]: e for e in emitted}.values()
    assert sum(Decimal(e["data"]["total_amt"]) for e in distinct) == total
    # Events are at least once: a page written before the kill may be emitted again with
    # the same id and content, which consumers dedupe by version.
    repeats = sum(n - 1 for n in versions.values())
    by_id: dict[str, bytes] = {}
    for event in emitted:
        body = repr(sorted(event["data"].items())).encode()
        assert by_id.setdefault(event["id"], body) == body  # a repeat is identical
    print(f"events: {len(emitted)} delivered, {repeats} repeated deliveries, 0 lost")
