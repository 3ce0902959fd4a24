"""Nothing a producer sends can stop the sync worker (docs/design.md invariant 9), and a worker
whose loop dies anyway takes readiness and the process with it.

Real Kafka, FerretDB and the emulator. The poison records share the good commands' key, so
they sit on the same partition between them: the second good command can only be done if the
worker went past every poison record.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
import uvicorn
from aiokafka import AIOKafkaProducer

from qbo_emulator.testing import RunningEmulator
from services.common.kafka import make_producer
from services.common.settings import Settings
from services.sync.__main__ import EXIT_WORKER_DIED, supervise
from services.sync.worker import CommandWorker
from tests.integration.conftest import SyncUnderTest
from tests.integration.test_sync_worker import REALM, connect_and_map, finished, refresh
from tests.support import MovableClock, eventually, read_topic

pytestmark = pytest.mark.integration

Headers = list[tuple[str, bytes]]

# The records of the finding, each of which once either stopped the worker or had to be
# dead-lettered: the nested-array bomb first.
POISON: list[tuple[str, bytes | None, Headers]] = [
    ("nested array bomb", b"[" * 100_000 + b"]" * 100_000, []),
    ("nested object bomb", b'{"a":' * 5_000 + b"1" + b"}" * 5_000, []),
    ("900 KB", b'{"type":"RefreshInvoices","pad":"' + b"x" * 900_000 + b'"}', []),
    ("bad UTF-8", b'{"type":"Refresh\xff\xfeInvoices"}', []),
    ("5,000-digit int", b'{"type":"RefreshInvoices","n":' + b"9" * 5_000 + b"}", []),
    ("huge exponent", b'{"type":"RefreshInvoices","n":1E+999999999}', []),
    ("NaN", b'{"type":"RefreshInvoices","n":NaN}', []),
    ("tombstone", None, []),
    ("empty", b"", []),
    ("not an object", b'"RefreshInvoices"', []),
    ("odd headers", b"{}", [("", b"\xff" * 100), ("x" * 300, b"")]),
    # Just under the producer's 1 MiB limit: with the reason added it no longer fits the DLQ.
    ("1 MB", b"x" * 1_048_450, []),
]


async def produce_raw(
    settings: Settings, records: list[tuple[bytes | None, bytes | None, Headers]]
) -> None:
    producer: AIOKafkaProducer = make_producer(settings.kafka_bootstrap_servers, "poison-tests")
    await producer.start()
    try:
        for key, value, headers in records:
            await producer.send_and_wait(
                settings.commands_topic, value=value, key=key, headers=headers
            )
    finally:
        await producer.stop()


async def test_poison_records_between_two_good_commands_are_dead_lettered_and_both_run(
    worker: SyncUnderTest, emulator: RunningEmulator, clock: MovableClock, settings: Settings
) -> None:
    qbo_customer = await connect_and_map(worker, emulator, clock)
    emulator.state.create_invoice(
        REALM, {"CustomerRef": {"value": qbo_customer}, "TotalAmt": "12.30"}
    )
    first = await refresh(worker)
    await produce_raw(settings, [(REALM.encode(), value, h) for _, value, h in POISON])
    second = await refresh(worker)

    assert (await finished(worker, first))["status"] == "succeeded"
    assert (await finished(worker, second))["status"] == "succeeded"

    dead = await read_topic(settings.kafka_bootstrap_servers, settings.dead_letter_topic)
    assert [r.value for r in dead[:-1]] == [value for _, value, _ in POISON[:-1]]
    assert (dead[-1].key, dead[-1].value) == (None, b"")
    assert dict(dead[-1].headers)["dlq.value_omitted"] == b"1048466 bytes, too large to copy"
    for record in dead:
        headers = dict(record.headers)
        assert headers["dlq.reason"], headers
        assert headers["dlq.topic"] == settings.commands_topic.encode()
    assert all(r.key == REALM.encode() for r in dead[:-1])
    reasons = [dict(r.headers)["dlq.reason"] for r in dead]
    assert b"nested deeper than" in reasons[0]
    assert b"tombstone" in reasons[POISON.index(next(p for p in POISON if p[1] is None))]

    assert worker.service.worker_state() in ("running", "off")
    async with httpx.AsyncClient(base_url=worker.base_url) as http:
        ready = await http.get("/readyz")
    assert ready.status_code == 200


async def test_a_worker_whose_loop_dies_turns_readyz_503_and_ends_the_process_non_zero(
    sync: SyncUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = sync.service
    stop = asyncio.Event()
    polls = 0
    real_poll = CommandWorker.poll_once

    async def poll_then_break(worker: CommandWorker) -> int:
        # A failing record is retried in its realm's lane, never fatal; what can still end the
        # loop is the consumer itself failing (here, from its third poll on).
        nonlocal polls
        polls += 1
        if polls > 2:
            raise RuntimeError("the consumer broke")
        return await real_poll(worker)

    monkeypatch.setattr(CommandWorker, "poll_once", poll_then_break)
    worker = service.start_worker(stop)
    app = service.web_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as http:
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="off")
        )
        supervised = asyncio.create_task(supervise(worker, server, stop))

        code = await asyncio.wait_for(supervised, timeout=120)

        assert polls > 2
        assert code == EXIT_WORKER_DIED
        ready = await eventually(lambda: http.get("/readyz"), lambda r: r.status_code == 503)
        assert ready.json() == {"status": "unavailable", "checks": {"worker": "stopped"}}
