"""Figure 8: many companies at once, with Intuit's limits and latency.

`--companies` companies (realms), each with one customer of `--company-invoices` invoices, are
refreshed all at once: one RefreshInvoices each, published together. The emulator keeps
Intuit's per-realm limits (10 concurrent, 10 a second, 500 a minute) and answers with its
latency model on (a base per request plus a cost per invoice, with jitter), so the figure is
about waiting on QuickBooks, which is what realm-level concurrency overlaps.

Reported, for the same work:
- the time until every command succeeded (stored, events acknowledged) with the worker as
  configured, and with `WORKER_CONCURRENCY=1` (the one-command-at-a-time worker);
- the physical limit: the slowest company's pages one after the other at the model's mean
  latency (its requests are sequential, and 2-3 requests stay far below Intuit's limits);
- webhook -> visible in the api for one more company with a few invoices, changed one at a
  time while the others sync.

Each round has a stack, topics and database of its own.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

import aiohttp
import structlog
from pymongo.asynchronous.database import AsyncDatabase

from bench import baselines, machine
from bench.api_client import ApiClient
from bench.connect import connect_realms, map_customer
from bench.costs import Costs, sync_snapshot
from bench.emulator_admin import EmulatorAdmin
from bench.full_sync import publish
from bench.kafka_counts import group_lag, topic_record_count
from bench.procs import ROOT
from bench.stack import Stack, create_topics, remove_run_data, run_settings
from bench.webhook_latency import webhook_latencies, write_latencies
from services.common.messages import RefreshInvoices
from services.common.mongo import Document, make_client
from services.common.settings import Settings

log = structlog.get_logger(__name__)

LATENCY_BASE_MS = 250
LATENCY_PER_ROW_US = 250  # a 1,000-invoice page: 0.5 s, about what Intuit takes
LATENCY_JITTER_PCT = 20
PAGE = 1000
IDLE_REALM = "9130350000099999"
IDLE = "realms-idle"


@dataclass
class Round:
    concurrency: int
    seconds: float = 0.0
    invoices: int = 0
    webhook: list[float] = field(default_factory=list)  # change -> visible in the api
    stored: list[float] = field(default_factory=list)  # change -> stored, event acked
    costs: Costs | None = None  # the sync process's CPU and MongoDB commands over the round
    # Raw insert_many of the documents the round stored, on the same database right after it:
    # what the database alone takes for the same writes (None: not measured in this round).
    raw: baselines.Throughput | None = None
    finished_s: dict[str, float] = field(default_factory=dict)  # realm -> its command finished
    visible_s: float = 0.0  # until the api's projector had projected every event as well
    throttled_realm: str | None = None  # held throttled by the emulator for a while
    throttled_s: float = 0.0
    dead_lettered: int = 0  # records on the dead-letter topic after the round
    failed: int = 0  # refreshes that finished failed
    throttled_answers: int = 0  # 429s the emulator answered for the throttled company
    busy_core_s: float = 0.0  # the machine's busy core-seconds until all were stored
    cpu_by_process: dict[str, float] = field(default_factory=dict)  # the same, by process kind

    def others_s(self, left_out: str) -> float:
        """Until every company but `left_out` had its refresh finished."""
        return max((t for r, t in self.finished_s.items() if r != left_out), default=0.0)


@dataclass
class MultiCompany:
    companies: int
    invoices_each: int
    physical_s: float
    rounds: list[Round]
    throttled: Round | None = None  # the same work, one company throttled (None: not run)
    throttle_pause_s: float = 60.0  # the sync's pause of a realm QBO keeps throttling


def physical_limit_s(invoices_each: int) -> float:
    """One company's pages one after the other, at the latency model's mean."""
    full, rest = divmod(invoices_each, PAGE)
    # The last request answers fewer than a page (none at all after a full one): that is how
    # the client knows it is done.
    rows = [PAGE] * full + [rest]
    return sum(LATENCY_BASE_MS / 1000 + r * LATENCY_PER_ROW_US / 1e6 for r in rows)


async def _probe(
    admin: EmulatorAdmin,
    api: ApiClient,
    db: AsyncDatabase[Document],
    sync_url: str,
    idle_ids: list[str],
    changes: int,
    into: Round,
    synced: asyncio.Event,
) -> None:
    """Changes of the idle company, one at a time, while the others sync (until `synced`, at
    most `changes` of each kind, at least one): in turn until the api shows one (the whole
    path, the api's projector included) and until the worker stored one (the worker's share).
    A change started once the others are done would measure an idle system: none is."""
    n = 0
    while not into.webhook or (not synced.is_set() and len(into.webhook) < changes):
        into.webhook += await webhook_latencies(
            admin, api, sync_url, IDLE_REALM, IDLE, idle_ids, 1, within_s=600, first=n
        )
        if synced.is_set() and into.stored:
            break
        into.stored += await write_latencies(
            admin, db, IDLE_REALM, idle_ids, 1, within_s=600, first=n + 1
        )
        n += 2


async def projected_all(settings: Settings, within_s: float = 1800.0) -> None:
    """Until the api's projector has committed every event on the topic."""
    deadline = time.monotonic() + within_s
    while await group_lag(
        settings.kafka_bootstrap_servers,
        settings.projector_consumer_group,
        settings.invoice_events_topic,
    ):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the projector did not catch up in {within_s} s")
        await asyncio.sleep(0.2)


