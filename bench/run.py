"""One benchmark run: set the system up once, measure the figures, tear it down.

Data set: one company (realm) with two customers, seeded through the emulator's seed endpoint:
"big" holds all `--invoices` (100,000: one RefreshInvoices command syncs them all, 100 pages of
1000) and "small" holds `--small-invoices` (100: the listing the api serves in figures 4-5).

Order matters, so that no figure pays for another's work:
- 4. and 5. first, while the database holds only "small": webhook latency and listing load
  against the api. The api is then stopped, so its projector does not compete with figure 1
  for the 2 cores (projecting 100,000 events is not what figure 1 measures).
- 1. the full sync of "big"; 2. the naive baseline over the same invoices (time-boxed), and
  our own time for the same number of invoices; 3. raw `insert_many` of figure 1's documents.
- 4b. webhook -> stored with figure 1's 100,000 invoices in the write model: on FerretDB v1
  every guarded write scans the collection, so this is where the size of the books shows.

The emulator's per-realm throttle (Intuit's 500 requests/minute) is lifted for the benchmark:
it measures qbo-sync, not Intuit's quota. The CDC poller is slowed to once an hour so it does
not add QBO reads to the figures.
"""

from __future__ import annotations

import asyncio
import os
import platform
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from pymongo.asynchronous.database import AsyncDatabase

from bench import baselines
from bench.api_client import AUTH, ApiClient
from bench.connect import connect_realms, map_customer
from bench.emulator_admin import EmulatorAdmin
from bench.full_sync import FullSync, full_sync, seconds_to_first
from bench.http_load import bare_server, run_loadgen
from bench.loadgen import LoadResult
from bench.options import BenchOptions
from bench.procs import ROOT, Child
from bench.realms import MultiCompany, multi_company
from bench.report import Report
from bench.stack import Stack, create_topics, remove_run_data, run_settings
from bench.stats import percentile, ratio
from bench.webhook_latency import webhook_latencies, write_latencies
from services.common.logging import configure_logging
from services.common.mongo import Document, make_client
from services.common.settings import Settings

REALM = "9130350000000001"
BIG, SMALL = "bench-big", "bench-small"

log = structlog.get_logger(__name__)


@dataclass
class Figures:
    """Everything measured, gathered before the report is written in figure order."""

    webhook: list[float] | None = None
    load_api: LoadResult | None = None
    load_bare: LoadResult | None = None
    payload_bytes: int = 0
    sync: FullSync | None = None
    sync_rss_mib: float = 0.0
    naive: baselines.Throughput | None = None
    ours_same_count_s: float = 0.0
    raw: baselines.Throughput | None = None
    probe: list[float] | None = None
    realms: MultiCompany | None = None


async def run_bench(options: BenchOptions, base: Settings) -> Report:
    run_id = uuid.uuid4().hex[:8]
    settings = run_settings(base, "bench", run_id, cdc_poll_interval_s=3600.0)
    logs = ROOT / ".local" / "bench" / "logs" / run_id
    stack = Stack(settings, logs, emulator_env={"QBO_EMULATOR_THROTTLE_PER_MINUTE": "100000000"})
    figures = Figures()
    details: dict[str, Any] = {
        "run_id": run_id,
        "logs": str(logs.relative_to(ROOT)),
        "options": {k: str(v) for k, v in vars(options).items()},
        "kafka": settings.kafka_bootstrap_servers,
        "mongodb_database": settings.mongodb_database,
    }
    mongo = make_client(settings.mongodb_uri, app_name="qbo-sync-bench")
    db = mongo[settings.mongodb_database]
    try:
        await create_topics(settings)
        await stack.start_emulator()
        async with aiohttp.ClientSession() as http:
            admin = EmulatorAdmin(http, stack.emulator_url)
            big, small = await _seed(admin, options)
            await connect_realms(stack.wired(), admin, [REALM], "bench")
            sync = await stack.start_sync("all")
            await map_customer(http, stack.sync_url, BIG, REALM, big)
            await map_customer(http, stack.sync_url, SMALL, REALM, small)

            api_child = await stack.start_api()
            api = ApiClient(http, stack.api_url)
            small_ids = await _refresh_small(api, options.small_invoices)
            log.warning("bench.webhook_latency", changes=options.webhook_changes)
            figures.webhook = await webhook_latencies(
                admin, api, stack.sync_url, REALM, SMALL, small_ids, options.webhook_changes
            )
            log.warning("bench.http_load", seconds=options.load_seconds)
            await _http_load(figures, http, stack, options, logs)
            await api_child.stop()

            await _write_side(figures, options, settings, db, admin, stack, sync, big)
            if options.probe_changes:
                log.warning("bench.probe", changes=options.probe_changes)
                figures.probe = await write_latencies(
                    admin, db, REALM, small_ids, options.probe_changes
                )
            details["emulator"] = _emulator_summary(await admin.stats())
    except BaseException:
        print(stack.logs_tail())
        raise
    finally:
        await stack.stop_all()
        if not options.keep:
            await remove_run_data(settings)
        await mongo.close()
    if options.companies:
        # Its own stacks: the latency model is on and Intuit's limits apply there.
        figures.realms = await multi_company(
            base,
            options.companies,
            options.company_invoices,
            options.company_webhook_changes,
            (base.worker_concurrency, 1),
            options.keep,
        )
    report = build_report(figures, options, run_id)
    report.details.update(details)
    return report


