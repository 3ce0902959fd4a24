"""The shapes the api serves and takes, written once as pydantic models.

The OpenAPI document's `components.schemas` are generated from these (`openapi.py`), request
bodies are validated by them, and responses are built from them, so the contract, the checks
and the bytes on the wire cannot drift apart.

Two rules keep the wire as it always was:
- Bodies are written by `jsoncodec` from `Body.wire()` (python mode), never by pydantic's own
  JSON: an amount stays a `Decimal` and leaves as an exact JSON number, digit for digit
  (docs/design.md invariant 7). Its schema says `number` accordingly.
- A member with a default is written only when the handler set it: that is how `resumes_at`
  is present only while a command is throttled. A member always present has no default, so
  it is also `required` in the schema.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator
from pydantic.json_schema import SkipJsonSchema

from services.api.listing import MAX_LIMIT, SORTS, STATUSES
from services.common.statuses import CommandStatus, ConnectionStatus, InvoiceStatus

LOCAL_CUSTOMER_ID_PATTERN = r"^[A-Za-z0-9._:@-]{1,128}$"
COMMAND_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"


def iso_timestamp(value: Any) -> str | None:
    """A stored timestamp as RFC 3339 text (`Z` for UTC); strings are passed through as stored."""
    if isinstance(value, datetime):
        moment: datetime = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.isoformat().replace("+00:00", "Z")
    return value if isinstance(value, str) else None


def _listed(values: type[StrEnum] | tuple[str, ...]) -> WithJsonSchema:
    # Spelled out in place, as the document always had them, not as components of their own.
    return WithJsonSchema({"enum": [str(v) for v in values]})


_EXACT = "An exact decimal amount; parse it as a decimal, never a binary float."
Money = Annotated[Decimal, WithJsonSchema({"type": "number", "description": _EXACT})]
Rate = Annotated[Decimal, Field(gt=0), WithJsonSchema({"type": "number", "exclusiveMinimum": 0})]
# Text as stored, so a timestamp keeps the precision and offset its writer gave it.
Timestamp = Annotated[
    str | None,
    BeforeValidator(iso_timestamp),
    WithJsonSchema({"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]}),
]
# Calendar dates as stored (ISO text): written as they are, with no parsing on the way out.
Day = Annotated[
    str | None, WithJsonSchema({"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}]})
]
Count = Annotated[int, Field(ge=0)]
Currency = Annotated[str, Field(pattern="^[A-Z]{3}$")]


class Body(BaseModel):
    """A JSON body of the api: unknown members are refused, and nothing changes once built."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def wire(self) -> dict[str, Any]:
        """What `jsoncodec` writes: Decimals kept, optional members left out unless set."""
        return self.model_dump(exclude_unset=True)


class Error(Body):
    """Every error answer: a stable code, and a message for people."""

    error: str = Field(description="A stable, machine-read code.")
    message: str


class Invoice(Body):
    """One invoice as last seen in QuickBooks Online."""

    invoice_id: str
    realm_id: str
    qbo_customer_id: str | None
    doc_number: str | None
    txn_date: Day
    due_date: Day
    currency: Currency | None = Field(description="The currency of total_amt and balance.")
    total_amt: Money
    balance: Money
    exchange_rate: Rate | None = Field(
        description=(
            "Multicurrency companies only: home-currency units per one unit of `currency`, as "
            "recorded on the invoice in QBO. Null when QBO sent none."
        )
    )
    home_total_amt: Money | None = Field(
        description=(
            "total_amt in the company's home currency, as QBO computed it (invoices in a "
            "foreign currency of a multicurrency company). Null: total_amt is already in the "
            "home currency."
        )
    )
    home_balance: Money | None = Field(
        description=(
            "balance in the company's home currency, as QBO computed it. Null: balance is "
            "already in the home currency."
        )
    )
    status: Annotated[InvoiceStatus, _listed(InvoiceStatus)]
    overdue: bool = Field(description="Open with a due date before today (UTC).")
    partially_paid: bool = Field(
        description=(
            "Open with a payment applied: 0 < balance < total_amt. Independent of `overdue` "
            "(an invoice may be both); `status` stays `open`."
        )
    )
    deleted: bool
    version: Count
    last_updated_time: Timestamp


class Totals(Body):
    """Over every invoice the filter matches, not only this page. `count` counts them all; the
    amounts leave out voided and deleted invoices. `currency` is null when the invoices
    disagree."""

    count: Count
    total_amt: Money
    balance: Money
    overdue_balance: Money
    currency: str | None


class Page(Body):
    """Where this page sits: pass `next_cursor` as `cursor` for the next one."""

    limit: int = Field(ge=1, le=MAX_LIMIT)
    offset: Count
    next_cursor: str | None
    has_more: bool


