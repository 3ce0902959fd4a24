"""Many companies at once, on real Kafka, FerretDB and the emulator over HTTP (docs/design.md
invariant 8): a big refresh does not hold another company's command back, a throttled company
is deferred while others go on, and a SIGKILL in the middle of 20 companies' concurrent
refreshes loses and duplicates nothing."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import Callable
from decimal import Decimal

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from qbo_emulator.testing import RunningEmulator
from services.common.messages import RefreshInvoices
from services.common.money import to_micros
from services.common.mongo import Document
from services.common.settings import Settings
from services.sync.oauth.intuit import TokenGrant
from services.sync.store import CustomerMapping
from tests.integration.conftest import SyncUnderTest
from tests.integration.test_sync_worker import events, finished
from tests.integration.test_worker_crash import worker_process  # noqa: F401 - a fixture
from tests.support import MovableClock, eventually, read_topic

pytestmark = pytest.mark.integration


async def company(
    sync: SyncUnderTest,
    emulator: RunningEmulator,
    clock: MovableClock,
    realm_id: str,
    customers: int,
    invoices_each: int,
) -> tuple[list[str], Decimal]:
    """Connect a realm and map `customers` local customers (`<realm>-c<i>`) to new QBO
    customers holding `invoices_each` invoices; returns the local ids and the total amount."""
    grant = TokenGrant.from_response(emulator.state.issue_tokens(realm_id), clock())
    await sync.service.vault.connect(realm_id, "alice", grant)
    local_ids, total = [], Decimal("0")
    for c in range(customers):
        customer = emulator.state.create_customer(realm_id, {"DisplayName": f"Customer {c}"})
        local_id = f"{realm_id}-c{c}"
        await sync.service.deps.mappings.save(
            CustomerMapping(local_id, realm_id, str(customer["Id"]), f"Customer {c}")
        )
        for i in range(invoices_each):
            amount = Decimal(i % 97) + Decimal("0.01") * (i % 100) + Decimal("0.05")
            emulator.state.create_invoice(
                realm_id,
                {"CustomerRef": {"value": customer["Id"]}, "TotalAmt": amount, "Balance": amount},
            )
            total += amount
        local_ids.append(local_id)
    return local_ids, total


async def refresh(sync: SyncUnderTest, realm_id: str, local_customer_id: str) -> str:
    command = RefreshInvoices(
        realm_id=realm_id, issued_by="api", local_customer_id=local_customer_id
    )
    await sync.service.publish([command])
    return command.command_id


async def test_a_small_company_is_not_held_back_by_a_big_refresh(
    worker: SyncUnderTest, emulator: RunningEmulator, clock: MovableClock
) -> None:
    (big,), _ = await company(worker, emulator, clock, "9130350000000101", 1, 4000)
    (small,), _ = await company(worker, emulator, clock, "9130350000000102", 1, 3)
    # Slow pages of the big company only: its refresh is 4 pages long.
    emulator.state.set_faults(
        [{"kind": "slow", "realm_id": "9130350000000101", "path_contains": "/query", "delay_s": 1}]
    )
    big_command = await refresh(worker, "9130350000000101", big)
    await eventually(
        lambda: worker.service.commands.get(big_command),
        lambda d: d is not None and d["status"] == "running",
    )

    small_command = await refresh(worker, "9130350000000102", small)
    done = await finished(worker, small_command)

    assert done["status"] == "succeeded"
    big_status = await worker.service.commands.get(big_command)
    assert big_status is not None and big_status["status"] == "running"  # still paging
    assert (await finished(worker, big_command, timeout_s=120))["status"] == "succeeded"


async def test_a_throttled_company_is_deferred_not_failed_and_others_go_on(
    worker: SyncUnderTest,
    emulator: RunningEmulator,
    clock: MovableClock,
    settings: Settings,
    mongo_db: AsyncDatabase[Document],
) -> None:
    throttled_realm, free_realm = "9130350000000201", "9130350000000202"
    (busy,), _ = await company(worker, emulator, clock, throttled_realm, 1, 5)
    (free,), _ = await company(worker, emulator, clock, free_realm, 1, 5)
    # Intuit keeps answering 429 for this company, beyond the client's three retries.
    emulator.state.set_faults([{"kind": "429", "realm_id": throttled_realm}])

    busy_command = await refresh(worker, throttled_realm, busy)
    deferred = await eventually(
        lambda: worker.service.commands.get(busy_command),
        lambda d: d is not None and d["status"] == "throttled",
    )
    assert deferred is not None and deferred["resumes_at"] is not None
    free_command = await refresh(worker, free_realm, free)
    assert (await finished(worker, free_command))["status"] == "succeeded"

    emulator.state.set_faults([])  # the throttle lifts: the deferred command runs again
    done = await finished(worker, busy_command, timeout_s=60)

    assert done["status"] == "succeeded", done
    assert await mongo_db.invoices.count_documents({"realm_id": throttled_realm}) == 5
    assert await read_topic(settings.kafka_bootstrap_servers, settings.dead_letter_topic) == []


@pytest.mark.throttle(0.05, 0.01)  # many pauses in a short test: Intuit's 60 s made short
async def test_a_company_throttled_through_many_pauses_dead_letters_nothing_and_others_go_on(
    worker: SyncUnderTest,
    emulator: RunningEmulator,
    clock: MovableClock,
    settings: Settings,
    mongo_db: AsyncDatabase[Document],
) -> None:
    throttled_realm = "9130350000000301"
    others = [f"913035000000030{n}" for n in range(2, 6)]
    (held,), _ = await company(worker, emulator, clock, throttled_realm, 1, 5)
    free = {r: (await company(worker, emulator, clock, r, 2, 30))[0] for r in others}
    # Intuit answers 429 to every request of this company until the rule is lifted.
    emulator.state.set_faults([{"kind": "429", "realm_id": throttled_realm}])
    held_command = await refresh(worker, throttled_realm, held)

    async def answered_429() -> int:
        return emulator.state.faults.fired.get("429", 0)

    # The client tries 4 times a pause: 20 answers are five pauses, each deferring the command.
    await eventually(answered_429, lambda n: n >= 20)
    free_commands = [await refresh(worker, r, c) for r, ids in free.items() for c in ids]
    for command_id in free_commands:
        assert (await finished(worker, command_id))["status"] == "succeeded"
    # Meanwhile the throttled company's refresh is deferred (or trying again), never finished.
    still = await worker.service.commands.get(held_command)
    assert still is not None and still["status"] in ("throttled", "running"), still
    await eventually(answered_429, lambda n: n >= 40)

    emulator.state.set_faults([])  # the throttle lifts
    done = await finished(worker, held_command)

    assert done["status"] == "succeeded", done
    assert await read_topic(settings.kafka_bootstrap_servers, settings.dead_letter_topic) == []
    counts = Counter(
        [d["realm_id"] async for d in mongo_db.invoices.find({}, {"realm_id": 1, "version": 1})]
    )
    assert counts == {throttled_realm: 5, **dict.fromkeys(others, 60)}
    assert await mongo_db.invoices.count_documents({"version": {"$ne": 1}}) == 0
    emitted = await events(settings)
    assert len({e["id"] for e in emitted}) == 5 + 60 * len(others)


async def test_sigkill_mid_way_through_20_concurrent_companies_loses_and_duplicates_nothing(
    sync: SyncUnderTest,
    emulator: RunningEmulator,
    clock: MovableClock,
    settings: Settings,
    mongo_db: AsyncDatabase[Document],
    worker_process: Callable[[], asyncio.Future[asyncio.subprocess.Process]],  # noqa: F811
) -> None:
    realms = [f"91303500000010{n:02d}" for n in range(20)]
    expected_total = Decimal("0")
    commands: list[str] = []
    customers: dict[str, list[str]] = {}
    for realm_id in realms:
        customers[realm_id], total = await company(sync, emulator, clock, realm_id, 2, 100)
        expected_total += total
    # Slow pages keep every company's refreshes in flight long enough to kill them mid-way.
    emulator.state.set_faults([{"kind": "slow", "path_contains": "/query", "delay_s": 0.5}])
    first = await worker_process()
    for realm_id in realms:  # two refreshes per company, interleaved across companies
        commands.append(await refresh(sync, realm_id, customers[realm_id][0]))
    for realm_id in realms:
        commands.append(await refresh(sync, realm_id, customers[realm_id][1]))

    async def stored() -> int:
        return await mongo_db.invoices.count_documents({})

    partial = await eventually(stored, lambda n: n >= 1000, timeout_s=120, interval_s=0.05)
    first.send_signal(signal.SIGKILL)
    await first.wait()
    assert 0 < partial < 4000, "the kill must land mid-way"

    async def statuses() -> Counter[str]:
        docs = mongo_db.commands.find({"_id": {"$in": commands}}, {"status": 1})
        return Counter([d["status"] async for d in docs])

    cut_off = await statuses()
    assert cut_off["running"] > 0, cut_off  # some commands were cut off in the middle

    emulator.state.set_faults([])
    await worker_process()  # a new member of the group takes every uncommitted command
    done = await eventually(
        statuses, lambda c: c["succeeded"] == len(commands), timeout_s=240, interval_s=1
    )
    assert done == Counter({"succeeded": 40})

    invoices = [
        d
        async for d in mongo_db.invoices.find(
            {}, {"total_amt_micros": 1, "version": 1, "realm_id": 1}
        )
    ]
    assert len(invoices) == 4000  # nothing lost
    assert {d["version"] for d in invoices} == {1}  # nothing stored twice
    assert sum(d["total_amt_micros"] for d in invoices) == to_micros(expected_total)
    assert await mongo_db.outbox.count_documents({}) == 0  # no event still owed
    assert Counter(d["realm_id"] for d in invoices) == dict.fromkeys(realms, 200)

    emitted = await events(settings)
    versions = Counter((e["data"]["realm_id"], e["data"]["invoice_id"]) for e in emitted)
    assert len(versions) == 4000  # every stored invoice has its event
    assert {e["data"]["version"] for e in emitted} == {1}
    by_id: dict[str, bytes] = {}
    for event in emitted:  # a repeat (at least once) is the same event
        body = repr(sorted(event["data"].items())).encode()
        assert by_id.setdefault(event["id"], body) == body
    distinct = {e["id"]: e for e in emitted}.values()
    assert sum(Decimal(e["data"]["total_amt"]) for e in distinct) == expected_total
    assert await read_topic(settings.kafka_bootstrap_servers, settings.dead_letter_topic) == []
