"""One benchmark run: set the system up once, measure the figures, tear it down.

Data set: one company (realm) with three customers, seeded through the emulator's seed endpoint:
"big" holds all `--invoices` (100,000: one RefreshInvoices command syncs them all, 100 pages of
1000), "small" holds `--small-invoices` (100: the listing the api serves in figures 4-5) and
"profiled" holds `--profile-invoices` (figure 7).

Order matters, so that no figure pays for another's work:
- 4. and 5. first, while the database holds only "small": webhook latency and listing load
  against the api. The api is then stopped, so its projector does not compete with figure 1
  for the 2 cores (projecting 100,000 events is not what figure 1 measures).
- 1. the full sync of "big"; 2. the naive baseline over the same invoices (time-boxed), and
  our own time for the same number of invoices; 3. raw `insert_many` of figure 1's documents.
- 4b. webhook -> stored with figure 1's 100,000 invoices in the write model: on FerretDB v1
  every guarded write scans the collection, so this is where the size of the books shows.
- 6. the api started again projects figure 1's events (catch-up): CPU and commands per event.
- 4c. and 5b. again, now that the write model and the read model hold figure 1's invoices too:
  webhook -> visible, and the listing load with the listing cache, then (5c) with the cache off
  (`API_LISTING_CACHE_ENTRIES=0`: every GET reads the page and the totals).
- 7. a separate refresh of "profiled", with both services' profilers on (`bench.profiled`):
  the top functions, written next to the results. Separate, so no figure pays the profiler.

Next to each time, the engine-independent costs (`bench.costs`): CPU seconds of the service
process (not wall time) and the MongoDB commands it sent, per invoice, change, event or request.

The emulator's per-realm throttle (Intuit's 500 requests/minute) is lifted for the benchmark:
it measures qbo-sync, not Intuit's quota. The CDC poller is slowed to once an hour so it does
not add QBO reads to the figures.
"""

from __future__ import annotations

import asyncio
import os
import platform
import pstats
import signal
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from pymongo.asynchronous.database import AsyncDatabase

from bench import baselines, machine
from bench.api_client import AUTH, ApiClient
from bench.connect import connect_realms, map_customer
from bench.costs import Costs, api_snapshot, sync_snapshot
from bench.emulator_admin import EmulatorAdmin
from bench.full_sync import FullSync, full_sync, seconds_to_first
from bench.http_load import bare_server, run_loadgen
from bench.loadgen import LoadResult
from bench.options import BenchOptions
from bench.procs import ROOT, Child
from bench.realms import MultiCompany, Round, multi_company, projected_all
from bench.report import Report
from bench.stack import Stack, create_topics, remove_run_data, run_settings
from bench.stats import percentile, ratio
from bench.webhook_latency import webhook_latencies, write_latencies
from services.common.logging import configure_logging
from services.common.mongo import Document, make_client
from services.common.settings import Settings

REALM = "9130350000000001"
BIG, SMALL, PROFILED = "bench-big", "bench-small", "bench-profiled"
PROFILE_TOP = 8  # functions per profile shown in the table (the files hold 40)
REST_S = 5.0  # how long the sync process's CPU at rest is measured

log = structlog.get_logger(__name__)


@dataclass
class Figures:
    """Everything measured, gathered before the report is written in figure order."""

    webhook: list[float] | None = None
    webhook_full: list[float] | None = None  # 4c., everything stored and projected
    webhook_full_api: Costs | None = None
    load_api: LoadResult | None = None
    load_full: LoadResult | None = None  # 5b., everything stored and projected
    load_full_costs: Costs | None = None
    load_uncached: LoadResult | None = None  # 5c., the same with the listing cache off
    load_uncached_costs: Costs | None = None
    load_bare: LoadResult | None = None
    payload_bytes: int = 0
    payload: bytes = b""  # figure 5's listing body, which the bare endpoint serves
    sync: FullSync | None = None
    sync_rss_mib: float = 0.0
    naive: baselines.Throughput | None = None
    ours_same_count_s: float = 0.0
    raw: baselines.Throughput | None = None
    probe: list[float] | None = None
    # Engine-independent costs of the figures above (see bench.costs).
    sync_costs: Costs | None = None  # 1.
    sync_rest_cpu_per_s: float = 0.0  # 1., CPU seconds per second of the sync process at rest
    webhook_sync: Costs | None = None  # 4., sync process
    webhook_api: Costs | None = None  # 4., api process (its projector's commands)
    load_costs: Costs | None = None  # 5., api process
    probe_costs: Costs | None = None  # 4b.
    catch_up: Costs | None = None  # 6.
    catch_up_s: float = 0.0
    profiles: dict[str, list[tuple[str, float]]] = field(default_factory=dict)  # 7.
    profile_sync: FullSync | None = None
    realms: MultiCompany | None = None


