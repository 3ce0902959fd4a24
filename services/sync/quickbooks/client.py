"""Async HTTP client for the QBO Accounting API (read side).

Every request is a GET on ``{base_url}/v3/company/{realmId}/{path}`` carrying
``minorversion`` (without it Intuit serves the oldest schema, which lacks fields
we rely on). Responses are parsed with ``Decimal`` floats because QBO money
amounts arrive as JSON numbers and must not go through binary floating point.

Retry policy (product spec): a 401 triggers exactly one token refresh and one
retry; 429, 5xx, timeouts, dropped connections and 200s with malformed JSON
share one bounded exponential backoff (0.5 s, 1 s, 2 s by default), honouring
``Retry-After`` up to ``max_delay_s``; any other 4xx fails at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import enum
import json
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NoReturn

import aiohttp
import structlog
from multidict import CIMultiDict

from services.common import jsonsteps
from services.sync.quickbooks.budget import RealmBudget
from services.sync.quickbooks.errors import (
    Fault,
    QboAuthError,
    QboError,
    QboRequestError,
    QboThrottled,
    QboUnavailable,
    parse_fault,
)
from services.sync.quickbooks.query import MAX_RESULTS_LIMIT, Select, validate_entity
from services.sync.quickbooks.tokens import TokenSource
from services.sync.turns import SLICE, SMALL_BODY_BYTES, run_steps

_log = structlog.get_logger(__name__)

# Realm and entity ids are interpolated into the URL path: keep them to a
# charset that cannot change the path (QBO uses decimal digits for both).
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_RETRY_AFTER_SECONDS_RE = re.compile(r"^[0-9]+(\.[0-9]+)?$")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded exponential backoff shared by 429, 5xx and transport failures."""

    max_retries: int = 3
    base_delay_s: float = 0.5
    multiplier: float = 2.0
    max_delay_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.base_delay_s < 0 or self.max_delay_s < 0:
            raise ValueError("retry policy values must not be negative")
        if self.multiplier < 1:
            raise ValueError("retry multiplier must be >= 1")

    def delay(self, retry_index: int, retry_after_s: float | None = None) -> float:
        """Delay before retry number ``retry_index`` (0-based).

        ``Retry-After`` can lengthen the backoff but never beyond ``max_delay_s``.
        """
        delay = self.base_delay_s * self.multiplier**retry_index
        if retry_after_s is not None:
            delay = max(delay, retry_after_s)
        return min(delay, self.max_delay_s)


DEFAULT_RETRY = RetryPolicy()


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _RETRY_AFTER_SECONDS_RE.fullmatch(text):
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now if now is not None else datetime.now(UTC)
    return max((when - current).total_seconds(), 0.0)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"non-finite number {name} in JSON")


_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=_reject_constant)


def _decode_json(body: bytes) -> dict[str, Any] | None:
    """Decode a JSON object with exact decimals; ``None`` if it is malformed."""
    try:
        doc = _DECODER.decode(jsonsteps.decode_text(body))
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


async def _decoded(resp: _Response) -> dict[str, Any] | _NotDecoded | None:
    """A successful answer's JSON object (``None`` if malformed), decoded a slice at a time in a
    turn at the event loop: a page of 1,000 invoices is a heavy step (services/sync/turns.py).
    Other answers are left to `classify`."""
    if not 200 <= resp.status < 300:
        return NOT_DECODED
    try:
        steps = jsonsteps.decode_in_steps(jsonsteps.decode_text(resp.body), _DECODER, SLICE)
        doc = await run_steps(steps, small=len(resp.body) <= SMALL_BODY_BYTES)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def _scrub(text: str | None, secrets: Sequence[str]) -> str | None:
    if text is None:
        return None
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text


def _redact(fault: Fault | None, secrets: Sequence[str]) -> Fault | None:
    """Drop bearer tokens from fault text in case Intuit ever echoes one back."""
    if fault is None:
        return None
    return replace(
        fault, message=_scrub(fault.message, secrets), detail=_scrub(fault.detail, secrets)
    )


