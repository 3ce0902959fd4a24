"""Sizes of a benchmark run; the defaults are the full size the project is measured at."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.procs import ROOT

DEFAULT_OUT = ROOT / ".local" / "bench" / "results.json"


@dataclass(frozen=True)
class BenchOptions:
    invoices: int = 100_000  # figure 1: one mapped customer holding all of them
    baseline_invoices: int | None = None  # figure 2: None = the same invoices as figure 1
    baseline_seconds: float = 60.0  # figure 2's time box (FerretDB makes it quadratic)
    small_invoices: int = 100  # figures 4 and 5: the customer the api serves
    webhook_changes: int = 200
    load_seconds: float = 10.0
    load_connections: int = 32
    probe_changes: int = 3  # figure 4b: webhook -> stored, with figure 1's invoices stored
    # Figure 7: a separate refresh of this many invoices, profiled (0: no profiles). Separate,
    # so the profiler's own cost never shows in the CPU figures.
    profile_invoices: int = 2000
    companies: int = 50  # figure 8: companies refreshed at once (0 skips the figure)
    company_invoices: int = 2000
    company_webhook_changes: int = 50  # figure 8: webhook -> visible for one more company
    # Figure 8b: the same work again with one company answered 429 for this long (0: skipped).
    throttled_company_minutes: float = 0.0
    # Run one figure alone ("realms": figure 8), e.g. to profile it; None runs them all.
    only: str | None = None
    out: Path = DEFAULT_OUT
    keep: bool = False  # keep the run's topics and database for inspection


def parse_options(argv: Sequence[str] | None = None) -> BenchOptions:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    d = BenchOptions()
    p.add_argument("--invoices", type=int, default=d.invoices)
    p.add_argument(
        "--baseline-invoices",
        type=int,
        default=d.baseline_invoices,
        help="invoices for the naive baseline (default: all of --invoices)",
    )
    p.add_argument("--baseline-seconds", type=float, default=d.baseline_seconds)
    p.add_argument("--probe-changes", type=int, default=d.probe_changes)
    p.add_argument("--profile-invoices", type=int, default=d.profile_invoices)
    p.add_argument("--small-invoices", type=int, default=d.small_invoices)
    p.add_argument("--webhook-changes", type=int, default=d.webhook_changes)
    p.add_argument("--load-seconds", type=float, default=d.load_seconds)
    p.add_argument("--load-connections", type=int, default=d.load_connections)
    p.add_argument("--companies", type=int, default=d.companies)
    p.add_argument("--company-invoices", type=int, default=d.company_invoices)
    p.add_argument("--company-webhook-changes", type=int, default=d.company_webhook_changes)
    p.add_argument(
        "--throttled-company-minutes",
        type=float,
        default=d.throttled_company_minutes,
        help="figure 8b: one more round with one company throttled by QBO for this long",
    )
    p.add_argument(
        "--only",
        choices=["realms"],
        default=d.only,
        help="run one figure alone (realms: figure 8, the companies refreshed at once)",
    )
    p.add_argument("--out", type=Path, default=d.out)
    p.add_argument("--keep", action="store_true")
    a = p.parse_args(argv)
    if a.invoices < 1 or a.small_invoices < 1 or a.webhook_changes < 1:
        p.error("sizes must be positive")
    if a.probe_changes < 0 or a.profile_invoices < 0:
        p.error("--probe-changes and --profile-invoices must not be negative")
    if a.only == "realms" and a.companies < 1:
        p.error("--only realms needs --companies of at least 1")
    if a.throttled_company_minutes < 0 or (a.throttled_company_minutes and a.companies < 2):
        p.error("--throttled-company-minutes needs --companies of at least 2")
    if a.companies < 0 or a.company_invoices < 1 or a.company_webhook_changes < 0:
        p.error("figure 8 sizes must not be negative")
    if not 1 <= a.load_connections <= 256 or not 0 < a.load_seconds <= 120:
        p.error("load: 1-256 connections for at most 120 s")
    return BenchOptions(
        invoices=a.invoices,
        baseline_invoices=a.baseline_invoices,
        baseline_seconds=a.baseline_seconds,
        probe_changes=a.probe_changes,
        profile_invoices=a.profile_invoices,
        companies=a.companies,
        company_invoices=a.company_invoices,
        company_webhook_changes=a.company_webhook_changes,
        throttled_company_minutes=a.throttled_company_minutes,
        small_invoices=a.small_invoices,
        webhook_changes=a.webhook_changes,
        load_seconds=a.load_seconds,
        load_connections=a.load_connections,
        only=a.only,
        out=a.out,
        keep=a.keep,
    )