async def run_bench(options: BenchOptions, base: Settings) -> Report:
    run_id = uuid.uuid4().hex[:8]
    figures = Figures()
    details: dict[str, Any] = {
        "run_id": run_id,
        "options": {k: str(v) for k, v in vars(options).items()},
    }
    if options.only != "realms":
        details.update(await _figures_1_to_7(figures, options, base, run_id))
    if options.companies:
        # Its own stacks: the latency model is on and Intuit's limits apply there.
        figures.realms = await multi_company(
            base,
            options.companies,
            options.company_invoices,
            options.company_webhook_changes,
            (base.worker_concurrency, 1),
            options.keep,
            options.throttled_company_minutes * 60,
        )
    report = build_report(figures, options, run_id)
    report.details.update(details)
    return report


async def _figures_1_to_7(
    figures: Figures, options: BenchOptions, base: Settings, run_id: str
) -> dict[str, Any]:
    """Figures 1-7 on one stack; returns what the report's details say about the run."""
    settings = run_settings(
        base, "bench", run_id, cdc_poll_interval_s=3600.0, mongodb_command_counts=True
    )
    logs = ROOT / ".local" / "bench" / "logs" / run_id
    profile_dir = options.out.parent if options.profile_invoices else None
    stack = Stack(
        settings,
        logs,
        emulator_env={"QBO_EMULATOR_THROTTLE_PER_MINUTE": "100000000"},
        profile_dir=profile_dir,
    )
    details: dict[str, Any] = {
        "logs": str(logs.relative_to(ROOT)),
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
            big, small, profiled = await _seed(admin, options)
            await connect_realms(stack.wired(), admin, [REALM], "bench")
            sync = await stack.start_sync("all")
            await map_customer(http, stack.sync_url, BIG, REALM, big)
            await map_customer(http, stack.sync_url, SMALL, REALM, small)
            await map_customer(http, stack.sync_url, PROFILED, REALM, profiled)

            api_child = await stack.start_api()
            api = ApiClient(http, stack.api_url)
            small_ids = await _refresh_small(api, options.small_invoices)
            log.warning("bench.webhook_latency", changes=options.webhook_changes)
            sync_before = await sync_snapshot(http, stack.sync_url, sync)
            api_before = await api_snapshot(http, stack.api_url, api_child)
            figures.webhook = await webhook_latencies(
                admin, api, stack.sync_url, REALM, SMALL, small_ids, options.webhook_changes
            )
            figures.webhook_sync = Costs.between(
                sync_before, await sync_snapshot(http, stack.sync_url, sync)
            )
            figures.webhook_api = Costs.between(
                api_before, await api_snapshot(http, stack.api_url, api_child)
            )
            log.warning("bench.http_load", seconds=options.load_seconds)
            await _http_load(figures, http, stack, api_child, options, logs)
            await _bare_load(figures, options, logs)
            await api_child.stop()

            await _write_side(figures, options, settings, db, admin, stack, sync, big, http)
            if options.probe_changes:
                log.warning("bench.probe", changes=options.probe_changes)
                sync_before = await sync_snapshot(http, stack.sync_url, sync)
                figures.probe = await write_latencies(
                    admin, db, REALM, small_ids, options.probe_changes
                )
                figures.probe_costs = Costs.between(
                    sync_before, await sync_snapshot(http, stack.sync_url, sync)
                )
            log.warning("bench.catch_up")
            api_child = await stack.start_api()
            await _catch_up(figures, http, settings, stack, api_child)
            log.warning("bench.full_size_reads", changes=options.webhook_changes)
            api_before = await api_snapshot(http, stack.api_url, api_child)
            figures.webhook_full = await webhook_latencies(
                admin,
                api,
                stack.sync_url,
                REALM,
                SMALL,
                small_ids,
                options.webhook_changes,
                first=options.webhook_changes + options.probe_changes,
            )
            figures.webhook_full_api = Costs.between(
                api_before, await api_snapshot(http, stack.api_url, api_child)
            )
            figures.load_full, figures.load_full_costs = await _http_load(
                figures, http, stack, api_child, options, logs
            )
            await api_child.stop()
            api_child = await stack.start_api({"API_LISTING_CACHE_ENTRIES": "0"})
            figures.load_uncached, figures.load_uncached_costs = await _http_load(
                figures, http, stack, api_child, options, logs
            )
            if profile_dir is not None:
                log.warning("bench.profile", invoices=options.profile_invoices)
                await _profile(figures, settings, db, profile_dir, sync, api_child, profiled)
                details["profiles"] = {
                    name: str((profile_dir / f"{name}-profile.txt").relative_to(ROOT))
                    if profile_dir.is_relative_to(ROOT)
                    else str(profile_dir / f"{name}-profile.txt")
                    for name in figures.profiles
                }
            details["emulator"] = _emulator_summary(await admin.stats())
    except BaseException:
        print(stack.logs_tail())
        raise
    finally:
        await stack.stop_all()
        if not options.keep:
            await remove_run_data(settings)
        await mongo.close()
    return details


async def _write_side(
    figures: Figures,
    options: BenchOptions,
    settings: Settings,
    db: AsyncDatabase[Document],
    admin: EmulatorAdmin,
    stack: Stack,
    sync: Child,
    big: str,
    http: aiohttp.ClientSession,
) -> None:
    """Figures 1-3: the full sync, the naive baseline and raw inserts of the same data."""
    # What the sync process spends doing nothing (Kafka polls and heartbeats, timers): part of
    # any window measured, so the per-invoice figure is also given without it.
    resting = await sync_snapshot(http, stack.sync_url, sync)
    await asyncio.sleep(REST_S)
    before = await sync_snapshot(http, stack.sync_url, sync)
    figures.sync_rest_cpu_per_s = (before.cpu_s - resting.cpu_s) / REST_S
    log.warning("bench.full_sync", invoices=options.invoices)
    figures.sync = await full_sync(settings, db, REALM, BIG, big)
    figures.sync_costs = Costs.between(before, await sync_snapshot(http, stack.sync_url, sync))
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


async def _catch_up(
    figures: Figures,
    http: aiohttp.ClientSession,
    settings: Settings,
    stack: Stack,
    api: Child,
) -> None:
    """Figure 6: the api, started again, projects the events figure 1 left on the topic.

    Measured from the moment the api answers (its start-up is not projection) until the group
    has committed every event; the events counted are those its projector handled meanwhile.
    """
    before = await api_snapshot(http, stack.api_url, api)
    began = time.perf_counter()
    await projected_all(settings)
    figures.catch_up_s = time.perf_counter() - began
    figures.catch_up = Costs.between(before, await api_snapshot(http, stack.api_url, api))


async def _profile(
    figures: Figures,
    settings: Settings,
    db: AsyncDatabase[Document],
    profile_dir: Path,
    sync: Child,
    api: Child,
    profiled: str,
) -> None:
    """Figure 7: one more refresh, of "profiled", with both services' profilers on."""
    written = {c.name: profile_dir / f"{c.name}.prof" for c in (sync, api)}
    for path in written.values():
        path.unlink(missing_ok=True)
    for child in (sync, api):
        child.signal(signal.SIGUSR1)
    figures.profile_sync = await full_sync(settings, db, REALM, PROFILED, profiled)
    await projected_all(settings)
    for child in (sync, api):
        child.signal(signal.SIGUSR2)
    deadline = time.monotonic() + 60
    while not all(p.exists() for p in written.values()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"profiles not written: {sorted(map(str, written.values()))}")
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.5)  # the text file is written right after the .prof
    for name, path in written.items():
        figures.profiles[name] = top_functions(path, PROFILE_TOP)