async def _lift_after(admin: EmulatorAdmin, seconds: float) -> dict[str, int]:
    """Lift the throttle after `seconds`; returns how often each rule fired."""
    await asyncio.sleep(seconds)
    fired = await admin.faults_fired()
    await admin.clear_faults()
    log.warning("bench.realms_throttle_lifted", after_s=seconds, fired=fired)
    return fired


def realm_of(n: int) -> str:
    return f"91303500000{n:05d}"


async def multi_company(
    base: Settings,
    companies: int,
    invoices_each: int,
    webhook_changes: int,
    concurrencies: tuple[int, ...],
    keep: bool = False,
    throttled_s: float = 0.0,
) -> MultiCompany:
    rounds = []
    for i, concurrency in enumerate(concurrencies):
        # The idle company's latency is the first round's figure; later rounds only time the
        # same work (the api projecting it too, as in the first).
        changes = webhook_changes if i == 0 else 0
        rounds.append(
            await _round(base, companies, invoices_each, changes, concurrency, keep, i == 0)
        )
    throttled = None
    if throttled_s > 0:
        # The first round's work again, one company answered 429 for `throttled_s`: what it
        # costs the others, and what it costs that company (deferred, never dead-lettered).
        throttled = await _round(
            base, companies, invoices_each, 0, concurrencies[0], keep, False, throttled_s
        )
    return MultiCompany(
        companies,
        invoices_each,
        physical_limit_s(invoices_each),
        rounds,
        throttled,
        base.qbo_throttle_pause_s,
    )


