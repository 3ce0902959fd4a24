"""What the chaos run does to the system: QuickBooks changes, refreshes and platform faults.

Every action tolerates the system being half down (that is the point): a refresh retries until
the api accepts it, and the platform faults run in the background while operations go on.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

from aiokafka.errors import KafkaError

from bench.api_client import ApiClient, ApiUnavailable
from bench.chaos.instance import InfraInstance
from bench.chaos.ledger import Customer, Ledger
from bench.chaos.supervisor import Supervisor
from bench.emulator_admin import EmulatorAdmin
from services.common.kafka import make_producer

# Records nothing may choke on (docs/design.md invariant 9), sent to both consumed topics: the
# nested-array bomb that once stopped all syncing, then bad UTF-8, an integer past Python's
# digit limit, a tombstone, and well-formed JSON that breaks the contract.
POISON: tuple[bytes | None, ...] = (
    b"[" * 100_000 + b"]" * 100_000,
    b'{"type":"RefreshInvoices","realm_id":"\xff\xfe"}',
    b'{"type":"RefreshInvoices","n":' + b"9" * 5_000 + b"}",
    None,
    b'{"specversion":"1.0","type":"RefreshInvoices","data":{"total_amt":1E+999999999}}',
)
# An amount nothing can hold exactly (beyond 20 integer digits): the invoice is recorded as
# rejected while the rest of its company goes on, until QuickBooks is "fixed" at the end.
UNSTORABLE = Decimal("1E+25")


@dataclass
class PoisonInjector:
    """Produces poison records onto the topics the services consume, keyed like real records
    so they land in the partitions real commands and events use."""

    bootstrap_servers: str
    commands_topic: str
    events_topic: str
    injected: int = 0

    async def inject(self, realm_id: str, invoice_key: str, within_s: float = 120.0) -> int:
        deadline = time.monotonic() + within_s
        while True:
            producer = make_producer(self.bootstrap_servers, client_id="chaos-poison")
            try:
                await producer.start()
                for value in POISON:
                    await producer.send_and_wait(self.commands_topic, value, key=realm_id.encode())
                    await producer.send_and_wait(self.events_topic, value, key=invoice_key.encode())
                self.injected += 2 * len(POISON)
                return 2 * len(POISON)
            except (KafkaError, OSError):
                if time.monotonic() > deadline:  # the broker may be restarting: try again
                    raise
                await asyncio.sleep(1.0)
            finally:
                await producer.stop()


RESTART_TARGETS = {
    "restart_kafka": "kafka",
    "restart_db": "ferretdb",
    "restart_postgres": "postgres",
}


def cents(rng: random.Random, low: int, high: int) -> Decimal:
    return Decimal(rng.randint(low, high)).scaleb(-2)


@dataclass
class Actions:
    rng: random.Random
    admin: EmulatorAdmin
    api: ApiClient
    ledger: Ledger
    supervisor: Supervisor
    realms: list[str]
    workers: list[str]
    instance: InfraInstance | None
    infra_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    log: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    last_change: float = 0.0  # wall-clock time of the last change made in QuickBooks
    restarted: dict[str, float] = field(default_factory=dict)  # kafka/ferretdb/postgres -> s
    kills_planned: int = 0
    poison: PoisonInjector | None = None
    unstorable: list[tuple[Customer, str]] = field(default_factory=list)
    odd_amounts: int = 0
    rejected_seen: int = 0

    def note(self, text: str) -> None:
        self.log.append(f"{time.strftime('%H:%M:%S')} {text}")

    # -- operations -----------------------------------------------------------------------

    async def operate(self, operation: str, customer: Customer) -> None:
        if operation == "refresh":
            self.commands.append(await self.refresh(customer))
            self.note(f"refresh {customer.local_id}")
            return
        if operation == "refresh_companies":
            picks = self._same_place_in_every_realm(customer)
            self.commands.extend(await asyncio.gather(*(self.refresh(c) for c in picks)))
            self.note(f"refresh at once {', '.join(c.local_id for c in picks)}")
            return
        invoice_id = self.ledger.pick(self.rng, customer)
        self.note(f"{operation} {customer.local_id} invoice {invoice_id}")
        if operation == "create" or invoice_id is None:
            await self._create(customer)
        elif operation == "update":
            await self._update(customer, invoice_id)
        elif operation == "void":
            await self.admin.void_invoice(customer.realm_id, invoice_id)
            self.ledger.changes += 1
        elif operation == "delete":
            await self.admin.delete_invoice(customer.realm_id, invoice_id)
            self.ledger.removed(customer, invoice_id)
        self.last_change = time.time()

    def _same_place_in_every_realm(self, customer: Customer) -> list[Customer]:
        by_realm: dict[str, list[Customer]] = {}
        for c in self.ledger.customers:
            by_realm.setdefault(c.realm_id, []).append(c)
        place = by_realm[customer.realm_id].index(customer)
        return [cs[place % len(cs)] for cs in by_realm.values()]

    async def refresh(self, customer: Customer, within_s: float = 120.0) -> str:
        """POST refreshInvoices until the api accepts it (same Idempotency-Key every try)."""
        key = uuid.UUID(int=self.rng.getrandbits(128)).hex
        deadline = time.monotonic() + within_s
        while True:
            try:
                return await self.api.refresh(customer.local_id, key)
            except ApiUnavailable:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

    async def _create(self, customer: Customer) -> None:
        due = date(2026, 1, 1) + timedelta(days=self.rng.randint(0, 400))
        created = await self.admin.create_invoice(
            customer.realm_id,
            {
                "CustomerRef": {"value": customer.qbo_customer_id},
                "TotalAmt": cents(self.rng, 100, 99_999),
                "DueDate": due.isoformat(),
            },
        )
        self.ledger.created(customer, str(created["Id"]))

    async def _update(self, customer: Customer, invoice_id: str) -> None:
        current = await self.admin.get_invoice(customer.realm_id, invoice_id)
        if current is None:
            return
        total = Decimal(str(current["TotalAmt"]))
        if self.rng.random() < 0.3 or total == 0:
            fields = {"TotalAmt": cents(self.rng, 100, 99_999)}
        elif self.rng.random() < 0.25:
            fields = {"Balance": Decimal("0.00")}  # paid in full
        else:
            fields = {"Balance": cents(self.rng, 0, int(total * 100))}
        await self.admin.update_invoice(customer.realm_id, invoice_id, fields)
        self.ledger.changes += 1

    # -- platform faults ------------------------------------------------------------------

    async def chaos(self, event: str) -> None:
        name, _, arg = event.partition(":")
        down_for = self.rng.uniform(0.5, 3.0)
        if name in ("kill_worker", "kill_api"):
            self.kills_planned += 1
        if name == "kill_worker":
            self.note(f"SIGKILL {self.workers[int(arg)]} (back in {down_for:.1f} s)")
            await self.supervisor.kill(self.workers[int(arg)], down_for)
        elif name == "kill_api":
            self.note(f"SIGKILL api (back in {down_for:.1f} s)")
            await self.supervisor.kill("api", down_for)
        elif name == "expire_tokens":
            realm = self.realms[int(arg) % len(self.realms)]
            expired = await self.admin.expire_access_tokens(realm)
            self.note(f"expired {expired} access token(s) of realm {realm}")
        elif name == "poison" and self.poison is not None:
            customer = self.ledger.customers[int(arg) % len(self.ledger.customers)]
            invoice_id = self.ledger.pick(self.rng, customer) or "1"
            sent = await self.poison.inject(customer.realm_id, f"{customer.realm_id}:{invoice_id}")
            self.note(f"{sent} poison records onto the commands and events topics")
        elif name == "odd_amount":
            await self._odd_amount(self.ledger.customers[int(arg) % len(self.ledger.customers)])
        elif name == "unstorable_amount":
            await self._unstorable(self.ledger.customers[int(arg) % len(self.ledger.customers)])
        elif name in RESTART_TARGETS and self.instance is not None:
            target = RESTART_TARGETS[name]
            async with self.infra_lock:
                self.note(f"SIGKILL {target} (restart after {down_for:.1f} s)")
                began = time.monotonic()
                await self.instance.crash_and_restart(target, down_for)
                self.restarted[target] = time.monotonic() - began
                self.note(f"{target} back after {self.restarted[target]:.1f} s")

    async def _odd_amount(self, customer: Customer) -> None:
        """Amounts integer micros could not hold: seven decimals, and a three-decimal balance
        (KWD, BHD, JOD, OMR, TND bill in thousandths)."""
        invoice_id = self.ledger.pick(self.rng, customer)
        if invoice_id is None:
            return
        total = cents(self.rng, 100, 99_999) + Decimal(self.rng.randint(1, 99)).scaleb(-7)
        balance = Decimal(self.rng.randint(0, int(total * 1000))).scaleb(-3)
        await self.admin.update_invoice(
            customer.realm_id, invoice_id, {"TotalAmt": total, "Balance": balance}
        )
        self.odd_amounts += 1
        self.ledger.changes += 1
        self.last_change = time.time()
        self.note(f"invoice {invoice_id} of {customer.local_id}: total {total}, balance {balance}")

    async def _unstorable(self, customer: Customer) -> None:
        invoice_id = self.ledger.pick(self.rng, customer)
        if invoice_id is None:
            return
        fields = {"TotalAmt": UNSTORABLE, "Balance": UNSTORABLE}
        await self.admin.update_invoice(customer.realm_id, invoice_id, fields)
        self.unstorable.append((customer, invoice_id))
        self.ledger.changes += 1
        self.last_change = time.time()
        self.note(f"invoice {invoice_id} of {customer.local_id} set to {UNSTORABLE}")

    async def repair_unstorable(self) -> int:
        """QuickBooks fixed by a person: every invoice set beyond range gets a normal amount."""
        repaired = 0
        for customer, invoice_id in self.unstorable:
            if await self.admin.get_invoice(customer.realm_id, invoice_id) is None:
                continue  # deleted meanwhile
            amount = cents(self.rng, 100, 99_999)
            await self.admin.update_invoice(
                customer.realm_id, invoice_id, {"TotalAmt": amount, "Balance": amount}
            )
            repaired += 1
        if repaired:
            self.last_change = time.time()
            self.note(f"repaired {repaired} invoice(s) with unstorable amounts")
        return repaired
