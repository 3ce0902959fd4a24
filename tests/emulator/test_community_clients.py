"""The emulator driven by the community's own Intuit clients, unmodified, from PyPI.

``intuit-oauth`` (Intuit's Python OAuth client) and ``python-quickbooks`` know
nothing about the emulator: if they can connect, refresh, revoke, query, page,
read CDC and recognise faults against it, the emulator speaks Intuit's protocol
as those clients understand it, independently of our own client's reading.

They are synchronous (requests), so each call runs in a worker thread while the
emulator serves from this test's event loop. Both reach the emulator only
through their own configuration: intuit-oauth takes a discovery-document URL in
place of ``"sandbox"``/``"production"`` (``intuitlib.utils.get_discovery_doc``),
and python-quickbooks builds every URL from the ``api_url_v3`` class attribute,
which a subclass overrides. oauthlib refuses plain-HTTP URLs unless
``OAUTHLIB_INSECURE_TRANSPORT`` is set, its documented switch for local testing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from intuitlib.client import AuthClient
from intuitlib.enums import Scopes
from intuitlib.exceptions import AuthClientError
from quickbooks import QuickBooks
from quickbooks.cdc import change_data_capture
from quickbooks.exceptions import (
    AuthorizationException,
    ObjectNotFoundException,
    QuickbooksException,
    ValidationException,
)
from quickbooks.objects.customer import Customer
from quickbooks.objects.invoice import Invoice
from quickbooks.objects.payment import Payment

from qbo_emulator.testing import RunningEmulator, running_emulator
from qbo_emulator.timeutil import format_entity_time

from .helpers import REALM

REDIRECT = "https://app.example.test/callback"
T = TypeVar("T")


async def in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(fn, *args, **kwargs)


def discovery_url(emu: RunningEmulator) -> str:
    # intuit-oauth's own sandbox URL ends in a slash; keep its form.
    return emu.url("/.well-known/openid_sandbox_configuration/")


def auth_client(emu: RunningEmulator, **tokens: Any) -> AuthClient:
    return AuthClient(
        emu.config.client_id,
        emu.config.client_secret,
        REDIRECT,
        discovery_url(emu),
        **tokens,
    )


def quickbooks_for(emu: RunningEmulator, client: AuthClient) -> QuickBooks:
    emulated = type("EmulatorQuickBooks", (QuickBooks,), {"api_url_v3": emu.url("/v3")})
    qb: QuickBooks = emulated(
        auth_client=client,
        refresh_token=client.refresh_token,
        company_id=REALM,
        minorversion=75,
        use_decimal=True,
    )
    return qb


@pytest.fixture
async def emu(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RunningEmulator]:
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    async with running_emulator() as running:
        yield running


@pytest.fixture
async def qb(emu: RunningEmulator) -> QuickBooks:
    tokens = emu.state.issue_tokens(REALM)
    client = await in_thread(
        auth_client,
        emu,
        access_token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
        realm_id=REALM,
    )
    return quickbooks_for(emu, client)


def consent(url: str) -> dict[str, str]:
    """Follow the authorization URL as a browser would, up to the redirect."""
    response = requests.get(url, allow_redirects=False, timeout=10)
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith(REDIRECT + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def test_intuit_oauth_connects_refreshes_and_revokes(emu: RunningEmulator) -> None:
    client = await in_thread(auth_client, emu)
    assert client.revoke_endpoint == emu.url("/v2/oauth2/tokens/revoke")
    assert client.jwks_uri == emu.url("/op/v1/jwks")
    url = client.get_authorization_url([Scopes.ACCOUNTING], state_token="csrf-123")
    assert url.startswith(emu.url("/connect/oauth2") + "?")
    redirect = await in_thread(consent, url)
    assert redirect["state"] == "csrf-123"
    assert redirect["realmId"] == emu.config.default_realm_id

    await in_thread(client.get_bearer_token, redirect["code"], realm_id=redirect["realmId"])
    assert client.access_token and client.refresh_token
    assert client.expires_in == 3600
    assert client.x_refresh_token_expires_in == 100 * 24 * 3600
    first_refresh = client.refresh_token

    await in_thread(client.refresh)
    assert client.refresh_token != first_refresh  # rotated
    with pytest.raises(AuthClientError) as stale:
        await in_thread(client.refresh, refresh_token=first_refresh)
    assert stale.value.status_code == 400
    assert b"invalid_grant" in stale.value.content

    assert await in_thread(client.revoke) is True
    with pytest.raises(AuthClientError) as revoked:
        await in_thread(client.refresh)
    assert revoked.value.status_code == 400
    assert emu.state.stats.token_call_count(REALM, "revoke") == 1


async def test_intuit_oauth_accepts_the_id_token_it_validates_against_jwks(
    emu: RunningEmulator,
) -> None:
    client = await in_thread(auth_client, emu)
    url = client.get_authorization_url([Scopes.ACCOUNTING, Scopes.OPENID])
    redirect = await in_thread(consent, url)
    await in_thread(client.get_bearer_token, redirect["code"], realm_id=redirect["realmId"])
    # intuit-oauth keeps id_token only if iss, aud[0], exp and the RS256 signature
    # (key fetched from jwks_uri by kid) all check out.
    assert client.id_token is not None
    user = await in_thread(client.get_user_info)
    assert user.json()["sub"]


async def test_python_quickbooks_finds_a_customer_with_an_apostrophe(
    emu: RunningEmulator, qb: QuickBooks
) -> None:
    for name in ("O'Brien Plumbing", "OBrien Plumbing", "O'Brien Plumbing Supply"):
        emu.state.create_customer(REALM, {"DisplayName": name})
    # filter() escapes the quote with a backslash, as Intuit's query language wants.
    found = await in_thread(Customer.filter, DisplayName="O'Brien Plumbing", qb=qb)
    assert [c.DisplayName for c in found] == ["O'Brien Plumbing"]
    assert found[0].Id == "1"


async def test_python_quickbooks_pages_through_invoices(
    emu: RunningEmulator, qb: QuickBooks
) -> None:
    emu.state.seed(REALM, customers=2, invoices_per_customer=12)
    pages: list[list[Invoice]] = []
    start = 1
    while True:
        page = await in_thread(
            Invoice.where,
            "CustomerRef = '1'",
            order_by="Id",
            start_position=start,
            max_results=5,
            qb=qb,
        )
        if not page:
            break
        pages.append(page)
        start += len(page)
    assert [len(p) for p in pages] == [5, 5, 2]
    invoices = [i for p in pages for i in p]
    assert [int(i.Id) for i in invoices] == list(range(1, 13))
    first = invoices[0]
    assert first.CustomerRef.value == "1"
    assert isinstance(first.TotalAmt, Decimal)
    assert first.BillEmail.Address == "accounts1@example.com"
    assert first.BillAddr.Line1 == "100 Main Street"
    assert first.AllowOnlineCreditCardPayment is False
    assert first.CustomField[0].Name == "Crew #"
    assert first.Line[0].Description == "Services"
    assert first.Line[0].SalesItemLineDetail.TaxCodeRef.value == "NON"
    count = await in_thread(Invoice.count, "CustomerRef = '1'", qb=qb)
    assert count == 12


async def test_python_quickbooks_reads_cdc_with_a_payment(
    emu: RunningEmulator, qb: QuickBooks
) -> None:
    since = format_entity_time(emu.state.clock() - 1)
    customer = emu.state.create_customer(REALM, {"DisplayName": "Acme"})
    invoice = emu.state.create_invoice(
        REALM, {"CustomerRef": {"value": customer["Id"]}, "TotalAmt": "100.00"}
    )
    payment = emu.state.create_payment(
        REALM,
        {
            "CustomerRef": {"value": customer["Id"]},
            "TotalAmt": "40.00",
            "Line": [
                {
                    "Amount": "40.00",
                    "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}],
                }
            ],
        },
    )
    cdc = await in_thread(change_data_capture, [Invoice, Customer, Payment], since, qb=qb)
    [changed_invoice] = list(cdc.Invoice)
    assert changed_invoice.Balance == Decimal("60.00")
    assert [(t.TxnId, t.TxnType) for t in changed_invoice.LinkedTxn] == [(payment["Id"], "Payment")]
    [received] = list(cdc.Payment)
    assert received.TotalAmt == Decimal("40.00")
    assert received.Line[0].LinkedTxn[0].TxnId == invoice["Id"]
    assert [c.DisplayName for c in cdc.Customer] == ["Acme"]


async def test_python_quickbooks_recognises_intuit_faults(
    emu: RunningEmulator, qb: QuickBooks
) -> None:
    with pytest.raises(ObjectNotFoundException) as missing:
        await in_thread(Invoice.get, 999, qb=qb)
    assert missing.value.error_code == 610

    with pytest.raises(ValidationException) as bad_query:
        await in_thread(Invoice.query, "SELECT * FROM Invoice WHERE", qb=qb)
    assert bad_query.value.error_code == 4000

    for body in ("json", "json_lowercase", "xml"):
        emu.state.set_faults([{"kind": "401", "times": 1, "body": body}])
        with pytest.raises(AuthorizationException) as denied:
            await in_thread(Customer.all, qb=qb)
        assert denied.value.error_code == 401
        expected = "General Authentication Error" if body == "xml" else "AuthenticationFailed"
        assert expected in denied.value.detail

    # Intuit's 429 is XML even to a JSON client; python-quickbooks reports it as unreadable.
    emu.state.set_faults([{"kind": "429", "times": 1}])
    with pytest.raises(QuickbooksException) as throttled:
        await in_thread(Customer.all, qb=qb)
    assert "ThrottleExceeded" in throttled.value.message
