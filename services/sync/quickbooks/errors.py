"""Errors raised by the QBO client, and a lenient parser for Intuit fault bodies.

Intuit reports failures as a "Fault" document, but not consistently: the
accounting API answers ``{"Fault": {"Error": [...], "type": ...}}``; the auth
gateway's 401/403 come either like that, or with lower-case keys and an integer
``time`` (``{"fault": {"error": [{"message", "detail", "code", "element"}]}}``), or
as XML with code 100 ("General Authentication Error"); and the throttling layer
answers a 429 with XML (``<IntuitResponse><Fault>...``) even when JSON was
requested. Recorded examples of each are in tests/unit/quickbooks/test_qbo_errors.py
and the emulator sends all of them (qbo_emulator/intuit_errors.py). A fault body
only ever enriches an exception, so parsing it must never raise: anything
unexpected just yields less detail.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as parse_untrusted_xml

# The body comes from the network: defusedxml refuses DTDs, entities and external references
# (XML bombs), and only small documents are parsed at all.
MAX_XML_FAULT_BYTES = 64 * 1024
MAX_JSON_FAULT_BYTES = 1024 * 1024
_MAX_FIELD_CHARS = 2000


@dataclass(frozen=True, slots=True)
class Fault:
    """The first error of an Intuit fault document (all fields optional)."""

    code: str | None = None
    message: str | None = None
    detail: str | None = None
    type: str | None = None


class QboError(Exception):
    """Base class for failures talking to QBO.

    ``status`` is the HTTP status of the last attempt, or 0 when no response was
    received (timeout, dropped connection). ``intuit_tid`` is Intuit's
    transaction id from the response header: quote it to Intuit support.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        code: str | None = None,
        detail: str | None = None,
        intuit_tid: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
        self.intuit_tid = intuit_tid

    @classmethod
    def from_fault(
        cls,
        status: int,
        fault: Fault | None,
        *,
        intuit_tid: str | None,
        default_message: str,
    ) -> Self:
        """Build an error from a parsed fault, falling back to ``default_message``."""
        if fault is None:
            fault = Fault()
        return cls(
            fault.message or default_message,
            status=status,
            code=fault.code,
            detail=fault.detail,
            intuit_tid=intuit_tid,
        )

    def __str__(self) -> str:
        parts = [f"HTTP {self.status}" if self.status else "no response"]
        if self.code is not None:
            parts.append(f"code {self.code}")
        text = f"{', '.join(parts)}: {self.message}"
        if self.detail:
            text += f" ({self.detail})"
        if self.intuit_tid:
            text += f" [intuit_tid={self.intuit_tid}]"
        return text


class QboAuthError(QboError):
    """401 even after one token refresh: the token source hands out bad tokens."""


class QboThrottled(QboError):
    """429 after the retry budget: back off for longer (Intuit suggests 60 s)."""


class QboUnavailable(QboError):
    """5xx, timeout, dropped connection or malformed JSON after all retries."""


class QboRequestError(QboError):
    """Any other 4xx (e.g. 610 object not found, 4000 query parse error).

    Retrying the same request will not help.
    """


class ReauthRequired(Exception):
    """The refresh token was rejected (``invalid_grant``).

    Raised by token sources; the user must re-authorise the QBO connection.
    """

    def __init__(
        self, message: str = "QBO connection must be re-authorised", *, realm_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.realm_id = realm_id


def parse_fault(body: bytes) -> Fault | None:
    """Parse an Intuit fault body (JSON or XML); ``None`` if it is neither.

    Never raises: callers use this on arbitrary bytes from the network.
    """
    try:
        text = body.lstrip().removeprefix(b"\xef\xbb\xbf").lstrip()  # tolerate a UTF-8 BOM
        if text.startswith(b"{"):
            return _parse_json_fault(text)
        if text.startswith(b"<"):
            return _parse_xml_fault(text)
    except Exception:  # a broken error body must not mask the error itself
        return None
    return None


def _clip(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    return text[:_MAX_FIELD_CHARS] if text else None


def _get_ci(mapping: Mapping[str, Any], key: str) -> Any:
    """Case-insensitive key lookup (the auth gateway lower-cases fault keys)."""
    if key in mapping:
        return mapping[key]
    lowered = key.lower()
    for name, value in mapping.items():
        if isinstance(name, str) and name.lower() == lowered:
            return value
    return None


def _parse_json_fault(body: bytes) -> Fault | None:
    if len(body) > MAX_JSON_FAULT_BYTES:
        return None
    doc = json.loads(body)
    if not isinstance(doc, dict):
        return None
    fault = _get_ci(doc, "Fault")
    if isinstance(fault, dict):
        errors = _get_ci(fault, "Error")
        first = errors[0] if isinstance(errors, list) and errors else errors
        if not isinstance(first, dict):
            first = {}
        return Fault(
            code=_clip(_get_ci(first, "code")),
            message=_clip(_get_ci(first, "Message")),
            detail=_clip(_get_ci(first, "Detail")),
            type=_clip(_get_ci(fault, "type")),
        )
    # OAuth-style body, e.g. {"error": "invalid_grant", "error_description": ...}.
    error = doc.get("error")
    if isinstance(error, str):
        return Fault(code=_clip(error), message=_clip(doc.get("error_description")))
    return None


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _parse_xml_fault(body: bytes) -> Fault | None:
    if len(body) >= MAX_XML_FAULT_BYTES:
        return None
    try:
        root = parse_untrusted_xml(body, forbid_dtd=True)
    except DefusedXmlException:
        return None
    fault = root if _local(root.tag) == "Fault" else None
    if fault is None:
        fault = next((el for el in root.iter() if _local(el.tag) == "Fault"), None)
    if fault is None:
        return None
    error = next((el for el in fault if _local(el.tag) == "Error"), None)
    if error is None:
        return Fault(type=_clip(fault.get("type")))
    message = next((el.text for el in error if _local(el.tag) == "Message"), None)
    detail = next((el.text for el in error if _local(el.tag) == "Detail"), None)
    return Fault(
        code=_clip(error.get("code")),
        message=_clip(message),
        detail=_clip(detail),
        type=_clip(fault.get("type")),
    )
