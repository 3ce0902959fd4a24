"""Edge cases of QboClient against a scripted fake of the QBO HTTP API."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from aioresponses import CallbackResult, aioresponses
from structlog.testing import capture_logs
from yarl import URL

from services.sync.quickbooks import (
    QboAuthError,
    QboClient,
    QboRequestError,
    QboThrottled,
    QboUnavailable,
    RealmBudget,
    ReauthRequired,
    RetryPolicy,
    Select,
)

BASE = "https://qbo.test"
REALM = "9130350000000001"
OTHER_REALM = "9130350000000002"
TOKEN = "eyJ-first-access-token-SECRET"
NEW_TOKEN = "eyJ-second-access-token-SECRET"
TID = "1-5f6a7b8c-0123456789abcdef"

XML_THROTTLED = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<IntuitResponse xmlns="http://schema.intuit.com/finance/v3"'
    ' time="2024-05-01T10:00:00.000-07:00">'
    '<Fault type="SERVICE"><Error code="3001">'
    "<Message>message=ThrottleExceeded; errorCode=003001; statusCode=429</Message>"
    "<Detail>The request limit was reached.</Detail>"
    "</Error></Fault></IntuitResponse>"
)


def fault_json(code: str, message: str, detail: str = "", kind: str = "ValidationFault") -> str:
    error = {"Message": message, "Detail": detail, "code": code}
    return json.dumps({"Fault": {"Error": [error], "type": kind}, "time": "2024-05-01T10:00:00Z"})


@dataclass
class Reply:
    status: int = 200
    body: str = "{}"
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


@dataclass
class Seen:
    url: URL
    headers: dict[str, str]

    @property
    def params(self) -> dict[str, str]:
        return dict(self.url.query)


class _StubStreamWriter:
    output_size = 0


class CompatResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 predates aiohttp 3.14's required ``stream_writer`` argument
    (pnuckowski/aioresponses#289); supply a stub until a fixed release exists."""

    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", _StubStreamWriter())
        super().__init__(method, url, **kwargs)


class FakeQbo:
    """Answers every GET under BASE from a script, recording each request."""

    def __init__(self, mock: aioresponses) -> None:
        self.script: list[Reply | BaseException] = []
        self.seen: list[Seen] = []
        mock.get(re.compile(r"^https://qbo\.test/.*$"), callback=self._answer, repeat=True)

    def push(self, *items: Reply | BaseException) -> None:
        self.script.extend(items)

    def _answer(self, url: URL, **kwargs: Any) -> CallbackResult:
        self.seen.append(Seen(url, dict(kwargs.get("headers") or {})))
        assert self.script, f"unexpected request: {url}"
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return CallbackResult(
            status=item.status,
            body=item.body,
            headers={"intuit_tid": TID, **item.headers},
            content_type=item.content_type,
            response_class=CompatResponse,
        )


class FakeTokens:
    def __init__(self, *, reauth_on_refresh: bool = False, reauth_on_access: bool = False) -> None:
        self.current = TOKEN
        self.refreshes: list[tuple[str, str]] = []
        self.reauth_on_refresh = reauth_on_refresh
        self.reauth_on_access = reauth_on_access
        self.raised: ReauthRequired | None = None

    async def access_token(self, realm_id: str) -> str:
        if self.reauth_on_access:
            self.raised = ReauthRequired(realm_id=realm_id)
            raise self.raised
        return self.current

    async def refresh_after_401(self, realm_id: str, rejected: str) -> str:
        self.refreshes.append((realm_id, rejected))
        if self.reauth_on_refresh:
            self.raised = ReauthRequired("invalid_grant", realm_id=realm_id)
            raise self.raised
        self.current = NEW_TOKEN
        return self.current


class FakeSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture
def qbo() -> Iterator[FakeQbo]:
    with aioresponses() as mock:
        yield FakeQbo(mock)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def tokens() -> FakeTokens:
    return FakeTokens()


@pytest.fixture
def sleep() -> FakeSleep:
    return FakeSleep()


@pytest.fixture
def client(session: aiohttp.ClientSession, tokens: FakeTokens, sleep: FakeSleep) -> QboClient:
    return QboClient(session, BASE, tokens, sleep=sleep)


def invoice_page(start: int, count: int) -> Reply:
    rows = [{"Id": str(i), "TotalAmt": 10.5} for i in range(start, start + count)]
    body: dict[str, Any] = {"QueryResponse": {"startPosition": start, "maxResults": count}}
    if rows:
        body["QueryResponse"]["Invoice"] = rows
    return Reply(body=json.dumps(body))


