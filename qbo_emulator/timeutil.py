"""Intuit-style timestamps.

QBO reports entity times in the company's zone with a numeric offset and second
resolution (``2026-11-25T08:30:00-08:00``); the response envelope ``time`` has
milliseconds. Sandbox companies live in US Pacific time, so that is the zone
used here. Webhooks, by contrast, use UTC with a ``Z`` suffix.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone, tzinfo

try:
    from zoneinfo import ZoneInfo

    COMPANY_TZ: tzinfo = ZoneInfo("America/Los_Angeles")
except Exception:  # pragma: no cover - only without system tz data
    COMPANY_TZ = timezone(timedelta(hours=-8), "PST")


def _local(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, COMPANY_TZ)


def format_entity_time(ts: float) -> str:
    """``MetaData`` style: company zone, whole seconds, numeric offset."""
    return _local(ts).replace(microsecond=0).isoformat()


def format_response_time(ts: float) -> str:
    """Envelope ``time`` style: company zone with milliseconds."""
    return _local(ts).isoformat(timespec="milliseconds")


def format_utc_millis(ts: float) -> str:
    """Legacy webhook ``lastUpdated`` style, e.g. ``2025-09-08T20:52:31.657Z``."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def format_utc_micros(ts: float) -> str:
    """CloudEvents ``time`` style (RFC 3339, UTC, sub-second precision)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def company_date(ts: float) -> date:
    """The calendar date in the company's zone, which is what ``TxnDate`` uses."""
    return _local(ts).date()


def parse_datetime(text: str) -> float:
    """Parse a query/CDC date-time literal into an epoch timestamp.

    Accepts a bare date, or a date-time with or without offset / ``Z``.
    A value without an offset is read in the company's zone, as QBO does.
    Raises ``ValueError`` for anything else.
    """
    raw = text.strip()
    if not raw:
        raise ValueError("empty date-time")
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    parsed = datetime.fromisoformat(raw)
    if isinstance(parsed, datetime) and parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=COMPANY_TZ)
    return parsed.timestamp()