def top_functions(path: Path, top: int) -> list[tuple[str, float]]:
    """The `top` functions by own time, with their share of the profile's total time."""
    stats = pstats.Stats(str(path))
    entries: dict[tuple[str, int, str], tuple[int, int, float, float, object]] = getattr(
        stats, "stats", {}
    )
    total = getattr(stats, "total_tt", 0.0) or 1.0
    ranked = sorted(entries.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    return [
        (f"{Path(file).name}:{line}({func})", own / total)
        for (file, line, func), (_, _, own, _, _) in ranked
    ]


def _per(value: float, count: int) -> float:
    return value / count if count else float("nan")


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
        if f.sync_costs is not None:
            c = f.sync_costs
            report.add(
                s, "sync process CPU per stored invoice", _per(c.cpu_s, ours.stored) * 1e6, "µs"
            )
            busy = c.cpu_s - f.sync_rest_cpu_per_s * ours.seconds
            report.add(
                s,
                "the same, less its CPU at rest over that time",
                _per(busy, ours.stored) * 1e6,
                "µs",
            )
            report.add(s, "sync process CPU at rest", f.sync_rest_cpu_per_s * 1e3, "ms/s")
            report.add(
                s, "MongoDB commands per stored invoice", _per(c.total_commands(), ours.stored)
            )
            report.add(s, "MongoDB commands in all", c.total_commands())
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
        n = len(f.webhook)
        if f.webhook_sync is not None:
            sync_commands = f.webhook_sync.total_commands()
            report.add(s, "sync MongoDB commands per change", _per(sync_commands, n))
            report.add(s, "sync process CPU per change", _per(f.webhook_sync.cpu_s, n) * 1e3, "ms")
        if f.webhook_api is not None:
            projector = f.webhook_api.commands["projector"]
            report.add(s, "projector MongoDB commands per change", _per(projector, n))
            if f.webhook_sync is not None:
                both = f.webhook_sync.total_commands() + projector
                report.add(s, "MongoDB commands per change, sync + projector", _per(both, n))
    if f.probe:
        s = f"4b. webhook -> stored + event acked, {options.invoices:,} invoices stored"
        report.add(s, f"p50 ({len(f.probe)} changes)", percentile(f.probe, 50) * 1000, "ms")
        report.add(s, "max", max(f.probe) * 1000, "ms")
        if f.probe_costs is not None:
            report.add(
                s,
                "sync MongoDB commands per change",
                _per(f.probe_costs.total_commands(), len(f.probe)),
            )
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
        if f.load_costs is not None and f.load_costs.requests:
            c = f.load_costs
            report.add(
                s, "api MongoDB commands per request", _per(c.commands["service"], c.requests)
            )
            report.add(s, "api process CPU per request", _per(c.cpu_s, c.requests) * 1e6, "µs")
        report.details["load"] = {"api": vars(api), "bare": vars(bare)}
    if f.catch_up is not None:
        c = f.catch_up
        s = "6. the api projects figure 1's events (catch-up after a restart)"
        report.add(s, "events projected", c.events_projected)
        report.add(
            s,
            "events/s",
            _per(c.events_projected, 1) / f.catch_up_s if f.catch_up_s else float("nan"),
        )
        report.add(
            s, "api process CPU per projected event", _per(c.cpu_s, c.events_projected) * 1e6, "µs"
        )
        report.add(
            s,
            "projector MongoDB commands per event",
            _per(c.commands["projector"], c.events_projected),
        )
    if f.webhook_full:
        s = (
            f"4c. webhook -> visible in the api, {options.invoices:,} more invoices stored and "
            f"projected ({len(f.webhook_full)} changes)"
        )
        report.add(s, "p50", percentile(f.webhook_full, 50) * 1000, "ms")
        report.add(s, "p99", percentile(f.webhook_full, 99) * 1000, "ms")
        if f.webhook_full_api is not None:
            projector = f.webhook_full_api.commands["projector"]
            report.add(
                s, "projector MongoDB commands per change", _per(projector, len(f.webhook_full))
            )
    for name, load, costs in (
        ("5b. the same GET load, everything stored and projected", f.load_full, f.load_full_costs),
        (
            "5c. the same, listing cache off (API_LISTING_CACHE_ENTRIES=0)",
            f.load_uncached,
            f.load_uncached_costs,
        ),
    ):
        if load is None:
            continue
        report.add(name, "api requests/s", load.requests_per_s)
        report.add(name, "api p50", load.p50_ms, "ms")
        report.add(name, "api p99", load.p99_ms, "ms")
        report.add(name, "api errors", load.errors)
        if costs is not None and costs.requests:
            commands = _per(costs.commands["service"], costs.requests)
            report.add(name, "api MongoDB commands per request", commands)
            report.add(
                name, "api process CPU per request", _per(costs.cpu_s, costs.requests) * 1e6, "µs"
            )
    if f.profiles and f.profile_sync is not None:
        s = (
            f"7. profiled refresh of {f.profile_sync.stored:,} invoices: top functions by own "
            "time (share of profiled time)"
        )
        for name, top in f.profiles.items():
            for function, share in top:
                report.add(s, f"{name}: {function}", share * 100, "%")
    if f.realms is not None:
        _realms_figure(report, f.realms)
    if ours is not None:
        report.details["full_sync_result"] = ours.result
    return report


def _realms_figure(report: Report, m: MultiCompany) -> None:
    s = (
        f"8. {m.companies} companies x {m.invoices_each:,} invoices refreshed at once "
        "(Intuit's limits and latency model on)"
    )
    concurrent, *others = m.rounds
    report.add(s, "QBO-bound limit (slowest company's pages in a row)", m.physical_s, "s")
    raw = concurrent.raw
    limit = m.physical_s
    if raw is not None:
        # What the database alone takes for the same documents, on the same database in the
        # same run: no sync can store them faster, whatever QBO allows.
        report.add(
            s,
            f"database-bound limit: raw insert_many of the {raw.count:,} documents, "
            f"{min(concurrent.concurrency, m.companies)} companies at once",
            raw.seconds,
            "s",
        )
        report.add(s, "raw insert_many docs/s", raw.per_second)
        limit = max(limit, raw.seconds)
        report.add(s, "physical limit (the larger of the two)", limit, "s")
    report.add(
        s,
        f"all stored + events acked, concurrency {concurrent.concurrency}",
        concurrent.seconds,
        "s",
    )
    report.add(s, "ratio to the physical limit", ratio(concurrent.seconds, limit), "x")
    report.add(s, "all visible in the api as well", concurrent.visible_s, "s")
    report.add(s, "ratio to the QBO-bound limit", ratio(concurrent.seconds, m.physical_s), "x")
    if raw is not None:
        report.add(
            s, "ratio to the database-bound limit", ratio(concurrent.seconds, raw.seconds), "x"
        )
        # The target (1.5x the QBO-bound limit) cannot be met when the database alone takes
        # longer than that: said with the figure rather than hidden.
        reachable = raw.seconds <= 1.5 * m.physical_s
        report.add(s, "1.5x the QBO-bound limit reachable on this database", str(reachable))
    if concurrent.busy_core_s:
        # Every process of the stack shares the cores: the CPU they used for the round, over the
        # cores, is the least time the same work takes on this machine, whatever QBO allows.
        cores = machine.cores()
        floor = concurrent.busy_core_s / cores
        report.add(s, f"machine CPU busy until all stored ({cores} cores)", floor, "s")
        report.add(s, "its share of the time", floor / concurrent.seconds * 100, "%")
        for kind, seconds in sorted(concurrent.cpu_by_process.items(), key=lambda kv: -kv[1]):
            report.add(s, f"  CPU of {kind} until all stored", seconds, "s")
    report.add(s, "invoices stored", concurrent.invoices)
    _round_costs(report, s, concurrent)
    for other in others:
        report.add(s, f"same work, concurrency {other.concurrency}", other.seconds, "s")
        report.add(s, "speed-up over it", ratio(other.seconds, concurrent.seconds), "x")
        report.add(s, "all visible in the api as well, then", other.visible_s, "s")
        _round_costs(report, s, other)
    if concurrent.stored:
        w = concurrent.stored
        report.add(
            s,
            f"webhook -> stored + event acked, one more company ({len(w)} changes) p50",
            percentile(w, 50) * 1000,
            "ms",
        )
        report.add(s, "webhook -> stored p99", percentile(w, 99) * 1000, "ms")
    # Every sample, in the order taken: one slow change among a few decides the p99.
    samples = {"visible": concurrent.webhook, "stored": concurrent.stored}
    report.details["realms_samples_s"] = samples
    if concurrent.webhook:
        w = concurrent.webhook
        report.add(
            s,
            f"webhook -> visible, one more company ({len(w)} changes) p50",
            percentile(w, 50) * 1000,
            "ms",
        )
        report.add(s, "webhook -> visible p99", percentile(w, 99) * 1000, "ms")
    if m.throttled is not None and m.throttled.throttled_realm is not None:
        _throttled_figure(report, m, concurrent, m.throttled)


def _throttled_figure(report: Report, m: MultiCompany, free: Round, held: Round) -> None:
    """Figure 8b: one company throttled by QBO while the others sync, against the round in
    which none was; the others' throughput over the same invoices in both."""
    realm = held.throttled_realm or ""
    s = (
        f"8b. the same, one company answered 429 for {held.throttled_s / 60:g} min "
        f"(throttle pause {m.throttle_pause_s:g} s)"
    )
    others = m.invoices_each * (m.companies - 1)
    free_s, held_s = free.others_s(realm), held.others_s(realm)
    report.add(s, "429s answered to the throttled company", held.throttled_answers)
    report.add(s, "commands dead-lettered", held.dead_lettered)
    report.add(s, "refreshes failed", held.failed)
    report.add(s, "throttled company's refresh finished after", held.finished_s.get(realm, 0), "s")
    report.add(s, f"the other {m.companies - 1} companies: all stored after", held_s, "s")
    report.add(s, "their invoices/s", _per(others, 1) / held_s if held_s else float("nan"))
    report.add(s, "the same companies without the throttle (figure 8)", free_s, "s")
    report.add(s, "their invoices/s then", _per(others, 1) / free_s if free_s else float("nan"))
    report.add(s, "throughput throttled / unthrottled", ratio(free_s, held_s), "x")


def _round_costs(report: Report, section: str, r: Round) -> None:
    if r.costs is None or not r.invoices:
        return
    c, n = r.costs, r.invoices
    label = f"concurrency {r.concurrency}"
    report.add(section, f"sync CPU per stored invoice, {label}", _per(c.cpu_s, n) * 1e6, "µs")
    commands = _per(c.total_commands(), n)
    report.add(section, f"MongoDB commands per stored invoice, {label}", commands)


async def _seed(admin: EmulatorAdmin, options: BenchOptions) -> tuple[str, str, str]:
    """Seed "big", "small" then "profiled"; returns their QBO customer ids."""
    await admin.seed(REALM, 1, options.invoices)
    await admin.seed(REALM, 1, options.small_invoices)
    await admin.seed(REALM, 1, options.profile_invoices)
    token = (await admin.issue_tokens(REALM))["access_token"]
    customers = await admin.query_all(REALM, "Customer", "", token)
    big, small, profiled = (str(c["Id"]) for c in customers[-3:])
    return big, small, profiled


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
    api: Child,
    options: BenchOptions,
    logs: Path,
) -> tuple[LoadResult, Costs]:
    """The listing load against the api; figure 5 when it is the first."""
    limit = min(options.small_invoices, 200)
    url = f"{stack.api_url}/api/customers/{SMALL}/invoices?limit={limit}"
    async with http.get(url, headers=AUTH) as response:
        figures.payload = await response.read()
    figures.payload_bytes = len(figures.payload)
    before = await api_snapshot(http, stack.api_url, api)
    load = await run_loadgen(url, options.load_connections, options.load_seconds, AUTH)
    costs = Costs.between(before, await api_snapshot(http, stack.api_url, api))
    if figures.load_api is None:
        figures.load_api, figures.load_costs = load, costs
    return load, costs


async def _bare_load(figures: Figures, options: BenchOptions, logs: Path) -> None:
    """A bare Starlette endpoint serving figure 5's body, under the same load."""
    bare, bare_url = await bare_server(figures.payload, logs)
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