class InvoiceList(Body):
    """One page of a customer's invoices, and the totals over all that the filter matches."""

    customer_id: str = Field(pattern=LOCAL_CUSTOMER_ID_PATTERN)
    status: Annotated[str, _listed(STATUSES)]
    sort: Annotated[str, _listed(SORTS)]
    as_of: date = Field(description="The day `overdue` was judged on (UTC).")
    invoices: list[Invoice]
    totals: Totals
    page: Page


def _no_default(schema: dict[str, Any]) -> None:
    # Absent, not null: a client (or schemathesis) reading `"default": null` would send a null.
    schema.pop("default", None)


class RefreshRequest(Body):
    """The optional body of refreshInvoices."""

    correlation_id: Annotated[str, Field(min_length=1, max_length=128)] | SkipJsonSchema[None] = (
        Field(default=None, json_schema_extra=_no_default)
    )

    @field_validator("correlation_id", mode="before")
    @classmethod
    def _present_means_a_string(cls, value: Any) -> Any:
        # Absent is fine; an explicit null is refused like any other non-string.
        if value is None:
            raise ValueError("correlation_id must be a string of 1-128 characters")
        return value


class CommandAccepted(Body):
    """The refresh command was queued (or had been, for a repeated Idempotency-Key)."""

    command_id: str = Field(pattern=COMMAND_ID_PATTERN)
    status: Annotated[CommandStatus, _listed(CommandStatus)]
    status_url: str


class CommandResult(Body):
    """What a finished refresh did; a count the worker did not record is left out."""

    # The worker's record may carry more; only these counts are shown.
    model_config = ConfigDict(extra="ignore")

    fetched: Count = 0
    stored: Count = 0
    events: Count = 0


class Command(Body):
    """A command's status record; only these members of it leave the api."""

    command_id: str = Field(pattern=COMMAND_ID_PATTERN)
    type: str
    realm_id: str
    local_customer_id: str | None
    status: Annotated[CommandStatus, _listed(CommandStatus)]
    reason: str | None
    issued_at: Timestamp
    issued_by: str | None
    queued_at: Timestamp
    started_at: Timestamp
    finished_at: Timestamp
    attempts: Count
    result: CommandResult | None
    resumes_at: Timestamp = Field(
        default=None, description="Only while `throttled`: when the command runs again."
    )


class CustomerMapping(Body):
    """The customer's QBO customer, as the sync service mapped and last read it."""

    local_customer_id: str
    realm_id: str
    qbo_customer_id: str | None
    display_name: str | None = Field(description="QBO's DisplayName as last read.")
    active: bool | None = Field(
        description=(
            "QBO's Active as last read: false for a customer made inactive or merged away; "
            "null until the customer was read."
        )
    )
    qbo_sync_token: Annotated[str, Field(pattern="^[0-9]+$")] | None = Field(
        description="QBO's SyncToken of the customer as last read."
    )
    merged_from: str | None = Field(
        description=(
            "The QBO customer this mapping named before QBO merged it into `qbo_customer_id`."
        )
    )
    customer_read_at: Timestamp = Field(description="When the QBO customer was last read.")
    mapped_at: Timestamp
    last_synced_at: Timestamp = Field(description="End of the last successful refresh.")
    last_sync_command_id: str | None


class Connection(Body):
    """The company's QBO connection, without its tokens."""

    realm_id: str
    status: Annotated[ConnectionStatus, _listed(ConnectionStatus)]
    needs_reauth: bool
    reauth_reason: str | None
    refresh_token_hard_expires_at: Timestamp
    updated_at: Timestamp
    reconnect_url: str | None = Field(
        description=(
            "Where the company re-connects (when not active): a connect link signed for the "
            "connection's own user, valid 15 minutes."
        )
    )


class CustomerStatus(Body):
    """The customer's mapping, and its company's connection (null when none is recorded)."""

    customer: CustomerMapping
    connection: Connection | None


class Health(Body):
    status: Literal["ok"]


Reachability = Literal["ok", "unreachable"]


class ReadinessChecks(Body):
    kafka: Reachability
    mongo: Reachability
    projector: Literal["off", "running", "stopped"]


class Readiness(Body):
    status: Literal["ready", "unavailable"]
    checks: ReadinessChecks


# What `openapi.py` publishes; a model reached only through another one comes along with it.
RESPONSES: tuple[type[Body], ...] = (
    Error,
    InvoiceList,
    CommandAccepted,
    Command,
    CustomerStatus,
    Health,
    Readiness,
)
REQUESTS: tuple[type[Body], ...] = (RefreshRequest,)