def _get_ci(mapping: dict[str, Any], key: str) -> Any:
    """Case-insensitive lookup: callers may spell entities ``invoice`` or ``Invoice``."""
    if key in mapping:
        return mapping[key]
    lowered = key.lower()
    for name, value in mapping.items():
        if name.lower() == lowered:
            return value
    return None


def _objects(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, dict)]


def _check_id(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise ValueError(f"invalid {kind}: {value!r}")
    return value


class Action(enum.Enum):
    """What one attempt's answer calls for."""

    REFRESH = "refresh"  # 401: refresh the token and try once more
    BACK_OFF = "back_off"  # 429, 5xx, malformed JSON: worth another attempt after a delay
    STOP = "stop"  # any other 4xx, or a fault inside a 200: the same request will fail again


@dataclass(frozen=True, slots=True)
class Answered:
    """A usable document."""

    doc: dict[str, Any]
    intuit_tid: str | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """Anything else: the error to raise should no further attempt be made, and what to do."""

    error: QboError
    action: Action
    retry_after_s: float | None = None
    fault: Fault | None = None


Outcome = Answered | Refused


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lowered), None)


class _NotDecoded(enum.Enum):
    NOT_DECODED = "not decoded"


NOT_DECODED = _NotDecoded.NOT_DECODED


def classify(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    secrets: Sequence[str] = (),
    decoded: dict[str, Any] | _NotDecoded | None = NOT_DECODED,
) -> Outcome:
    """What one HTTP answer of QBO means (pure: no I/O, no clock but ``Retry-After``'s).

    ``secrets`` (the bearer tokens used) are scrubbed from any fault text kept in the error.
    ``decoded``: the body's JSON object already decoded (``None``: it is malformed).
    """
    tid = _header(headers, "intuit_tid")
    if 200 <= status < 300:
        doc = _decode_json(body) if decoded is NOT_DECODED else decoded
        if doc is None:
            return Refused(
                QboUnavailable(
                    "malformed JSON in a successful response", status=status, intuit_tid=tid
                ),
                Action.BACK_OFF,
            )
        if "Fault" not in doc:
            return Answered(doc, tid)
        # Some operations report validation faults inside a 200.
        fault = _redact(parse_fault(body), secrets)
        error: QboError = QboRequestError.from_fault(
            status, fault, intuit_tid=tid, default_message="fault in response"
        )
        return Refused(error, Action.STOP, fault=fault)
    fault = _redact(parse_fault(body), secrets)
    retry_after = parse_retry_after(_header(headers, "Retry-After"))
    if status == 401:
        error = QboAuthError.from_fault(
            401, fault, intuit_tid=tid, default_message="token rejected"
        )
        return Refused(error, Action.REFRESH, fault=fault)
    if status == 429:
        error = QboThrottled.from_fault(429, fault, intuit_tid=tid, default_message="throttled")
        return Refused(error, Action.BACK_OFF, retry_after, fault)
    if status >= 500:
        error = QboUnavailable.from_fault(
            status, fault, intuit_tid=tid, default_message="server error"
        )
        return Refused(error, Action.BACK_OFF, retry_after, fault)
    error = QboRequestError.from_fault(
        status, fault, intuit_tid=tid, default_message="request rejected"
    )
    return Refused(error, Action.STOP, fault=fault)


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    body: bytes
    headers: Mapping[str, str]


