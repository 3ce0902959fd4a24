"""Every route of both services, called with no, wrong and right credentials (docs/design.md
invariant 10), over real HTTP against the real apps, MongoDB, Kafka and the emulator.

The routes come from the apps themselves, so a new route is checked the day it is added, and
one without an authorization rule fails here (and at start-up, `checked_routes`). Each rule
says what its three levels look like and what must happen:

| rule | none | wrong | right |
| --- | --- | --- | --- |
| service | no Authorization | another bearer token | the service's token |
| webhook-signature | no intuit-signature | a signature of another key | Intuit's signature |
| oauth-state | no state | a forged state | a real consent's callback |
| connect-link | no link | a forged link | a link signed for the user |
| probe, public-page | nothing | a wrong bearer token | the right one: none of it matters |
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr
from pymongo.asynchronous.database import AsyncDatabase
from starlette.applications import Starlette

from services.common import jsoncodec
from services.common.access import Rule, rule_of
from services.common.mongo import Document
from services.common.settings import Settings
from tests.api_support import RunningApi, running_api, seed_connection, seed_mapping
from tests.integration.conftest import SYNC_AUTH, SyncUnderTest

pytestmark = pytest.mark.integration

REALM = "9130350000000001"
API_TOKEN = "matrix-api-token"
WRONG = {"Authorization": "Bearer not-a-token-of-ours"}
# A sample for each path parameter; a route with a new parameter must add one here.
PATH_SAMPLES = {
    "realm_id": REALM,
    "local_customer_id": "cust-1",
    "localCustomerId": "cust-42",
    "commandId": str(uuid.uuid4()),
    "asset": "app.js",
}
BODIES: dict[str, Any] = {
    "/connect-links": {"user_id": "alice"},
    "/customers/{local_customer_id:str}/mapping": {"realm_id": REALM, "qbo_customer_id": "1"},
}
LEVELS = ("none", "wrong", "right")


@dataclass(frozen=True)
class Call:
    method: str
    path: str  # the route's path template
    rule: Rule


@dataclass
class Answer:
    status: int
    text: str

    def error(self) -> str | None:
        try:
            body = jsoncodec.loads(self.text)
        except ValueError:
            return None
        return body.get("error") if isinstance(body, dict) else None


def calls_of(app: Starlette) -> Iterator[Call]:
    for route in app.routes:
        rule = rule_of(route)
        path = str(getattr(route, "path", route))
        assert rule is not None, f"{path} has no authorization rule"
        for method in sorted((getattr(route, "methods", None) or {"GET"}) - {"HEAD"}):
            yield Call(method, path, rule)


def concrete(template: str) -> str:
    def sample(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in PATH_SAMPLES, f"add a sample for the path parameter {name!r}"
        return PATH_SAMPLES[name]

    return re.sub(r"\{(\w+)(?::\w+)?\}", sample, template)


async def send(
    http: aiohttp.ClientSession,
    base_url: str,
    call: Call,
    *,
    url: str | None = None,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Answer:
    if body is None and call.path in BODIES:
        body = jsoncodec.dumpb(BODIES[call.path])
    async with http.request(
        call.method,
        url or base_url + concrete(call.path),
        data=body,
        headers={"Content-Type": "application/json", **(headers or {})},
        allow_redirects=False,
    ) as response:
        return Answer(response.status, await response.text())


Expectation = Callable[[Answer], bool]


def unauthorized(answer: Answer) -> bool:
    return answer.status == 401 and answer.error() == "unauthorized"


def let_through(answer: Answer) -> bool:
    # The handler ran: whatever it decided (200, 201, 400, 404, 409), it was not an
    # authorization refusal and not a failure.
    return answer.status not in (401, 403) and answer.status < 500


def is_status(status: int, error: str | None = None) -> Expectation:
    return lambda a: a.status == status and (error is None or a.error() == error)


async def check_matrix(
    calls: list[Call],
    attempt: Callable[[Call, str], Awaitable[tuple[Answer, Expectation]]],
) -> None:
    failures = []
    for call in calls:
        for level in LEVELS:
            answer, expected = await attempt(call, level)
            if not expected(answer):
                failures.append(
                    f"{call.method} {call.path} [{call.rule}] {level}: "
                    f"{answer.status} {answer.text[:200]}"
                )
    assert not failures, "\n".join(failures)


# --- the sync service -------------------------------------------------------------------------


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


async def connect_link(http: aiohttp.ClientSession, sync: SyncUnderTest, user: str) -> str:
    async with http.post(
        f"{sync.base_url}/connect-links", json={"user_id": user}, headers=SYNC_AUTH
    ) as r:
        assert r.status == 201, await r.text()
        return str((await r.json())["connect_url"])


async def consent_callback(http: aiohttp.ClientSession, sync: SyncUnderTest, user: str) -> str:
    """Start a connect for `user` and let Intuit (the emulator) consent: the callback URL."""
    async with http.get(await connect_link(http, sync, user), allow_redirects=False) as r:
        assert r.status == 302, await r.text()
        authorize = r.headers["Location"]
    async with http.get(authorize, allow_redirects=False) as r:
        assert r.status == 302, await r.text()
        return r.headers["Location"]


def signed(body: bytes, key: str) -> str:
    return base64.b64encode(hmac.new(key.encode(), body, hashlib.sha256).digest()).decode()


WEBHOOK_BODY = jsoncodec.dumpb(
    {
        "eventNotifications": [
            {
                "realmId": REALM,
                "dataChangeEvent": {
                    "entities": [
                        {
                            "name": "Invoice",
                            "id": "1",
                            "operation": "Update",
                            "lastUpdated": "2030-01-01T00:00:00.000Z",
                        }
                    ]
                },
            }
        ]
    }
)


async def test_every_sync_route_has_its_rule_enforced(
    sync: SyncUnderTest, http: aiohttp.ClientSession, settings: Settings
) -> None:
    app = sync.service.web_app()
    calls = list(calls_of(app))
    assert {c.rule for c in calls} >= {
        Rule.SERVICE,
        Rule.WEBHOOK_SIGNATURE,
        Rule.OAUTH_STATE,
        Rule.CONNECT_LINK,
        Rule.PROBE,
    }
    # A connected realm, so anything that leaks realm ids would show REALM.
    async with http.get(await consent_callback(http, sync, "alice")) as r:
        assert r.status == 200, await r.text()
    verifier = settings.qbo_webhook_verifier_token.get_secret_value()

    async def attempt(call: Call, level: str) -> tuple[Answer, Expectation]:
        base = sync.base_url
        if call.rule is Rule.SERVICE:
            headers = {"none": {}, "wrong": WRONG, "right": SYNC_AUTH}[level]
            answer = await send(http, base, call, headers=headers)
            return answer, let_through if level == "right" else unauthorized
        if call.rule is Rule.WEBHOOK_SIGNATURE:
            signature = {"none": None, "wrong": signed(WEBHOOK_BODY, "not-the-verifier")}.get(
                level, signed(WEBHOOK_BODY, verifier)
            )
            headers = {"intuit-signature": signature} if signature else {}
            answer = await send(http, base, call, headers=headers, body=WEBHOOK_BODY)
            return answer, is_status(200) if level == "right" else is_status(401)
        if call.rule is Rule.OAUTH_STATE:
            if level == "right":
                url = await consent_callback(http, sync, "alice")
                return await send(http, base, call, url=url), is_status(200)
            query = "?code=abc&realmId=" + REALM
            query += "&state=eyJ1IjoibWFsbG9yeSJ9.forged" if level == "wrong" else ""
            error = "bad_state" if level == "wrong" else "bad_callback"
            answer = await send(http, base, call, url=base + call.path + query)
            return answer, is_status(400, error)
        if call.rule is Rule.CONNECT_LINK:
            if level == "right":
                url = await connect_link(http, sync, "alice")
                return await send(http, base, call, url=url), is_status(302)
            url = base + call.path + ("?link=eyJ1IjoiYWxpY2UifQ.forged" if level == "wrong" else "")
            return await send(http, base, call, url=url), is_status(401)
        # probe / public-page: credentials change nothing, and no tenant data comes back.
        headers = {"none": {}, "wrong": WRONG, "right": SYNC_AUTH}[level]
        answer = await send(http, base, call, headers=headers)
        return answer, lambda a: a.status == 200 and REALM not in a.text

    await check_matrix(calls, attempt)


async def test_stats_and_metrics_name_realms_so_they_need_the_token(
    sync: SyncUnderTest, http: aiohttp.ClientSession
) -> None:
    callback = await consent_callback(http, sync, "alice")
    async with http.get(callback) as r:
        assert r.status == 200
    async with http.get(f"{sync.base_url}/stats", headers=SYNC_AUTH) as r:
        assert REALM in (await r.json())["qbo_calls_by_realm"]  # the proof read is metered
    async with http.get(f"{sync.base_url}/stats") as r:
        assert r.status == 401
        assert REALM not in await r.text()
    async with http.get(f"{sync.base_url}/metrics", headers=SYNC_AUTH) as r:
        calls = f'qbo_sync_qbo_calls_total{{realm_id="{REALM}",status_class="2xx"}} 1.0'
        assert calls in (await r.text()).splitlines()
    async with http.get(f"{sync.base_url}/metrics") as r:
        assert r.status == 401
        assert REALM not in await r.text()


# --- the api ----------------------------------------------------------------------------------


@pytest.fixture
async def api(settings: Settings, mongo_db: AsyncDatabase[Document]) -> AsyncIterator[RunningApi]:
    await seed_mapping(mongo_db, "cust-42")
    await seed_connection(mongo_db)
    configured = settings.model_copy(update={"api_tokens": SecretStr(API_TOKEN)})
    async with running_api(configured, run_projector=False) as running:
        yield running


async def test_every_api_route_has_its_rule_enforced(
    api: RunningApi, http: aiohttp.ClientSession
) -> None:
    calls = list(calls_of(api.service.web_app()))
    assert {c.rule for c in calls} == {Rule.SERVICE, Rule.PROBE, Rule.PUBLIC_PAGE}
    right = {"Authorization": f"Bearer {API_TOKEN}"}

    async def attempt(call: Call, level: str) -> tuple[Answer, Expectation]:
        headers = {"none": {}, "wrong": WRONG, "right": right}[level]
        answer = await send(http, api.base_url, call, headers=headers)
        if call.rule is Rule.SERVICE:
            return answer, let_through if level == "right" else unauthorized
        # /readyz may answer 503 while a dependency warms up; that is not a refusal.
        return answer, lambda a: a.status in (200, 503) and REALM not in a.text

    await check_matrix(calls, attempt)
