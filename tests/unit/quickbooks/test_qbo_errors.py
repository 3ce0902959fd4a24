"""Fault-body parsing, error formatting and the retry/backoff arithmetic."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from services.sync.quickbooks.client import RetryPolicy, parse_retry_after
from services.sync.quickbooks.errors import (
    MAX_XML_FAULT_BYTES,
    Fault,
    QboError,
    QboRequestError,
    parse_fault,
)

XML_FAULT = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    b'<IntuitResponse xmlns="http://schema.intuit.com/finance/v3" time="2024-05-01T10:00:00Z">'
    b'<Fault type="SERVICE"><Error code="3001">'
    b"<Message>message=ThrottleExceeded; errorCode=003001; statusCode=429</Message>"
    b"<Detail>The request limit was reached.</Detail>"
    b"</Error></Fault></IntuitResponse>"
)


def test_parses_json_fault() -> None:
    body = json.dumps(
        {
            "Fault": {
                "Error": [{"Message": "Object Not Found", "Detail": "Gone", "code": "610"}],
                "type": "ValidationFault",
            },
            "time": "2024-05-01T10:00:00Z",
        }
    ).encode()
    assert parse_fault(body) == Fault("610", "Object Not Found", "Gone", "ValidationFault")


def test_parses_lowercase_gateway_fault_with_numeric_code() -> None:
    body = b'{"fault":{"error":[{"message":"AuthenticationFailed","detail":"x","code":3200}],'
    body += b'"type":"AUTHENTICATION"}}'
    assert parse_fault(body) == Fault("3200", "AuthenticationFailed", "x", "AUTHENTICATION")


def test_parses_oauth_style_error() -> None:
    body = b'{"error":"invalid_grant","error_description":"Token invalid"}'
    assert parse_fault(body) == Fault(code="invalid_grant", message="Token invalid")


def test_parses_namespaced_xml_fault() -> None:
    assert parse_fault(XML_FAULT) == Fault(
        code="3001",
        message="message=ThrottleExceeded; errorCode=003001; statusCode=429",
        detail="The request limit was reached.",
        type="SERVICE",
    )


def test_parses_xml_fault_after_bom_and_whitespace() -> None:
    fault = parse_fault(b"\xef\xbb\xbf\n  " + XML_FAULT)
    assert fault is not None and fault.code == "3001"


def test_xml_with_doctype_is_not_parsed() -> None:
    evil = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
        b'<IntuitResponse><Fault type="SERVICE"><Error code="3001">'
        b"<Message>&lol2;</Message></Error></Fault></IntuitResponse>"
    )
    assert parse_fault(evil) is None


def test_xml_with_lowercase_entity_declaration_is_not_parsed() -> None:
    assert parse_fault(b'<a><!entity x SYSTEM "file:///etc/passwd"></a>') is None


def test_oversized_xml_is_not_parsed() -> None:
    padding = b"<Pad>" + b"x" * MAX_XML_FAULT_BYTES + b"</Pad>"
    body = XML_FAULT.replace(b"</IntuitResponse>", padding + b"</IntuitResponse>")
    assert parse_fault(body) is None


def test_non_utf8_xml_is_not_parsed() -> None:
    body = '<?xml version="1.0" encoding="UTF-16"?><Fault/>'.encode("utf-16")
    assert parse_fault(body) is None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"Service Unavailable",
        b"<html><body>502 Bad Gateway</body></html>",
        b"<unclosed",
        b'{"Fault": ',
        b'{"Fault": {"Error": "not a list"}}',
        b'{"Fault": {"Error": [42]}}',
        b"[1, 2, 3]",
        b"\xff\xfe\x00",
        b"{" * 100_000,
    ],
)
def test_garbage_never_raises(body: bytes) -> None:
    result = parse_fault(body)
    assert result is None or isinstance(result, Fault)


def test_json_fault_without_errors_keeps_type() -> None:
    assert parse_fault(b'{"Fault": {"type": "SystemFault"}}') == Fault(type="SystemFault")


def test_error_str_includes_status_code_and_tid() -> None:
    err = QboRequestError(
        "Error parsing query", status=400, code="4000", detail="bad", intuit_tid="tid-1"
    )
    assert str(err) == "HTTP 400, code 4000: Error parsing query (bad) [intuit_tid=tid-1]"
    assert str(QboError("no response from QBO")) == "no response: no response from QBO"


def test_from_fault_falls_back_to_default_message() -> None:
    err = QboRequestError.from_fault(404, None, intuit_tid=None, default_message="nope")
    assert (err.status, err.code, err.message) == (404, None, "nope")
    assert isinstance(err, QboRequestError)


def test_retry_policy_delays_double_from_half_a_second_and_cap() -> None:
    policy = RetryPolicy()
    assert [policy.delay(i) for i in range(3)] == [0.5, 1.0, 2.0]
    assert policy.delay(10) == 30.0
    assert policy.delay(0, retry_after_s=5) == 5.0
    assert policy.delay(2, retry_after_s=1) == 2.0
    assert policy.delay(0, retry_after_s=float("inf")) == 30.0


def test_retry_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="negative"):
        RetryPolicy(max_retries=-1)
    with pytest.raises(ValueError, match="multiplier"):
        RetryPolicy(multiplier=0.5)


def test_parse_retry_after() -> None:
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=now) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now=now) == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-3") is None


# Bodies as Intuit sent them, copied from public reports: python-quickbooks issue
# "quickbooks.exceptions.AuthorizationException" (2021), intuit/oauth-jsclient issues
# "Error : Response has an Error" (2018) and "... AuthResponse is not JSON" (2023).
RECORDED_LOWERCASE_401 = (
    b'{"warnings":null,"intuitObject":null,"fault":{"error":[{"message":"message='
    b'AuthenticationFailed; errorCode=003200; statusCode=401","detail":"Malformed bearer '
    b'token: too short or too long","code":"3200","element":null}],"type":"AUTHENTICATION"},'
    b'"report":null,"queryResponse":null,"batchItemResponse":[],"attachableResponse":[],'
    b'"syncErrorResponse":null,"requestId":null,"time":1633520295688,"status":null,'
    b'"cdcresponse":[]}'
)
RECORDED_LOWERCASE_403 = (
    b'{"warnings":null,"intuitObject":null,"fault":{"error":[{"message":"message='
    b'AuthorizationFailed; errorCode=003100; statusCode=403","detail":null,"code":"3100",'
    b'"element":null}],"type":"SERVICE"},"report":null,"queryResponse":null,'
    b'"batchItemResponse":[],"attachableResponse":[],"syncErrorResponse":null,'
    b'"requestId":null,"time":1543012192555,"status":null,"cdcresponse":[]}'
)
RECORDED_XML_401 = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    b'<IntuitResponse xmlns="http://schema.intuit.com/finance/v3" '
    b'time="2023-02-12T21:41:20.509-08:00">\n  <Fault type="AuthenticationFault">\n'
    b'    <Error code="100">\n      <Message>General Authentication Error</Message>\n'
    b"      <Detail>AuthenticationErrorGeneral: SRV-110-Authentication Failure , "
    b"statusCode: 401</Detail>\n    </Error>\n  </Fault>\n</IntuitResponse>"
)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            RECORDED_LOWERCASE_401,
            Fault(
                "3200",
                "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                "Malformed bearer token: too short or too long",
                "AUTHENTICATION",
            ),
        ),
        (
            RECORDED_LOWERCASE_403,
            Fault(
                "3100",
                "message=AuthorizationFailed; errorCode=003100; statusCode=403",
                None,
                "SERVICE",
            ),
        ),
        (
            RECORDED_XML_401,
            Fault(
                "100",
                "General Authentication Error",
                "AuthenticationErrorGeneral: SRV-110-Authentication Failure , statusCode: 401",
                "AuthenticationFault",
            ),
        ),
    ],
    ids=["lowercase-401", "lowercase-403", "xml-401"],
)
def test_parses_recorded_intuit_auth_faults(body: bytes, expected: Fault) -> None:
    assert parse_fault(body) == expected