async def _round(
    base: Settings,
    companies: int,
    invoices_each: int,
    webhook_changes: int,
    concurrency: int,
    keep: bool,
    measure_raw: bool,
    throttled_s: float = 0.0,
) -> Round:
    run_id = uuid.uuid4().hex[:8]
    settings = run_settings(
        base,
        "bench-realms",
        run_id,
        cdc_poll_interval_s=3600.0,
        worker_concurrency=concurrency,
        mongodb_command_counts=True,
    )
    logs = ROOT / ".local" / "bench" / "logs" / run_id
    stack = Stack(
        settings,
        logs,
        emulator_env={
            "QBO_EMULATOR_LATENCY_BASE_MS": str(LATENCY_BASE_MS),
            "QBO_EMULATOR_LATENCY_PER_ROW_US": str(LATENCY_PER_ROW_US),
            "QBO_EMULATOR_LATENCY_JITTER_PCT": str(LATENCY_JITTER_PCT),
        },
    )
    result = Round(concurrency)
    mongo = make_client(settings.mongodb_uri, app_name="qbo-sync-bench")
    db = mongo[settings.mongodb_database]
    realms = [realm_of(n) for n in range(companies)]
    try:
        await create_topics(settings)
        await stack.start_emulator()
        async with aiohttp.ClientSession() as http:
            admin = EmulatorAdmin(http, stack.emulator_url)
            token = None
            customers: dict[str, str] = {}
            for realm_id in [*realms, IDLE_REALM]:
                size = invoices_each if realm_id != IDLE_REALM else 20
                await admin.seed(realm_id, 1, size)
                token = (await admin.issue_tokens(realm_id))["access_token"]
                found = await admin.query_all(realm_id, "Customer", "", token)
                customers[realm_id] = str(found[-1]["Id"])
            await connect_realms(stack.wired(), admin, [*realms, IDLE_REALM], "bench")
            sync = await stack.start_sync("all")
            for realm_id, qbo_customer in customers.items():
                local = IDLE if realm_id == IDLE_REALM else f"realms-{realm_id}"
                await map_customer(http, stack.sync_url, local, realm_id, qbo_customer)
            api = ApiClient(http, stack.api_url)
            # The api runs in every round: "visible" is part of the work, and its projector
            # competes for the same machine and database whatever the worker's concurrency.
            await stack.start_api()
            if webhook_changes:
                done = await api.wait_command(await api.refresh(IDLE, uuid.uuid4().hex))
                if done["status"] != "succeeded":
                    raise RuntimeError(f"refresh of the idle company failed: {done}")
                idle_ids = [
                    str(i["invoice_id"]) for i in (await api.invoices_page(IDLE))["invoices"]
                ]

            commands = [
                RefreshInvoices(
                    realm_id=realm_id,
                    issued_by="service:qbo-sync-bench",
                    local_customer_id=f"realms-{realm_id}",
                )
                for realm_id in realms
            ]
            log.warning("bench.realms", companies=companies, concurrency=concurrency)
            lift = None
            if throttled_s > 0:
                # Intuit's 429 for every request of one company until the rule is lifted.
                result.throttled_realm, result.throttled_s = realms[0], throttled_s
                await admin.set_faults([{"kind": "429", "realm_id": realms[0]}], seed=1)
                lift = asyncio.create_task(_lift_after(admin, throttled_s))
            before = await sync_snapshot(http, stack.sync_url, sync)
            busy_before, processes_before = machine.busy_core_seconds(), machine.cpu_by_process()
            started = time.perf_counter()
            await asyncio.gather(*(publish(settings, c) for c in commands))
            ids = [c.command_id for c in commands]
            synced = asyncio.Event()
            probe = (
                asyncio.create_task(
                    _probe(
                        admin, api, db, stack.sync_url, idle_ids, webhook_changes, result, synced
                    )
                )
                if webhook_changes
                else None
            )
            while len(result.finished_s) < len(ids):
                async for done in db["commands"].find(
                    {"_id": {"$in": ids}, "status": {"$in": ["succeeded", "failed"]}},
                    {"realm_id": 1},
                ):
                    result.finished_s.setdefault(
                        str(done["realm_id"]), time.perf_counter() - started
                    )
                await asyncio.sleep(0.1)
            result.seconds = time.perf_counter() - started
            result.busy_core_s = machine.busy_core_seconds() - busy_before
            result.cpu_by_process = machine.cpu_since(processes_before)
            synced.set()
            await projected_all(settings)
            result.visible_s = time.perf_counter() - started
            if lift is not None:
                result.throttled_answers = sum((await lift).values())
            result.costs = Costs.between(before, await sync_snapshot(http, stack.sync_url, sync))
            if probe is not None:
                await probe
            result.failed = await db["commands"].count_documents(
                {"_id": {"$in": ids}, "status": "failed"}
            )
            if result.failed and not throttled_s:
                raise RuntimeError(f"{result.failed} refreshes failed")
            result.invoices = await db["invoices"].count_documents({"realm_id": {"$in": realms}})
            result.dead_lettered = await topic_record_count(
                settings.kafka_bootstrap_servers, settings.dead_letter_topic
            )
            if measure_raw:
                log.warning("bench.realms_raw_insert", invoices=result.invoices)
                result.raw = await asyncio.to_thread(
                    baselines.raw_insert_concurrent,
                    settings.mongodb_uri,
                    settings.mongodb_database,
                    [(r, customers[r]) for r in realms],
                    min(concurrency, companies),
                )
    except BaseException:
        print(stack.logs_tail())
        raise
    finally:
        await stack.stop_all()
        if not keep:
            await remove_run_data(settings)
        await mongo.close()
    return result
