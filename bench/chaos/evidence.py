"""What a chaos run leaves behind for people: the accounting of what was done and how the
system coped, and for a failed audit the evidence to tell where an invoice went missing.

A failing invoice is looked up in the write model (sync), on the events topic and in the read
model (api): wrong in the write model is a sync problem; stored but never on the topic breaks
"every stored change is followed by an event" (docs/design.md invariant 4); on the topic but not in
the read model is the projector's.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from pymongo.asynchronous.database import AsyncDatabase

from bench.chaos.compare import Audit
from bench.chaos.ledger import Ledger
from bench.chaos.supervisor import Supervisor
from bench.emulator_admin import EmulatorAdmin
from bench.kafka_counts import topic_record_count
from bench.procs import Child
from bench.report import Report
from services.api.projector import topic_partitions
from services.common import jsoncodec
from services.common.mongo import Document
from services.common.settings import Settings


async def versions_on_topic(
    bootstrap_servers: str, topic: str, keys: set[str]
) -> dict[str, list[int]]:
    """The event versions of `keys` on `topic`, read from the start up to its current end."""
    found: dict[str, list[int]] = {k: [] for k in keys}
    tps = [TopicPartition(topic, p) for p in await topic_partitions(bootstrap_servers, topic)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=2000, max_records=5000)
            if not batches:
                break
            for tp, records in batches.items():
                for record in records:
                    key = record.key.decode() if record.key else ""
                    if key in found and record.value is not None:
                        try:  # the run also injects poison records under real keys
                            version = int(jsoncodec.loads(record.value)["data"]["version"])
                        except (ValueError, KeyError, TypeError):
                            continue
                        found[key].append(version)
                if records and records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return found


async def diagnose(
    settings: Settings, db: AsyncDatabase[Document], result: Audit
) -> list[dict[str, Any]]:
    """For the first failing invoices: the write model next to the read model, to tell a sync
    problem (write model wrong) from an event or projection problem (only the read model)."""
    keys = [*result.lost[:5], *(k for k, _, _ in result.stale[:5]), *result.unexpected[:5]]
    if not keys:
        return []
    ids = [f"{realm}:{invoice_id}" for realm, _customer, invoice_id in keys]
    on_topic = await versions_on_topic(
        settings.kafka_bootstrap_servers, settings.invoice_events_topic, set(ids)
    )
    fields = {"version": 1, "balance_micros": 1, "status": 1, "qbo_customer_id": 1, "stored_at": 1}
    found = []
    for key in ids:
        found.append(
            {
                "invoice": key,
                "write_model": await db["invoices"].find_one({"_id": key}, fields),
                "event_versions_on_topic": on_topic.get(key, []),
                "read_model": await db["read_invoices"].find_one({"_id": key}, fields),
            }
        )
    return found


async def account(
    report: Report,
    settings: Settings,
    db: AsyncDatabase[Document],
    admin: EmulatorAdmin,
    supervisor: Supervisor,
    fired: dict[str, int],
    children: list[Child],
    ledger: Ledger,
    restarted: dict[str, float],
    kills_planned: int,
) -> None:
    """What happened along the way: faults, kills, crashes, commands, dead letters."""
    stats = await admin.stats()
    section = "what was done to it"
    requests = sum(int(r.get("requests", 0)) for r in stats.get("realms", {}).values())
    report.add(section, "QuickBooks API requests (all, incl. the audit)", requests)
    report.add(section, "QuickBooks faults fired", sum(fired.values()))
    for kind, count in sorted(fired.items()):
        report.add(section, f"  {kind}", count)
    report.add(section, "webhook deliveries dropped", int(stats["webhooks"]["dropped"]))
    report.add(section, "QuickBooks changes (update/void/delete/create)", ledger.changes)
    report.add(section, "sync worker and api SIGKILLs planned", kills_planned)
    # A kill that finds its process already down (killed just before, or exited while Kafka
    # was away) is not counted as one.
    report.add(section, "  of which hit a running process", sum(c.kills for c in children))
    for target in ("kafka", "ferretdb", "postgres"):
        back = restarted.get(target)
        report.add(
            section,
            f"{target} SIGKILLed, back after",
            "not restarted" if back is None else round(back, 1),
            "" if back is None else "s",
        )
    section = "how it coped"
    report.add(section, "unplanned process exits (restarted)", sum(supervisor.crashes.values()))
    statuses: dict[str, int] = {}
    async for doc in db["commands"].find({}, {"status": 1}):
        statuses[str(doc.get("status"))] = statuses.get(str(doc.get("status")), 0) + 1
    for status, count in sorted(statuses.items()):
        report.add(section, f"commands {status}", count)
    dlq = await topic_record_count(settings.kafka_bootstrap_servers, settings.dead_letter_topic)
    report.add(section, "dead-lettered records", dlq)
    events = await topic_record_count(
        settings.kafka_bootstrap_servers, settings.invoice_events_topic
    )
    report.add(section, "InvoiceUpdated events", events)
    async for doc in db["connections"].find({}, {"status": 1}):
        report.add(section, f"connection {doc['_id']}", str(doc["status"]))
    report.details["crashes"] = supervisor.crash_codes
    report.details["emulator_token_calls"] = {
        realm: body.get("token_calls") for realm, body in stats.get("realms", {}).items()
    }