QUERY_OK = Reply(body=json.dumps({"QueryResponse": {"Invoice": [{"Id": "1"}]}}))


# -- request shape -----------------------------------------------------------


async def test_every_call_carries_minorversion_accept_and_bearer(
    client: QboClient, qbo: FakeQbo
) -> None:
    qbo.push(
        QUERY_OK,
        Reply(body=json.dumps({"Invoice": {"Id": "42"}})),
        Reply(body=json.dumps({"CDCResponse": [{"QueryResponse": [{"Invoice": []}]}]})),
    )
    await client.query(REALM, "SELECT * FROM Invoice")
    await client.read(REALM, "Invoice", "42")
    await client.cdc(REALM, ["Invoice"], datetime(2024, 5, 1, tzinfo=UTC))

    paths = [s.url.path for s in qbo.seen]
    assert paths == [
        f"/v3/company/{REALM}/query",
        f"/v3/company/{REALM}/invoice/42",
        f"/v3/company/{REALM}/cdc",
    ]
    for seen in qbo.seen:
        assert seen.params["minorversion"] == "75"
        assert seen.headers["Accept"] == "application/json"
        assert seen.headers["Authorization"] == f"Bearer {TOKEN}"


async def test_minor_version_is_configurable(
    session: aiohttp.ClientSession, tokens: FakeTokens, qbo: FakeQbo
) -> None:
    qbo.push(QUERY_OK)
    await QboClient(session, BASE, tokens, minor_version=70).query(REALM, "SELECT * FROM Invoice")
    assert qbo.seen[0].params["minorversion"] == "70"


async def test_query_statement_is_sent_url_encoded_and_round_trips(
    client: QboClient, qbo: FakeQbo
) -> None:
    statement = Select("Customer").where("DisplayName", "=", "O'Brien & Sons+1").render()
    qbo.push(Reply(body=json.dumps({"QueryResponse": {}})))
    assert await client.query(REALM, statement) == {}
    assert qbo.seen[0].params["query"] == statement
    assert "%2B" in str(qbo.seen[0].url)  # a literal '+' must not turn into a space


async def test_invalid_realm_id_is_rejected_before_any_request(
    client: QboClient, qbo: FakeQbo
) -> None:
    with pytest.raises(ValueError, match="realm id"):
        await client.query("../../admin", "SELECT * FROM Invoice")
    assert qbo.seen == []
    assert client.calls == Counter()


# -- 401 handling ------------------------------------------------------------


async def test_401_refreshes_once_then_succeeds(
    client: QboClient, qbo: FakeQbo, tokens: FakeTokens, sleep: FakeSleep
) -> None:
    qbo.push(
        Reply(401, fault_json("3200", "AuthenticationFailed", kind="AUTHENTICATION")), QUERY_OK
    )

    result = await client.query(REALM, "SELECT * FROM Invoice")

    assert result == {"Invoice": [{"Id": "1"}]}
    assert tokens.refreshes == [(REALM, TOKEN)]
    assert [s.headers["Authorization"] for s in qbo.seen] == [
        f"Bearer {TOKEN}",
        f"Bearer {NEW_TOKEN}",
    ]
    assert sleep.delays == []  # a refresh is not a backoff


async def test_401_twice_raises_auth_error_after_exactly_one_refresh(
    client: QboClient, qbo: FakeQbo, tokens: FakeTokens
) -> None:
    auth_fault = json.dumps(
        {"fault": {"error": [{"message": "AuthenticationFailed", "code": "3200"}]}}
    )
    qbo.push(Reply(401, auth_fault), Reply(401, auth_fault))

    with pytest.raises(QboAuthError) as info:
        await client.query(REALM, "SELECT * FROM Invoice")

    assert tokens.refreshes == [(REALM, TOKEN)]
    assert len(qbo.seen) == 2
    assert info.value.status == 401
    assert info.value.code == "3200"  # lower-case gateway keys are understood
    assert info.value.intuit_tid == TID


async def test_reauth_required_from_refresh_propagates_unchanged(
    session: aiohttp.ClientSession, qbo: FakeQbo
) -> None:
    tokens = FakeTokens(reauth_on_refresh=True)
    client = QboClient(session, BASE, tokens, sleep=FakeSleep())
    qbo.push(Reply(401, fault_json("3200", "AuthenticationFailed")))

    with pytest.raises(ReauthRequired) as info:
        await client.query(REALM, "SELECT * FROM Invoice")

    assert info.value is tokens.raised
    assert info.value.realm_id == REALM
    assert len(qbo.seen) == 1


