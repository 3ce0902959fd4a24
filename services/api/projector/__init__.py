"""The projector: InvoiceUpdated events -> the `read_invoices` read model.

Delivery is at least once and partitions may be re-read, so projection is idempotent and
order-safe: a version is stored only when it is newer than the stored one
(`ReadInvoices.apply_many`). Records are projected a batch at a time, because on FerretDB v1
the cost is per query rather than per event (see `ReadInvoices.apply_many`); the projector
reads ahead of its batches and fills each with the companies that have the fewest events
waiting first, so a company's change is not held behind another's refresh
(`services/api/backlog.py`, docs/design.md invariant 14). An offset is committed only up to
the lowest record not yet projected (docs/design.md invariant 5). An event
that can never be projected (not JSON, off-contract, inexact money) goes to the dead-letter
topic with the reason, and is committed past so one bad record cannot stall its partition; a
failing database is different: the record is retried, never skipped.

    python -m services.api.projector            # run the projector on its own
    python -m services.api.projector --rebuild  # drop the read model, replay the whole topic

A rebuild may run while other projectors keep going: every write is version-guarded, so the
replayed older versions never overwrite newer ones.

One module per concern: `records` (a record -> its document, or why not), `dead_letters`
(the dead-letter topic), `projection` (a batch -> the read model), `consumer` (the consumer
group loop and its commits), `admin` (topic metadata), `rebuild` (the replay) and
`__main__` (the command line).
"""

from services.api.projector.admin import topic_partitions
from services.api.projector.consumer import run_projector
from services.api.projector.dead_letters import DeadLetters
from services.api.projector.projection import (
    RETRYABLE,
    Outcome,
    Projected,
    ProjectionInterrupted,
    Projector,
)
from services.api.projector.rebuild import RebuildReport, rebuild
from services.api.projector.records import Rejected, parse_event

__all__ = [
    "RETRYABLE",
    "DeadLetters",
    "Outcome",
    "Projected",
    "ProjectionInterrupted",
    "Projector",
    "RebuildReport",
    "Rejected",
    "parse_event",
    "rebuild",
    "run_projector",
    "topic_partitions",
]
