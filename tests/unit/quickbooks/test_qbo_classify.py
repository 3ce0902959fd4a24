"""`classify`: what one QBO answer means, for every body the emulator can send (the shapes
Intuit sends, docs/design.md "QBO facts"), without any HTTP. The retry loop around it is
tested in test_qbo_client.py."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from aiohttp import web

from qbo_emulator import intuit_errors
from qbo_emulator.intuit_errors import FAULT_STYLES, FaultStyle
from qbo_emulator.middleware import MALFORMED_JSON
from services.sync.quickbooks.client import (
    NOT_DECODED,
    Action,
    Answered,
    Outcome,
    Refused,
    _decoded,
    _Response,
    classify,
)
from services.sync.quickbooks.errors import (
    QboAuthError,
    QboRequestError,
    QboThrottled,
    QboUnavailable,
)

NOW = 1_714_582_800.0
TID = "1-5f6a7b8c-0123456789abcdef"
HEADERS = {"intuit_tid": TID}


def answer(response: web.Response, headers: dict[str, str] | None = None) -> Outcome:
    """Classify an emulator response as the client receives it."""
    body = response.body
    assert isinstance(body, bytes)
    return classify(response.status, {**HEADERS, **(headers or {})}, body)


def refused(outcome: Outcome) -> Refused:
    assert isinstance(outcome, Refused), outcome
    return outcome


def test_a_document_is_answered_with_exact_decimals() -> None:
    body = b'{"QueryResponse": {"Invoice": [{"Id": "1", "TotalAmt": 0.1}]}}'
    outcome = classify(200, HEADERS, body)
    assert outcome == Answered(
        {"QueryResponse": {"Invoice": [{"Id": "1", "TotalAmt": Decimal("0.1")}]}}, TID
    )


@pytest.mark.parametrize("style", sorted(FAULT_STYLES))
def test_every_401_body_calls_for_a_token_refresh(style: FaultStyle) -> None:
    outcome = refused(answer(intuit_errors.authentication_response("Token expired", NOW, style)))
    assert outcome.action is Action.REFRESH
    assert isinstance(outcome.error, QboAuthError)
    assert outcome.error.status == 401
    assert outcome.error.code == ("100" if style == "xml" else "3200")
    assert outcome.error.intuit_tid == TID


@pytest.mark.parametrize("style", sorted(FAULT_STYLES))
def test_every_403_body_stops_at_once(style: FaultStyle) -> None:
    outcome = refused(answer(intuit_errors.authorization_response(NOW, style)))
    assert outcome.action is Action.STOP
    assert isinstance(outcome.error, QboRequestError)
    assert (outcome.error.status, outcome.error.code) == (403, "3100")


@pytest.mark.parametrize("retry_after", [None, 7])
def test_the_throttle_xml_backs_off_honouring_retry_after(retry_after: int | None) -> None:
    response = intuit_errors.throttle_response(NOW, retry_after)
    headers = {k: v for k, v in response.headers.items() if k == "Retry-After"}
    outcome = refused(answer(response, headers))
    assert outcome.action is Action.BACK_OFF
    assert isinstance(outcome.error, QboThrottled)
    assert (outcome.error.status, outcome.error.code) == (429, "3001")
    assert outcome.retry_after_s == (None if retry_after is None else 7.0)


def test_a_system_fault_500_backs_off() -> None:
    outcome = refused(answer(intuit_errors.json_response(intuit_errors.system_fault(NOW), 500)))
    assert outcome.action is Action.BACK_OFF
    assert isinstance(outcome.error, QboUnavailable)
    assert (outcome.error.status, outcome.error.code) == (500, "10000")


def test_an_html_503_backs_off_with_a_header_delay_in_any_case() -> None:
    body = intuit_errors.SERVICE_UNAVAILABLE_HTML.encode()
    outcome = refused(classify(503, {"retry-after": "3"}, body))
    assert outcome.action is Action.BACK_OFF
    assert isinstance(outcome.error, QboUnavailable)
    assert outcome.error.message == "server error"  # HTML is no fault document
    assert outcome.retry_after_s == 3.0


def test_malformed_json_in_a_200_backs_off() -> None:
    outcome = refused(classify(200, HEADERS, MALFORMED_JSON))
    assert outcome.action is Action.BACK_OFF
    assert isinstance(outcome.error, QboUnavailable)
    assert "malformed JSON" in outcome.error.message


@pytest.mark.parametrize(
    "fault",
    [
        intuit_errors.query_parse_fault("unexpected token", NOW),
        intuit_errors.query_validation_fault("no such property", NOW),
        intuit_errors.object_not_found_fault("Invoice", "42", NOW),
    ],
)
def test_validation_faults_stop_at_once(fault: dict[str, object]) -> None:
    outcome = refused(answer(intuit_errors.json_response(fault, 400)))
    assert outcome.action is Action.STOP
    assert isinstance(outcome.error, QboRequestError)
    assert outcome.error.status == 400


def test_a_fault_inside_a_200_stops_at_once() -> None:
    body = json.dumps(intuit_errors.query_parse_fault("unexpected token", NOW)).encode()
    outcome = refused(classify(200, HEADERS, body))
    assert outcome.action is Action.STOP
    assert isinstance(outcome.error, QboRequestError)
    assert (outcome.error.status, outcome.error.code) == (200, "4000")


def test_tokens_echoed_in_a_fault_are_scrubbed() -> None:
    body = json.dumps({"Fault": {"Error": [{"Message": "bad token eyJ-SECRET", "code": "3200"}]}})
    outcome = refused(classify(401, HEADERS, body.encode(), secrets=["eyJ-SECRET"]))
    assert "eyJ-SECRET" not in str(outcome.error)
    assert "[redacted]" in outcome.error.message


@pytest.mark.parametrize(
    "body",
    [
        b'{"QueryResponse": {"Invoice": [%s]}, "time": "t"}'
        % b",".join(b'{"Id": "%d", "TotalAmt": 0.1}' % i for i in range(500)),
        b'{"QueryResponse": {"Invoice": [{"Id": "1", "TotalAmt": 0.1}]}}',
        MALFORMED_JSON,
        b'{"QueryResponse": {"Invoice": [{"Id": "1", "TotalAmt": NaN}]}}' + b" " * 40_000,
        b"[1, 2]" + b" " * 40_000,
    ],
)
async def test_a_page_decoded_in_slices_is_classified_as_one_decoded_at_once(body: bytes) -> None:
    ahead = classify(200, HEADERS, body, (), await _decoded(_Response(200, body, HEADERS)))
    at_once = classify(200, HEADERS, body)
    assert type(ahead) is type(at_once) and repr(ahead) == repr(at_once)


async def test_only_successful_answers_are_decoded_ahead() -> None:
    assert await _decoded(_Response(429, b"{}", HEADERS)) is NOT_DECODED