async def test_reauth_required_from_access_token_propagates_without_request(
    session: aiohttp.ClientSession, qbo: FakeQbo
) -> None:
    tokens = FakeTokens(reauth_on_access=True)
    client = QboClient(session, BASE, tokens, sleep=FakeSleep())

    with pytest.raises(ReauthRequired) as info:
        await client.read(REALM, "Invoice", "1")

    assert info.value is tokens.raised
    assert qbo.seen == []


async def test_token_echoed_in_fault_is_redacted(client: QboClient, qbo: FakeQbo) -> None:
    echo = fault_json("3200", f"bad token {TOKEN}", f"rejected: {NEW_TOKEN}")
    qbo.push(Reply(401, echo), Reply(401, echo))

    with pytest.raises(QboAuthError) as info:
        await client.query(REALM, "SELECT * FROM Invoice")

    assert info.value.message == "bad token [redacted]"
    assert info.value.detail == "rejected: [redacted]"


# -- 429 / 5xx / transport backoff -------------------------------------------


async def test_429_twice_then_200_backs_off_half_a_second_doubling(
    client: QboClient, qbo: FakeQbo, sleep: FakeSleep
) -> None:
    throttled = Reply(429, fault_json("3001", "ThrottleExceeded", kind="SERVICE"))
    qbo.push(throttled, throttled, QUERY_OK)

    result = await client.query(REALM, "SELECT * FROM Invoice")

    assert result == {"Invoice": [{"Id": "1"}]}
    assert sleep.delays == [0.5, 1.0]
    assert len(qbo.seen) == 3


async def test_429_four_times_raises_throttled_after_three_retries(
    client: QboClient, qbo: FakeQbo, sleep: FakeSleep
) -> None:
    throttled = Reply(429, fault_json("3001", "ThrottleExceeded", "Too many", kind="SERVICE"))
    qbo.push(throttled, throttled, throttled, throttled)

    with pytest.raises(QboThrottled) as info:
        await client.query(REALM, "SELECT * FROM Invoice")

    assert sleep.delays == [0.5, 1.0, 2.0]
    assert len(qbo.seen) == 4
    assert (info.value.status, info.value.code, info.value.detail) == (429, "3001", "Too many")
    assert client.calls[REALM] == 4


async def test_retry_after_seconds_is_honoured(
    client: QboClient, qbo: FakeQbo, sleep: FakeSleep
) -> None:
    qbo.push(Reply(429, "", headers={"Retry-After": "5"}), QUERY_OK)
    await client.query(REALM, "SELECT * FROM Invoice")
    assert sleep.delays == [5.0]


async def test_retry_after_is_capped_and_never_shortens_backoff(
    client: QboClient, qbo: FakeQbo, sleep: FakeSleep
) -> None:
    past = "Wed, 21 Oct 2015 07:28:00 GMT"
    qbo.push(
        Reply(429, "", headers={"Retry-After": "600"}),
        Reply(503, "", headers={"Retry-After": "0"}),
        Reply(429, "", headers={"Retry-After": past}),
        QUERY_OK,
    )
    await client.query(REALM, "SELECT * FROM Invoice")
    assert sleep.delays == [30.0, 1.0, 2.0]


async def test_retry_after_http_date_is_honoured(
    client: QboClient, qbo: FakeQbo, sleep: FakeSleep
) -> None:
    future = datetime.now(UTC) + timedelta(seconds=12)
    header = future.strftime("%a, %d %b %Y %H:%M:%S GMT")
    qbo.push(Reply(429, "", headers={"Retry-After": header}), QUERY_OK)
    await client.query(REALM, "SELECT * FROM Invoice")
    assert len(sleep.delays) == 1
    assert 9.0 < sleep.delays[0] <= 12.0


async def test_xml_429_body_is_parsed(client: QboClient, qbo: FakeQbo) -> None:
    throttled = Reply(429, XML_THROTTLED, content_type="application/xml")
    qbo.push(throttled, throttled, throttled, throttled)

    with pytest.raises(QboThrottled) as info:
        await client.query(REALM, "SELECT * FROM Invoice")

    assert info.value.code == "3001"
    assert info.value.message == "message=ThrottleExceeded; errorCode=003001; statusCode=429"
    assert info.value.detail == "The request limit was reached."
    assert info.value.intuit_tid == TID