async def _write_side(
    figures: Figures,
    options: BenchOptions,
    settings: Settings,
    db: AsyncDatabase[Document],
    admin: EmulatorAdmin,
    stack: Stack,
    sync: Child,
    big: str,
) -> None:
    """Figures 1-3: the full sync, the naive baseline and raw inserts of the same data."""
    log.warning("bench.full_sync", invoices=options.invoices)
    figures.sync = await full_sync(settings, db, REALM, BIG, big)
    figures.sync_rss_mib = (sync.peak_rss_kib() or 0) / 1024

    log.warning("bench.baseline", max_seconds=options.baseline_seconds)
    token = (await admin.issue_tokens(REALM))["access_token"]
    figures.naive = await asyncio.to_thread(
        baselines.naive_sync,
        stack.emulator_url,
        REALM,
        big,
        token,
        settings.mongodb_uri,
        settings.mongodb_database,
        options.baseline_invoices,
        options.baseline_seconds,
    )
    figures.ours_same_count_s = await seconds_to_first(
        db, REALM, big, figures.naive.count, figures.sync
    )

    log.warning("bench.raw_insert")
    figures.raw = await asyncio.to_thread(
        baselines.raw_insert, settings.mongodb_uri, settings.mongodb_database, REALM, big, None
    )


def build_report(f: Figures, options: BenchOptions, run_id: str) -> Report:
    report = Report(
        f"qbo-sync benchmark — run {run_id}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}"
    )
    ours = f.sync
    if ours is not None:
        s = f"1. full sync, 1 customer x {options.invoices:,} invoices (one RefreshInvoices)"
        report.add(s, "invoices/s end to end (stored + events acked)", ours.per_second)
        report.add(s, "elapsed", ours.seconds, "s")
        report.add(s, "invoices stored in MongoDB", ours.stored)
        report.add(s, "InvoiceUpdated events on the topic", ours.events_on_topic)
        report.add(s, "sync process peak RSS (VmHWM)", f.sync_rss_mib, "MiB")
    if f.naive is not None and ours is not None:
        same = f.naive.count / f.ours_same_count_s if f.ours_same_count_s > 0 else float("nan")
        boxed = (
            "" if f.naive.count >= ours.stored else f", stopped at {options.baseline_seconds:g} s"
        )
        s = "2. naive baseline (blocking loop: 1 request/page, 1 upsert/invoice)"
        report.add(s, f"invoices/s (first {f.naive.count:,} invoices{boxed})", f.naive.per_second)
        report.add(s, f"ours over the same first {f.naive.count:,} invoices", same, "inv/s")
        report.add(s, "ratio ours / baseline, same invoices", ratio(same, f.naive.per_second), "x")
        report.add(
            s, "ratio ours (all) / baseline", ratio(ours.per_second, f.naive.per_second), "x"
        )
    if f.raw is not None and ours is not None:
        s = "3. raw insert_many of the same documents (1000 per call)"
        report.add(s, f"docs/s ({f.raw.count:,} documents)", f.raw.per_second)
        report.add(s, "ours as a fraction of it", ratio(ours.per_second, f.raw.per_second))
    if f.webhook:
        s = f"4. webhook -> visible in the api ({len(f.webhook)} changes, one at a time)"
        report.add(s, "p50", percentile(f.webhook, 50) * 1000, "ms")
        report.add(s, "p99", percentile(f.webhook, 99) * 1000, "ms")
        report.add(s, "max", max(f.webhook) * 1000, "ms")
    if f.probe:
        s = f"4b. webhook -> stored + event acked, {options.invoices:,} invoices stored"
        report.add(s, f"p50 ({len(f.probe)} changes)", percentile(f.probe, 50) * 1000, "ms")
        report.add(s, "max", max(f.probe) * 1000, "ms")
    if f.load_api is not None and f.load_bare is not None:
        api, bare = f.load_api, f.load_bare
        s = (
            f"5. GET /api/customers/{{id}}/invoices ({min(options.small_invoices, 200)} "
            f"invoices, {f.payload_bytes:,} bytes), {options.load_connections} connections "
            f"x {options.load_seconds:g} s"
        )
        report.add(s, "api requests/s", api.requests_per_s)
        report.add(s, "api p50", api.p50_ms, "ms")
        report.add(s, "api p99", api.p99_ms, "ms")
        report.add(s, "api errors", api.errors)
        report.add(s, "bare Starlette requests/s", bare.requests_per_s)
        report.add(s, "bare Starlette p99", bare.p99_ms, "ms")
        report.add(s, "ratio api / bare", ratio(api.requests_per_s, bare.requests_per_s))
        report.details["load"] = {"api": vars(api), "bare": vars(bare)}
    if f.realms is not None:
        _realms_figure(report, f.realms)
    if ours is not None:
        report.details["full_sync_result"] = ours.result
    return report


