"""What a chaos run does; the defaults are the sizes `make chaos` and CI run."""

from __future__ import annotations

import argparse
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import ROOT

# The accounting API only: faults on the token endpoint are a different story (a refresh that
# times out after Intuit rotated the token cannot be told apart from one that never arrived).
QBO_API = "/v3/company/"


def default_faults() -> list[dict[str, Any]]:
    """10% throttling, 5% server errors, 2% connections dropped, and one real timeout."""
    return [
        {"kind": "slow", "path_contains": QBO_API, "times": 1, "probability": 0.05, "delay_s": 31},
        {"kind": "429", "path_contains": QBO_API, "probability": 0.10, "retry_after": 1},
        {"kind": "500", "path_contains": QBO_API, "probability": 0.03},
        {"kind": "503", "path_contains": QBO_API, "probability": 0.02},
        {"kind": "drop_connection", "path_contains": QBO_API, "probability": 0.02},
    ]


@dataclass(frozen=True)
class ChaosOptions:
    seed: int
    realms: int = 4
    customers_per_realm: int = 3
    # 2,400 invoices in all: a run takes about 1.5 minutes, well inside the 10-minute budget
    # (the projector writes a batch's new invoices with one insert_many).
    invoices_per_customer: int = 200
    operations: int = 50  # refresh commands and QuickBooks changes, in a seeded random mix
    workers: int = 2
    worker_kills: int = 3
    api_kills: int = 2
    token_expiries: int = 3
    # What outsiders send: poison records onto the commands and events topics, invoices set to
    # amounts integer micros could not hold, and invoices set beyond any exact range (repaired
    # in QuickBooks before the audit, after the CDC checkpoint has moved past them).
    poison_injections: int = 2
    odd_amounts: int = 3
    unstorable_amounts: int = 1
    kafka_restart: bool = True
    db_restart: bool = True  # FerretDB
    postgres_restart: bool = True
    webhook_drop_probability: float = 0.15
    cdc_poll_interval_s: float = 2.0
    faults: list[dict[str, Any]] = field(default_factory=default_faults)
    # "own": start a separate Kafka + FerretDB + PostgreSQL with infra.sh; "external": use the
    # ones the environment names (KAFKA_BOOTSTRAP_SERVERS, MONGODB_URI) and never restart them.
    instance: str = "own"
    state_dir: Path = ROOT / ".local" / "chaos"
    out: Path = ROOT / ".local" / "chaos" / "results.json"
    quiesce_timeout_s: float = 420.0

    @property
    def restarts_infra(self) -> bool:
        return self.instance == "own" and (
            self.kafka_restart or self.db_restart or self.postgres_restart
        )


def parse_options(argv: Sequence[str] | None = None) -> ChaosOptions:
    p = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    d = ChaosOptions(seed=0)
    p.add_argument("--seed", type=int, default=None, help="default: a random seed (printed)")
    p.add_argument("--realms", type=int, default=d.realms)
    p.add_argument("--customers-per-realm", type=int, default=d.customers_per_realm)
    p.add_argument("--invoices-per-customer", type=int, default=d.invoices_per_customer)
    p.add_argument("--operations", type=int, default=d.operations)
    p.add_argument("--workers", type=int, default=d.workers)
    p.add_argument("--worker-kills", type=int, default=d.worker_kills)
    p.add_argument("--api-kills", type=int, default=d.api_kills)
    p.add_argument("--token-expiries", type=int, default=d.token_expiries)
    p.add_argument("--poison-injections", type=int, default=d.poison_injections)
    p.add_argument("--odd-amounts", type=int, default=d.odd_amounts)
    p.add_argument("--unstorable-amounts", type=int, default=d.unstorable_amounts)
    p.add_argument("--no-kafka-restart", action="store_true")
    p.add_argument("--no-db-restart", action="store_true", help="never kill FerretDB")
    p.add_argument("--no-postgres-restart", action="store_true")
    p.add_argument("--no-faults", action="store_true", help="QuickBooks answers every request")
    p.add_argument("--instance", choices=["own", "external"], default="own")
    p.add_argument("--out", type=Path, default=d.out)
    a = p.parse_args(argv)
    if not 1 <= a.realms <= 9 or a.customers_per_realm < 1 or a.operations < 1 or a.workers < 1:
        p.error("sizes must be positive (at most 9 realms)")
    return ChaosOptions(
        seed=a.seed if a.seed is not None else secrets.randbelow(1_000_000),
        realms=a.realms,
        customers_per_realm=a.customers_per_realm,
        invoices_per_customer=a.invoices_per_customer,
        operations=a.operations,
        workers=a.workers,
        worker_kills=a.worker_kills,
        api_kills=a.api_kills,
        token_expiries=a.token_expiries,
        poison_injections=a.poison_injections,
        odd_amounts=a.odd_amounts,
        unstorable_amounts=a.unstorable_amounts,
        kafka_restart=not a.no_kafka_restart,
        db_restart=not a.no_db_restart,
        postgres_restart=not a.no_postgres_restart,
        faults=[] if a.no_faults else default_faults(),
        instance=a.instance,
        out=a.out,
    )