async def test_503_then_200(client: QboClient, qbo: FakeQbo, sleep: FakeSleep) -> None:
    qbo.push(Reply(503, "<html>Service Unavailable</html>", content_type="text/html"), QUERY_OK)
    assert await client.query(REALM, "SELECT * FROM Invoice") == {"Invoice": [{"Id": "1"}]}
    assert sleep.delays == [0.5]


async def test_5xx_exhausted_raises_unavailable_with_fault(
    client: QboClient, qbo: FakeQbo, sleep: FakeSleep
) -> None:
    error = Reply(500, fault_json("10000", "An application error has occurred", kind="SystemFault"))
    qbo.push(error, error, error, error)
    with pytest.raises(QboUnavailable) as info:
        await client.query(REALM, "SELECT * FROM Invoice")
    assert (info.value.status, info.value.code) == (500, "10000")
    assert sleep.delays == [0.5, 1.0, 2.0]


@pytest.mark.parametrize(
    "exc",
    [
        TimeoutError(),
        aiohttp.ServerTimeoutError("read timeout"),
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientConnectionError("connection reset"),
    ],
    ids=["timeout", "server-timeout", "server-disconnected", "connection-error"],
)
async def test_transport_failure_then_200(
    client: QboClient, qbo: FakeQbo, sleep: FakeSleep, exc: BaseException
) -> None:
    qbo.push(exc, QUERY_OK)
    assert await client.query(REALM, "SELECT * FROM Invoice") == {"Invoice": [{"Id": "1"}]}
    assert sleep.delays == [0.5]
    assert client.calls[REALM] == 2


async def test_timeouts_exhausted_raise_unavailable_with_cause(
    client: QboClient, qbo: FakeQbo, sleep: FakeSleep
) -> None:
    qbo.push(*(TimeoutError() for _ in range(4)))
    with pytest.raises(QboUnavailable) as info:
        await client.query(REALM, "SELECT * FROM Invoice")
    assert info.value.status == 0
    assert isinstance(info.value.__cause__, TimeoutError)
    assert sleep.delays == [0.5, 1.0, 2.0]


async def test_malformed_json_retries_then_unavailable(
    client: QboClient, qbo: FakeQbo, sleep: FakeSleep
) -> None:
    broken = Reply(200, '{"QueryResponse": {"Invoice": [')
    qbo.push(broken, broken, broken, broken)

    with pytest.raises(QboUnavailable) as info:
        await client.query(REALM, "SELECT * FROM Invoice")

    assert info.value.status == 200
    assert "malformed JSON" in info.value.message
    assert sleep.delays == [0.5, 1.0, 2.0]
    assert len(qbo.seen) == 4


async def test_malformed_json_then_good_json_recovers(
    client: QboClient, qbo: FakeQbo, sleep: FakeSleep
) -> None:
    qbo.push(Reply(200, "NaN"), QUERY_OK)
    assert await client.query(REALM, "SELECT * FROM Invoice") == {"Invoice": [{"Id": "1"}]}
    assert sleep.delays == [0.5]


async def test_mixed_failures_share_one_retry_budget(
    client: QboClient, qbo: FakeQbo, sleep: FakeSleep
) -> None:
    qbo.push(Reply(503, ""), Reply(429, ""), TimeoutError(), Reply(502, ""))
    with pytest.raises(QboUnavailable) as info:
        await client.query(REALM, "SELECT * FROM Invoice")
    assert info.value.status == 502  # the last failure decides the type
    assert sleep.delays == [0.5, 1.0, 2.0]
    assert len(qbo.seen) == 4


# -- other 4xx -----------------------------------------------------------------


async def test_400_query_parse_error_fails_immediately_with_details(
    client: QboClient, qbo: FakeQbo, sleep: FakeSleep
) -> None:
    qbo.push(
        Reply(
            400,
            fault_json(
                "4000",
                "Error parsing query",
                'QueryParserError: Encountered " <INTEGER> "1 "" at line 1, column 30.',
            ),
            headers={"intuit_tid": "tid-400"},
        )
    )

    with pytest.raises(QboRequestError) as info:
        await client.query(REALM, "SELECT * FROM Invoice WHERE 1")

    err = info.value
    assert (err.status, err.code, err.message) == (400, "4000", "Error parsing query")
    assert err.detail is not None and err.detail.startswith("QueryParserError")
    assert err.intuit_tid == "tid-400"
    assert sleep.delays == []
    assert len(qbo.seen) == 1