def _realms_figure(report: Report, m: MultiCompany) -> None:
    s = (
        f"6. {m.companies} companies x {m.invoices_each:,} invoices refreshed at once "
        "(Intuit's limits and latency model on)"
    )
    report.add(s, "physical limit (slowest company's pages in a row)", m.physical_s, "s")
    concurrent, *others = m.rounds
    report.add(
        s,
        f"all stored + events acked, concurrency {concurrent.concurrency}",
        concurrent.seconds,
        "s",
    )
    report.add(s, "ratio to the physical limit", ratio(concurrent.seconds, m.physical_s), "x")
    report.add(s, "invoices stored", concurrent.invoices)
    for other in others:
        report.add(s, f"same work, concurrency {other.concurrency}", other.seconds, "s")
        report.add(s, "speed-up over it", ratio(other.seconds, concurrent.seconds), "x")
    if concurrent.stored:
        w = concurrent.stored
        report.add(
            s,
            f"webhook -> stored + event acked, one more company ({len(w)} changes) p50",
            percentile(w, 50) * 1000,
            "ms",
        )
        report.add(s, "webhook -> stored p99", percentile(w, 99) * 1000, "ms")
    if concurrent.webhook:
        w = concurrent.webhook
        report.add(
            s,
            f"webhook -> visible, one more company ({len(w)} changes) p50",
            percentile(w, 50) * 1000,
            "ms",
        )
        report.add(s, "webhook -> visible p99", percentile(w, 99) * 1000, "ms")


async def _seed(admin: EmulatorAdmin, options: BenchOptions) -> tuple[str, str]:
    """Seed "big" then "small"; returns their QBO customer ids."""
    await admin.seed(REALM, 1, options.invoices)
    await admin.seed(REALM, 1, options.small_invoices)
    token = (await admin.issue_tokens(REALM))["access_token"]
    customers = await admin.query_all(REALM, "Customer", "", token)
    big, small = (str(c["Id"]) for c in customers[-2:])
    return big, small


async def _refresh_small(api: ApiClient, expected: int) -> list[str]:
    command_id = await api.refresh(SMALL, uuid.uuid4().hex)
    done = await api.wait_command(command_id)
    if done["status"] != "succeeded":
        raise RuntimeError(f"refresh of {SMALL} failed: {done}")
    deadline = time.monotonic() + 60
    while True:
        body = await api.invoices_page(SMALL)
        if body["totals"]["count"] == expected:
            return [str(inv["invoice_id"]) for inv in body["invoices"]]
        if time.monotonic() > deadline:
            raise TimeoutError(f"the api shows {body['totals']['count']} of {expected} invoices")
        await asyncio.sleep(0.1)


async def _http_load(
    figures: Figures,
    http: aiohttp.ClientSession,
    stack: Stack,
    options: BenchOptions,
    logs: Path,
) -> None:
    limit = min(options.small_invoices, 200)
    url = f"{stack.api_url}/api/customers/{SMALL}/invoices?limit={limit}"
    async with http.get(url, headers=AUTH) as response:
        payload = await response.read()
    figures.payload_bytes = len(payload)
    figures.load_api = await run_loadgen(url, options.load_connections, options.load_seconds, AUTH)
    bare, bare_url = await bare_server(payload, logs)
    try:
        figures.load_bare = await run_loadgen(
            bare_url, options.load_connections, options.load_seconds, {}
        )
    finally:
        await bare.stop()


def _emulator_summary(stats: dict[str, Any]) -> dict[str, Any]:
    realm = stats.get("realms", {}).get(REALM, {})
    return {
        "qbo_requests": realm.get("requests"),
        "throttled": realm.get("throttled"),
        "token_calls": realm.get("token_calls"),
        "webhooks": stats.get("webhooks"),
    }


def main(options: BenchOptions) -> None:
    configure_logging("WARNING", json=False)
    began = time.perf_counter()
    report = asyncio.run(run_bench(options, Settings()))
    report.add("run", "total duration", time.perf_counter() - began, "s")
    print(report.table())
    report.write_json(options.out)
    shown = options.out.relative_to(ROOT) if options.out.is_relative_to(ROOT) else options.out
    print(f"figures written to {shown}")
