"""Secrets never reach a log line, whichever route they take."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from services.common.logging import REDACTED, configure_logging, redact_text

SECRET = (
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
)


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    configure_logging("DEBUG", json=True, stream=buffer, cache=False)
    yield buffer
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def _lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line]


def test_secret_named_fields_are_redacted(json_logs: io.StringIO) -> None:
    log = structlog.get_logger("t")
    log.info(
        "token.refreshed",
        realm_id="123",
        access_token=SECRET,
        refresh_token="AB11712345678abcdefgh",
        headers={"Authorization": f"Bearer {SECRET}", "Accept": "application/json"},
        client_secret="s3cr3t-value",
    )
    (line,) = _lines(json_logs)
    assert line["realm_id"] == "123"
    assert line["access_token"] == REDACTED
    assert line["refresh_token"] == REDACTED
    assert line["client_secret"] == REDACTED
    assert line["headers"] == {"Authorization": REDACTED, "Accept": "application/json"}


def test_secrets_inside_messages_and_exceptions_are_redacted(
    json_logs: io.StringIO,
) -> None:
    log = structlog.get_logger("t")
    try:
        raise RuntimeError(f"call failed: Authorization: Bearer {SECRET}")
    except RuntimeError:
        log.exception("qbo.call_failed", url="https://x/cb?code=AB1234567890&state=zzzzzzzzzz")
    out = json_logs.getvalue()
    assert SECRET not in out
    assert "AB1234567890" not in out
    assert "zzzzzzzzzz" not in out
    assert "RuntimeError" in out  # the exception itself is still there


def test_stdlib_loggers_go_through_the_same_redaction(
    json_logs: io.StringIO,
) -> None:
    logging.getLogger("aiohttp.client").warning("sending Bearer %s", SECRET)
    out = json_logs.getvalue()
    assert SECRET not in out
    assert "Bearer [REDACTED]" in out


def test_ordinary_text_is_left_alone() -> None:
    text = "synced 2500 invoices for realm 9130350000000001 in 3 pages"
    assert redact_text(text) == text