async def test_object_not_found_610_is_a_request_error(client: QboClient, qbo: FakeQbo) -> None:
    qbo.push(Reply(400, fault_json("610", "Object Not Found", "Something you're trying to use")))
    with pytest.raises(QboRequestError) as info:
        await client.read(REALM, "Invoice", "999")
    assert info.value.code == "610"


async def test_redirects_are_not_followed(client: QboClient, qbo: FakeQbo) -> None:
    qbo.push(Reply(302, "", headers={"Location": "https://evil.test/steal"}))
    with pytest.raises(QboRequestError) as info:
        await client.query(REALM, "SELECT * FROM Invoice")
    assert info.value.status == 302
    assert len(qbo.seen) == 1


async def test_fault_inside_200_is_a_request_error(client: QboClient, qbo: FakeQbo) -> None:
    qbo.push(Reply(200, fault_json("2020", "Required param missing")))
    with pytest.raises(QboRequestError) as info:
        await client.query(REALM, "SELECT * FROM Invoice")
    assert (info.value.status, info.value.code) == (200, "2020")


# -- paging ------------------------------------------------------------------


async def test_query_pages_streams_2500_rows_over_3_pages(client: QboClient, qbo: FakeQbo) -> None:
    qbo.push(invoice_page(1, 1000), invoice_page(1001, 1000), invoice_page(2001, 500))
    select = Select("Invoice").where("Balance", ">", 0)

    pages = client.query_pages(REALM, select)
    first = await anext(pages)
    assert len(first) == 1000
    assert len(qbo.seen) == 1  # streamed: later pages are not fetched yet
    rest = [page async for page in pages]

    assert [len(p) for p in [first, *rest]] == [1000, 1000, 500]
    ids = [row["Id"] for page in [first, *rest] for row in page]
    assert ids == [str(i) for i in range(1, 2501)]
    assert [s.params["query"] for s in qbo.seen] == [
        "SELECT * FROM Invoice WHERE Balance > 0 ORDERBY Id STARTPOSITION 1 MAXRESULTS 1000",
        "SELECT * FROM Invoice WHERE Balance > 0 ORDERBY Id STARTPOSITION 1001 MAXRESULTS 1000",
        "SELECT * FROM Invoice WHERE Balance > 0 ORDERBY Id STARTPOSITION 2001 MAXRESULTS 1000",
    ]


async def test_query_pages_keeps_explicit_order_and_stops_on_empty_page(
    client: QboClient, qbo: FakeQbo
) -> None:
    qbo.push(invoice_page(1, 2), invoice_page(3, 0))
    select = Select("Invoice").order_by("MetaData.LastUpdatedTime", descending=True)

    pages = [page async for page in client.query_pages(REALM, select, page_size=2)]

    assert [len(p) for p in pages] == [2]  # the empty last page is not yielded
    assert [s.params["query"] for s in qbo.seen] == [
        "SELECT * FROM Invoice ORDERBY MetaData.LastUpdatedTime DESC STARTPOSITION 1 MAXRESULTS 2",
        "SELECT * FROM Invoice ORDERBY MetaData.LastUpdatedTime DESC STARTPOSITION 3 MAXRESULTS 2",
    ]


@pytest.mark.parametrize("page_size", [0, 1001])
async def test_query_pages_rejects_bad_page_size(client: QboClient, page_size: int) -> None:
    with pytest.raises(ValueError, match="page_size"):
        await anext(client.query_pages(REALM, Select("Invoice"), page_size=page_size))


# -- payloads ----------------------------------------------------------------


async def test_amounts_are_exact_decimals(client: QboClient, qbo: FakeQbo) -> None:
    body = (
        '{"Invoice": {"Id": "7", "TotalAmt": 0.1, "Balance": 1234567890.12,'
        ' "Line": [{"Amount": 0.30000000000000004}]}}'
    )
    qbo.push(Reply(body=body))

    invoice = await client.read(REALM, "Invoice", "7")

    assert isinstance(invoice["TotalAmt"], Decimal)
    assert invoice["TotalAmt"] == Decimal("0.1")
    assert invoice["Balance"] == Decimal("1234567890.12")
    assert invoice["Line"][0]["Amount"] == Decimal("0.30000000000000004")