class QboClient:
    """Reads from QBO for many realms over one shared ``aiohttp`` session.

    ``calls`` counts HTTP attempts per realm, retries included, because Intuit
    meters (and throttles) every attempt.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        tokens: TokenSource,
        *,
        minor_version: int = 75,
        budget: RealmBudget | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        request_timeout_s: float = 30.0,
    ) -> None:
        if not base_url.startswith(("https://", "http://")):
            raise ValueError("base_url must be an http(s) URL")
        if minor_version < 0:
            raise ValueError("minor_version must not be negative")
        if request_timeout_s <= 0:
            raise ValueError("request_timeout_s must be positive")
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._tokens = tokens
        self._minor_version = minor_version
        self._budget = budget
        self._retry = retry
        self._sleep = sleep
        self._timeout = aiohttp.ClientTimeout(total=request_timeout_s)
        self.calls: Counter[str] = Counter()

    # -- public API -------------------------------------------------------

    async def query(self, realm_id: str, statement: str) -> dict[str, Any]:
        """Run a query statement and return its ``QueryResponse`` object.

        Intuit answers ``"QueryResponse": {}`` when nothing matches.
        """
        doc = await self._get(realm_id, "query", {"query": statement})
        response = doc.get("QueryResponse")
        if not isinstance(response, dict):
            raise QboUnavailable("response has no QueryResponse object", status=200)
        return response

    async def query_pages(
        self, realm_id: str, select: Select, page_size: int = MAX_RESULTS_LIMIT
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Yield the rows of ``select`` one page at a time.

        Intuit pages by offset (STARTPOSITION is 1-based) and without a stable
        order pages may skip or repeat rows, so ``ORDERBY Id`` is added when the
        query has no ordering. Rows changed while paging can still shift pages;
        callers that need completeness should pair this with CDC.
        """
        if isinstance(page_size, bool) or not 1 <= page_size <= MAX_RESULTS_LIMIT:
            raise ValueError(f"page_size must be between 1 and {MAX_RESULTS_LIMIT}")
        if not select.is_ordered:
            select = select.order_by("Id")
        start = 1
        while True:
            response = await self.query(realm_id, select.render(start, page_size))
            rows = _objects(_get_ci(response, select.entity))
            if rows:
                yield rows
            if len(rows) < page_size:
                return
            start += page_size

    async def read(self, realm_id: str, entity: str, entity_id: str) -> dict[str, Any]:
        """Read one object by id (``GET .../{entity}/{id}``)."""
        validate_entity(entity)
        _check_id("entity id", entity_id)
        doc = await self._get(realm_id, f"{entity.lower()}/{entity_id}", {})
        obj = _get_ci(doc, entity)
        if not isinstance(obj, dict):
            raise QboUnavailable(f"response has no {entity} object", status=200)
        return obj

    async def cdc(
        self, realm_id: str, entities: Sequence[str], changed_since: datetime
    ) -> dict[str, list[dict[str, Any]]]:
        """Objects of ``entities`` changed since ``changed_since`` (change data capture).

        Deleted objects come back as stubs with ``"status": "Deleted"``. Intuit
        only looks back 30 days and returns at most 1000 objects per entity, so
        callers must fall back to a full query when either limit is hit. Every
        requested entity is present in the result, possibly with an empty list.
        """
        if isinstance(entities, str) or not entities:
            raise ValueError("entities must be a non-empty sequence of entity names")
        for entity in entities:
            validate_entity(entity)
        if changed_since.tzinfo is None or changed_since.utcoffset() is None:
            raise ValueError("changed_since must be timezone-aware")
        params = {
            "entities": ",".join(entities),
            # Whole seconds: Intuit documents second precision; truncating only
            # widens the window, which is safe for an idempotent sync.
            "changedSince": changed_since.isoformat(timespec="seconds"),
        }
        doc = await self._get(realm_id, "cdc", params)
        blocks = doc.get("CDCResponse")
        if not isinstance(blocks, list):
            raise QboUnavailable("response has no CDCResponse list", status=200)
        requested = {name.lower(): name for name in entities}
        result: dict[str, list[dict[str, Any]]] = {name: [] for name in entities}
        for block in blocks:
            if not isinstance(block, dict):
                continue
            query_responses = block.get("QueryResponse")
            if not isinstance(query_responses, list):
                continue
            for query_response in query_responses:
                if not isinstance(query_response, dict):
                    continue
                for key, value in query_response.items():
                    if isinstance(value, list):
                        name = requested.get(str(key).lower()) or str(key)
                        result.setdefault(name, []).extend(_objects(value))
        return result

    # -- transport --------------------------------------------------------

    def _slot(self, realm_id: str) -> contextlib.AbstractAsyncContextManager[None]:
        if self._budget is None:
            return contextlib.nullcontext()
        return self._budget.slot(realm_id)

    async def _send(self, realm_id: str, url: str, params: dict[str, str], token: str) -> _Response:
        headers = {"Accept": "application/json", "Authorization": f"Bearer {token}"}
        # The slot covers one attempt only; backoff sleeps happen outside it.
        async with self._slot(realm_id):
            self.calls[realm_id] += 1
            async with self._session.get(
                url,
                params=params,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,  # never forward the bearer token elsewhere
                raise_for_status=False,
            ) as resp:
                body = await resp.read()
                return _Response(resp.status, body, CIMultiDict(resp.headers))

    async def _get(self, realm_id: str, path: str, params: dict[str, str]) -> dict[str, Any]:
        """One request, with every retry it gets (this client is the only layer that retries a
        QBO request; docs/design.md invariant 13): a 401 refreshes the token and tries once
        more; 429, 5xx, no answer and malformed JSON back off up to ``max_retries`` times."""
        _check_id("realm id", realm_id)
        url = f"{self._base_url}/v3/company/{realm_id}/{path}"
        params = {**params, "minorversion": str(self._minor_version)}
        log = _log.bind(realm_id=realm_id, endpoint=path.split("/", 1)[0])

        token = await self._tokens.access_token(realm_id)
        used_tokens = [token]
        refreshed = False
        retries = 0
        attempt = 0
        while True:
            attempt += 1
            cause: BaseException | None = None
            try:
                resp = await self._send(realm_id, url, params, token)
            except (TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
                cause = exc
                failure: QboError = QboUnavailable(f"no response from QBO ({type(exc).__name__})")
                outcome: Outcome = Refused(failure, Action.BACK_OFF)
                log.warning("qbo.transport_error", attempt=attempt, error=type(exc).__name__)
            else:
                outcome = classify(
                    resp.status, resp.headers, resp.body, used_tokens, await _decoded(resp)
                )
                _log_answer(log, resp.status, outcome, attempt)
            if isinstance(outcome, Answered):
                return outcome.doc
            failure = outcome.error
            if outcome.action is Action.REFRESH and not refreshed:
                refreshed = True
                token = await self._tokens.refresh_after_401(realm_id, token)
                used_tokens.append(token)
                continue
            if outcome.action is not Action.BACK_OFF:
                raise failure
            if retries >= self._retry.max_retries:
                log.error(
                    "qbo.giving_up",
                    attempt=attempt,
                    status=failure.status,
                    intuit_tid=failure.intuit_tid,
                    error=type(failure).__name__,
                )
                raise failure from cause
            delay = self._retry.delay(retries, outcome.retry_after_s)
            retries += 1
            log.info("qbo.retry_scheduled", attempt=attempt, delay_s=delay)
            await self._sleep(delay)


# (an error status?, final?) -> the log line of an answer that is not a usable document
_ANSWER_EVENTS = {
    (True, True): "qbo.error_response",
    (True, False): "qbo.error_response",
    (False, True): "qbo.fault_in_success",
    (False, False): "qbo.malformed_json",
}


def _log_answer(log: Any, status: int, outcome: Outcome, attempt: int) -> None:
    if isinstance(outcome, Answered):
        log.debug("qbo.ok", status=status, intuit_tid=outcome.intuit_tid, attempt=attempt)
        return
    error, fault = outcome.error, outcome.fault
    log.warning(
        _ANSWER_EVENTS[status >= 300, outcome.action is Action.STOP],
        status=status,
        intuit_tid=error.intuit_tid,
        attempt=attempt,
        code=fault.code if fault else None,
        message=fault.message if fault else None,
    )
