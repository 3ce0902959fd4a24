"""One chaos run, start to finish, and its verdict.

1. A Kafka + FerretDB + PostgreSQL instance of its own (infra.sh on other ports), the emulator
   seeded with `realms` x `customers_per_realm` customers x `invoices_per_customer` invoices, one
   sync web process (webhooks), `workers` sync workers and the api (with its projector), as
   processes.
2. Companies connected, customers mapped, and everything synced once, before any fault.
3. Faults switched on: QuickBooks errors and a real timeout, lost webhooks, then the seeded
   plan of `operations` with processes killed, tokens expired, broker and database restarted.
4. Quiesce: faults off, a final refresh of every customer, CDC past the last change, the outbox
   empty; then the audit compares the api's listings with QuickBooks until they agree or the
   time is up.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import aiohttp
from pymongo.asynchronous.database import AsyncDatabase

from bench.api_client import ApiClient
from bench.chaos.actions import Actions, PoisonInjector
from bench.chaos.compare import DELETED, Audit, Key, Shown, audit, expected_from_qbo, shown_by_api
from bench.chaos.evidence import account, diagnose
from bench.chaos.instance import InfraInstance
from bench.chaos.ledger import Customer, Ledger
from bench.chaos.options import ChaosOptions
from bench.chaos.plan import make_plan
from bench.chaos.supervisor import Supervisor
from bench.connect import connect_realms, map_customer
from bench.emulator_admin import EmulatorAdmin
from bench.kafka_counts import group_lag
from bench.procs import ROOT, Child
from bench.report import Report
from bench.stack import Stack, create_topics, remove_run_data, run_settings
from services.common.mongo import Document, make_client
from services.common.settings import Settings

BUDGET_S = 600.0


class ChaosFailed(RuntimeError):
    pass


def realm_ids(count: int) -> list[str]:
    return [f"91303500000000{n:02d}" for n in range(1, count + 1)]


async def run_chaos(options: ChaosOptions, base: Settings) -> tuple[Report, Audit | None]:
    began = time.monotonic()
    run_id = uuid.uuid4().hex[:8]
    instance: InfraInstance | None = None
    if options.instance == "own":
        instance = InfraInstance(options.state_dir)
        await instance.infra("reset")
        await instance.infra("up")
        base = base.model_copy(
            update={
                "kafka_bootstrap_servers": instance.kafka_bootstrap_servers,
                "mongodb_uri": instance.mongodb_uri,
            }
        )
    settings = run_settings(
        base,
        "chaos",
        run_id,
        cdc_poll_interval_s=options.cdc_poll_interval_s,
        # Loopback clocks agree; a short overlap keeps CDC from re-reading the seeded books.
        cdc_overlap_s=2.0,
        outbox_sweep_interval_s=5.0,
    )
    stack = Stack(settings, options.state_dir / "runs" / run_id)
    report = Report(f"qbo-sync chaos run {run_id} — seed {options.seed}")
    mongo = make_client(settings.mongodb_uri, app_name="qbo-sync-chaos")
    db = mongo[settings.mongodb_database]
    result: Audit | None = None
    supervisor: Supervisor | None = None
    try:
        await create_topics(settings)
        await stack.start_emulator()
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            admin = EmulatorAdmin(http, stack.emulator_url)
            api = ApiClient(http, stack.api_url)
            realms = realm_ids(options.realms)
            ledger = await _seed(admin, options, realms)
            await connect_realms(stack.wired(), admin, realms, "chaos")
            children = await _start_services(stack, options)
            for c in ledger.customers:
                await map_customer(http, stack.sync_url, c.local_id, c.realm_id, c.qbo_customer_id)
            rng = random.Random(options.seed)  # noqa: S311 - reproducible chaos, not secrets
            supervisor = Supervisor(children)
            actions = Actions(
                rng,
                admin,
                api,
                ledger,
                supervisor,
                realms,
                [c.name for c in children if c.name.startswith("sync-worker")],
                instance if options.restarts_infra else None,
                poison=PoisonInjector(
                    settings.kafka_bootstrap_servers,
                    settings.commands_topic,
                    settings.invoice_events_topic,
                ),
            )
            await _refresh_all(actions, api, ledger.customers)
            actions.note("initial sync done; faults on")
            await admin.configure_webhooks(
                url=f"{stack.sync_url}/webhooks/quickbooks",
                enabled=True,
                drop_probability=options.webhook_drop_probability,
                seed=options.seed,
            )
            if options.faults:
                await admin.set_faults(options.faults, seed=options.seed)
            supervisor.start()
            chaos_began = time.monotonic()
            await _play(actions, options, ledger)
            report.add("run", "operations (with faults)", options.operations)
            report.add("run", "chaos phase", time.monotonic() - chaos_began, "s")
            fired = await admin.faults_fired()
            await admin.clear_faults()
            await admin.configure_webhooks(drop_probability=0.0)
            quiet_began = time.monotonic()
            result = await _quiesce_and_audit(actions, options, settings, db, admin, ledger)
            report.add("run", "quiesce + audit", time.monotonic() - quiet_began, "s")
            report.details["diagnosis"] = await diagnose(settings, db, result)
            await account(
                report,
                settings,
                db,
                admin,
                supervisor,
                fired,
                children,
                ledger,
                actions.restarted,
                actions.kills_planned,
            )
            section = "what outsiders sent"
            injected = actions.poison.injected if actions.poison else 0
            report.add(section, "poison records injected (commands + events topics)", injected)
            report.add(section, "invoices set to odd-precision amounts", actions.odd_amounts)
            report.add(section, "invoices set to unstorable amounts", len(actions.unstorable))
            report.add(
                section, "  rejected invoices seen while CDC moved on", actions.rejected_seen
            )
            report.add(
                section,
                "  rejected invoices left after the repair",
                await db["rejected_invoices"].count_documents({}),
            )
            report.details["timeline"] = actions.log
    except BaseException:
        print(stack.logs_tail())
        raise
    finally:
        if supervisor is not None:
            await supervisor.stop()
        await stack.stop_all()
        if instance is not None:
            await instance.infra("down")
        else:
            await remove_run_data(settings)
        await mongo.close()
    duration = time.monotonic() - began
    if result is not None:
        for name, count in result.counts().items():
            report.add("audit (api vs QuickBooks)", name, count)
        report.details["examples"] = result.examples()
    report.add("verdict", "duration", duration, "s")
    report.add("verdict", "within the 10-minute budget", "yes" if duration < BUDGET_S else "NO")
    report.add("verdict", "seed", str(options.seed))
    clean = result is not None and result.clean
    report.add("verdict", "result", "PASS" if clean else "FAIL")
    logs = stack.logs
    report.details["logs"] = str(logs.relative_to(ROOT) if logs.is_relative_to(ROOT) else logs)
    return report, result


async def _seed(admin: EmulatorAdmin, options: ChaosOptions, realms: list[str]) -> Ledger:
    customers: list[Customer] = []
    live: dict[Customer, list[str]] = {}
    for realm in realms:
        await admin.seed(realm, options.customers_per_realm, options.invoices_per_customer)
        token = (await admin.issue_tokens(realm))["access_token"]
        for row in await admin.query_all(realm, "Customer", "", token):
            customer = Customer(realm, str(row["Id"]))
            customers.append(customer)
            invoices = await admin.invoices_of(realm, customer.qbo_customer_id, token)
            live[customer] = [str(i["Id"]) for i in invoices]
    return Ledger(customers, live)


async def _start_services(stack: Stack, options: ChaosOptions) -> list[Child]:
    """The web process stays up (it receives webhooks); workers and the api get killed."""
    await stack.start_sync("web", name="sync-web")
    workers = [
        await stack.start_sync("worker", name=f"sync-worker-{i}") for i in range(options.workers)
    ]
    return [*workers, await stack.start_api()]


async def _refresh_all(actions: Actions, api: ApiClient, customers: list[Customer]) -> None:
    """Refresh every customer and wait for all; a command that failed is sent again."""
    pending = {c: await actions.refresh(c) for c in customers}
    for _attempt in range(3):
        failed: dict[Customer, str] = {}
        for customer, command_id in pending.items():
            done = await api.wait_command(command_id, within_s=180)
            if done["status"] != "succeeded":
                actions.note(f"refresh of {customer.local_id} {done['status']}: {done['reason']}")
                failed[customer] = await actions.refresh(customer)
        if not failed:
            return
        pending = failed
    raise ChaosFailed(f"refresh kept failing for {sorted(c.local_id for c in pending)}")


async def _play(actions: Actions, options: ChaosOptions, ledger: Ledger) -> None:
    plan = make_plan(
        actions.rng,
        options.operations,
        len(ledger.customers),
        workers=options.workers,
        worker_kills=options.worker_kills,
        api_kills=options.api_kills,
        token_expiries=options.token_expiries,
        realms=options.realms,
        kafka_restart=options.kafka_restart and options.restarts_infra,
        db_restart=options.db_restart and options.restarts_infra,
        poison_injections=options.poison_injections,
        odd_amounts=options.odd_amounts,
        unstorable_amounts=options.unstorable_amounts,
        postgres_restart=options.postgres_restart and options.restarts_infra,
    )
    background: list[asyncio.Task[None]] = []
    for step in plan:
        for event in step.chaos:
            background.append(asyncio.create_task(actions.chaos(event)))
        await actions.operate(step.operation, ledger.customers[step.customer])
        await asyncio.sleep(actions.rng.uniform(0.1, 0.8))
    await asyncio.gather(*background)


async def _quiesce_and_audit(
    actions: Actions,
    options: ChaosOptions,
    settings: Settings,
    db: AsyncDatabase[Document],
    admin: EmulatorAdmin,
    ledger: Ledger,
) -> Audit:
    deadline = time.monotonic() + options.quiesce_timeout_s
    await actions.supervisor.wait_all_alive()
    await admin.flush_webhooks()
    actions.note("quiesce: final refresh of every customer")
    await _refresh_all(actions, actions.api, ledger.customers)
    await _wait(lambda: _cdc_caught_up(db, actions.realms, actions.last_change), deadline, "CDC")
    if actions.unstorable:
        # The checkpoints moved past the invoices nothing can store (they are only recorded):
        # now a person fixes them in QuickBooks, and CDC alone must bring them in.
        actions.rejected_seen = await db["rejected_invoices"].count_documents({})
        actions.note(f"quiesce: CDC moved on past {actions.rejected_seen} rejected invoice(s)")
        await actions.repair_unstorable()
        await _wait(
            lambda: _cdc_caught_up(db, actions.realms, actions.last_change), deadline, "CDC"
        )
    await _wait(lambda: _outbox_empty(db), deadline, "outbox")
    actions.note("quiesce: CDC past the last change, outbox empty")
    await _wait(lambda: _projected(settings), deadline, "projector")
    actions.note("quiesce: the projector has committed every event; auditing")
    while True:
        result = await _audit(admin, actions.api, ledger)
        if result.clean or time.monotonic() > deadline:
            return result
        await asyncio.sleep(2.0)


async def _wait(check: Callable[[], Awaitable[bool]], deadline: float, what: str) -> None:
    while not await check():
        if time.monotonic() > deadline:
            raise ChaosFailed(f"{what} did not settle before the deadline")
        await asyncio.sleep(0.5)


async def _cdc_caught_up(db: AsyncDatabase[Document], realms: list[str], last: float) -> bool:
    """Every realm's CDC checkpoint is past the last change (a poll that began after it
    finished storing what it found)."""
    since = datetime.fromtimestamp(last, UTC)
    found = {
        d["_id"]: d["changed_since"]
        async for d in db["cdc_checkpoints"].find({"_id": {"$in": realms}})
    }
    return all(realm in found and found[realm] > since for realm in realms)


async def _projected(settings: Settings) -> bool:
    lag = await group_lag(
        settings.kafka_bootstrap_servers,
        settings.projector_consumer_group,
        settings.invoice_events_topic,
    )
    return lag == 0


async def _outbox_empty(db: AsyncDatabase[Document]) -> bool:
    return await db["outbox"].count_documents({}) == 0


async def _audit(admin: EmulatorAdmin, api: ApiClient, ledger: Ledger) -> Audit:
    expected: dict[Key, Shown] = {}
    tokens: dict[str, str] = {}
    for customer in ledger.customers:
        realm = customer.realm_id
        if realm not in tokens:
            tokens[realm] = (await admin.issue_tokens(realm))["access_token"]
        for invoice in await admin.invoices_of(realm, customer.qbo_customer_id, tokens[realm]):
            expected[(realm, customer.qbo_customer_id, str(invoice["Id"]))] = expected_from_qbo(
                invoice
            )
        for invoice_id in ledger.deleted.get(customer, set()):
            if await admin.get_invoice(realm, invoice_id) is not None:
                raise ChaosFailed(f"invoice {invoice_id} was deleted but QuickBooks still has it")
            expected[(realm, customer.qbo_customer_id, invoice_id)] = DELETED
    shown: list[tuple[Key, Shown]] = []
    for customer in ledger.customers:
        async for row in api.all_invoices(customer.local_id):
            key = (customer.realm_id, customer.qbo_customer_id, str(row["invoice_id"]))
            shown.append((key, shown_by_api(row)))
    optional = {
        (c.realm_id, c.qbo_customer_id, invoice_id)
        for c, invoice_id in ledger.created_by_run
        if invoice_id in ledger.deleted.get(c, set())
    }
    return audit(expected, shown, optional)