async def test_cdc_groups_objects_by_entity(client: QboClient, qbo: FakeQbo) -> None:
    body = {
        "CDCResponse": [
            {
                "QueryResponse": [
                    {"Invoice": [{"Id": "1"}, {"Id": "2", "status": "Deleted"}], "totalCount": 2},
                    {"Customer": [{"Id": "9"}]},
                ]
            }
        ],
        "time": "2024-05-01T10:00:00-07:00",
    }
    qbo.push(Reply(body=json.dumps(body)))
    since = datetime(2024, 4, 30, 8, 15, 30, 123456, tzinfo=timezone(timedelta(hours=-7)))

    result = await client.cdc(REALM, ["Invoice", "Customer", "Payment"], since)

    assert result == {
        "Invoice": [{"Id": "1"}, {"Id": "2", "status": "Deleted"}],
        "Customer": [{"Id": "9"}],
        "Payment": [],
    }
    params = qbo.seen[0].params
    assert params["entities"] == "Invoice,Customer,Payment"
    assert params["changedSince"] == "2024-04-30T08:15:30-07:00"


async def test_cdc_requires_aware_datetime_and_entity_list(client: QboClient) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await client.cdc(REALM, ["Invoice"], datetime(2024, 5, 1))
    with pytest.raises(ValueError, match="entities"):
        await client.cdc(REALM, "Invoice", datetime(2024, 5, 1, tzinfo=UTC))


async def test_read_rejects_unsafe_entity_id(client: QboClient, qbo: FakeQbo) -> None:
    with pytest.raises(ValueError, match="entity id"):
        await client.read(REALM, "Invoice", "1/../../2")
    assert qbo.seen == []


# -- accounting, budget and logging ------------------------------------------


async def test_calls_counter_counts_every_attempt_per_realm(
    client: QboClient, qbo: FakeQbo
) -> None:
    qbo.push(Reply(429, ""), TimeoutError(), QUERY_OK, QUERY_OK)
    await client.query(REALM, "SELECT * FROM Invoice")
    await client.query(OTHER_REALM, "SELECT * FROM Invoice")
    assert client.calls == Counter({REALM: 3, OTHER_REALM: 1})


async def test_budget_slot_is_held_per_attempt_not_during_backoff(
    session: aiohttp.ClientSession, tokens: FakeTokens, qbo: FakeQbo
) -> None:
    budget = RealmBudget()
    in_flight_while_sleeping: list[int] = []

    async def sleep(delay: float) -> None:
        in_flight_while_sleeping.append(budget.in_flight(REALM))

    client = QboClient(session, BASE, tokens, budget=budget, sleep=sleep)
    qbo.push(Reply(503, ""), Reply(503, ""), QUERY_OK)

    await client.query(REALM, "SELECT * FROM Invoice")

    assert in_flight_while_sleeping == [0, 0]
    assert budget.used_in_window(REALM) == 3
    assert budget.in_flight(REALM) == 0


async def test_custom_retry_policy(
    session: aiohttp.ClientSession, tokens: FakeTokens, qbo: FakeQbo, sleep: FakeSleep
) -> None:
    policy = RetryPolicy(max_retries=1, base_delay_s=0.25)
    client = QboClient(session, BASE, tokens, retry=policy, sleep=sleep)
    qbo.push(Reply(503, ""), Reply(503, ""))
    with pytest.raises(QboUnavailable):
        await client.query(REALM, "SELECT * FROM Invoice")
    assert sleep.delays == [0.25]


async def test_logs_carry_context_but_never_tokens(client: QboClient, qbo: FakeQbo) -> None:
    qbo.push(
        Reply(401, fault_json("3200", "AuthenticationFailed")),
        Reply(429, XML_THROTTLED, content_type="application/xml"),
        QUERY_OK,
        Reply(400, fault_json("4000", "Error parsing query")),
    )
    with capture_logs() as logs:
        await client.query(REALM, "SELECT * FROM Invoice")
        with pytest.raises(QboRequestError):
            await client.query(REALM, "SELECT * FROM Invoice WHERE")

    assert logs, "expected log output"
    dumped = repr(logs)
    assert TOKEN not in dumped
    assert NEW_TOKEN not in dumped
    assert "Bearer" not in dumped
    statuses = [entry.get("status") for entry in logs if "status" in entry]
    assert statuses == [401, 429, 200, 400]
    for entry in logs:
        assert entry["realm_id"] == REALM
    assert all(e["intuit_tid"] == TID for e in logs if "status" in e)
    assert {e["attempt"] for e in logs if e["event"] == "qbo.ok"} == {3}
