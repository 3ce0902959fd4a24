"""structlog set up once per process, JSON lines, with secrets redacted.

Redaction is a processor rather than a convention because a token can reach a log line by
many routes (an exception message, an HTTP header dict, a URL with `code=`); the processor is
the one place that sees every event before it is rendered.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any, TextIO

import structlog

REDACTED = "[REDACTED]"

# Keys whose values are secrets whatever they look like.
_SECRET_KEY = re.compile(
    r"(authorization|token|secret|password|passwd|api[_-]?key|refresh|access|cookie|"
    r"signature|verifier|credential|client_secret|code_verifier|^code$|^state$)",
    re.IGNORECASE,
)
# Values that look like secrets wherever they appear inside a string.
_SECRET_VALUE = re.compile(
    r"(?P<bearer>\b(?:Bearer|Basic)\s+)[A-Za-z0-9._~+/=-]{8,}"
    r"|(?P<kv>\b(?:access_token|refresh_token|id_token|client_secret|code|state|token)"
    r"[\"']?\s*[=:]\s*[\"']?)[^\s&\"',;}]{6,}"
    r"|\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{5,}"  # JWT
    r"|\bv1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{20,}",  # our own sealed tokens
    re.IGNORECASE,
)
# Keys that contain a "secret" word but are safe and useful to see.
_SAFE_KEYS = frozenset({"token_expires_at", "refresh_token_expires_at", "tokens_refreshed"})


def redact_text(text: str) -> str:
    """Replace anything in `text` that looks like a credential."""

    def repl(m: re.Match[str]) -> str:
        prefix = m.group("bearer") or m.group("kv") or ""
        return prefix + REDACTED

    return _SECRET_VALUE.sub(repl, text)


def _redact(value: Any, depth: int = 0) -> Any:
    if depth > 6:
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: _redact_item(str(k), v, depth + 1) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        return [_redact(v, depth + 1) for v in value]
    return value


def _redact_item(key: str, value: Any, depth: int) -> Any:
    if key not in _SAFE_KEYS and _SECRET_KEY.search(key) and value not in (None, "", [], {}):
        if isinstance(value, bool | int | float):
            return value
        return REDACTED
    return _redact(value, depth)


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: redact secret-looking keys and values, recursively."""
    for key, value in event_dict.items():
        # The event name itself is a message, never a secret-named key: scan its text only.
        event_dict[key] = _redact(value) if key == "event" else _redact_item(key, value, 0)
    return event_dict


def shared_processors() -> list[structlog.typing.Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_secrets,  # last before rendering: sees the formatted exception too
    ]


def configure_logging(
    level: str = "INFO", json: bool = True, stream: TextIO | None = None, cache: bool = True
) -> None:
    """Configure structlog and route stdlib logging (aiokafka, uvicorn) through it.

    `stream` defaults to stdout (12-factor: the platform collects it); tests pass a buffer and
    `cache=False` so they can configure again.
    """
    out = stream or sys.stdout
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[*shared_processors(), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=cache,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared_processors()],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # aiokafka is chatty at INFO about every rebalance and reconnect.
    logging.getLogger("aiokafka").setLevel(max(numeric, logging.WARNING))
