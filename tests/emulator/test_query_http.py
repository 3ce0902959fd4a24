"""Query endpoint over real HTTP: filters, paging, ordering, errors, auth."""

from __future__ import annotations

from decimal import Decimal

import aiohttp
import pytest

from qbo_emulator.state import EmulatorState
from qbo_emulator.testing import RunningEmulator

from .helpers import OTHER_REALM, REALM, api_get, bearer, run_query


@pytest.fixture
def books(emu: RunningEmulator) -> EmulatorState:
    state = emu.state
    for name in ["O'Brien", "Amy's Bird Sanctuary", "Bill's Windsurf Shop", "Cool Cars"]:
        state.create_customer(REALM, {"DisplayName": name, "GivenName": name.split()[0]})
    state.create_customer(REALM, {"DisplayName": "Dormant Ltd", "Active": False})
    for i in range(1, 26):  # 25 invoices spread over customers 1..4
        state.create_invoice(
            REALM, {"CustomerRef": {"value": str((i - 1) % 4 + 1)}, "TotalAmt": f"{i}.25"}
        )
    return state


async def test_escaped_quote_matches(
    books: EmulatorState, emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    status, body = await run_query(
        session, emu, token, r"select * from Customer where DisplayName = 'O\'Brien'"
    )
    assert status == 200
    customers = body["QueryResponse"]["Customer"]
    assert [c["DisplayName"] for c in customers] == ["O'Brien"]
    assert body["QueryResponse"]["startPosition"] == 1
    assert body["QueryResponse"]["maxResults"] == 1
    assert isinstance(body["time"], str)


async def test_equality_is_case_insensitive(
    books: EmulatorState, emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    _, body = await run_query(
        session, emu, token, "select * from Customer where DisplayName = 'cool cars'"
    )
    assert [c["Id"] for c in body["QueryResponse"]["Customer"]] == ["4"]


async def test_like_with_wildcards(
    books: EmulatorState, emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    _, body = await run_query(
        session, emu, token, "select * from Customer where DisplayName LIKE '%s%'"
    )
    names = sorted(c["DisplayName"] for c in body["QueryResponse"]["Customer"])
    assert names == ["Amy's Bird Sanctuary", "Bill's Windsurf Shop", "Cool Cars"]
    _, body = await run_query(
        session, emu, token, "select * from Customer where DisplayName LIKE 'Bill%'"
    )
    assert [c["Id"] for c in body["QueryResponse"]["Customer"]] == ["3"]


async def test_in_on_ids_and_customer_ref(
    books: EmulatorState, emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    _, body = await run_query(
        session, emu, token, "select * from Invoice where Id IN ('3','1','99')"
    )
    assert [i["Id"] for i in body["QueryResponse"]["Invoice"]] == ["1", "3"]
    _, body = await run_query(
        session, emu, token, "select * from Invoice where CustomerRef IN ('2', '4') maxresults 1000"
    )
    invoices = body["QueryResponse"]["Invoice"]
    assert {i["CustomerRef"]["value"] for i in invoices} == {"2", "4"}
    assert len(invoices) == 12  # ids 2,4,6,...,24


async def test_customer_ref_equality_and_name(
    books: EmulatorState, emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    _, body = await run_query(session, emu, token, "select * from Invoice where CustomerRef = '1'")
    invoices = body["QueryResponse"]["Invoice"]
    assert [i["Id"] for i in invoices] == ["1", "5", "9", "13", "17", "21", "25"]
    assert all(i["CustomerRef"] == {"value": "1", "name": "O'Brien"} for i in invoices)


async def test_count(
    books: EmulatorState, emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    _, body = await run_query(session, emu, token, "select count(*) from Invoice")
    assert body["QueryResponse"] == {"totalCount": 25}
    _, body = await run_query(
        session, emu, token, "select count(*) from Invoice where TotalAmt > '20'"
    )
    assert body["QueryResponse"] == {"totalCount": 6}  # 20.25 .. 25.25


async def test_inactive_customers_hidden_unless_active_is_mentioned(
    books: EmulatorState, emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    _, body = await run_query(session, emu, token, "select count(*) from Customer")
    assert body["QueryResponse"]["totalCount"] == 4
    _, body = await run_query(session, emu, token, "select * from Customer where Active = false")
    assert [c["DisplayName"] for c in body["QueryResponse"]["Customer"]] == ["Dormant Ltd"]
    _, body = await run_query(
        session, emu, token, "select count(*) from Customer where Active IN (true, false)"
    )
    assert body["QueryResponse"]["totalCount"] == 5


async def test_paging_boundaries(
    books: EmulatorState, emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    seen: list[str] = []
    for start in (1, 11, 21):
        _, body = await run_query(
            session,
            emu,
            token,
            f"select * from Invoice startposition {start} maxresults 10",  # noqa: S608
        )
        page = body["QueryResponse"]
        assert page["startPosition"] == start
        assert page["maxResults"] == len(page["Invoice"])
        seen.extend(i["Id"] for i in page["Invoice"])
    assert seen == [str(i) for i in range(1, 26)]  # numeric Id order, nothing lost
    _, body = await run_query(
        session, emu, token, "select * from Invoice startposition 25 maxresults 10"
    )
    assert [i["Id"] for i in body["QueryResponse"]["Invoice"]] == ["25"]
    _, body = await run_query(session, emu, token, "select * from Invoice startposition 26")
    assert body["QueryResponse"] == {}


async def test_default_maxresults_is_100(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    emu.state.seed(REALM, customers=1, invoices_per_customer=150)
    _, body = await run_query(session, emu, token, "select * from Invoice")
    assert body["QueryResponse"]["maxResults"] == 100
    assert body["QueryResponse"]["Invoice"][-1]["Id"] == "100"


async def test_orderby(
    books: EmulatorState, emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    _, body = await run_query(
        session, emu, token, "select * from Invoice orderby TotalAmt desc maxresults 3"
    )
    assert [i["TotalAmt"] for i in body["QueryResponse"]["Invoice"]] == [
        Decimal("25.25"),
        Decimal("24.25"),
        Decimal("23.25"),
    ]
    _, body = await run_query(session, emu, token, "select * from Customer ORDERBY DisplayName ASC")
    names = [c["DisplayName"] for c in body["QueryResponse"]["Customer"]]
    assert names == sorted(names, key=str.casefold)
    _, body = await run_query(
        session,
        emu,
        token,
        "select * from Invoice orderby MetaData.LastUpdatedTime desc maxresults 2",
    )
    assert [i["Id"] for i in body["QueryResponse"]["Invoice"]] == ["25", "24"]


async def test_last_updated_time_filter_sees_recent_changes(
    books: EmulatorState, emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    _, body = await run_query(session, emu, token, "select * from Invoice where Id = '25'")
    stamp = body["QueryResponse"]["Invoice"][0]["MetaData"]["LastUpdatedTime"]
    books.update_invoice(REALM, "7", {"PrivateNote": "touched"})
    _, body = await run_query(
        session,
        emu,
        token,
        f"select * from Invoice where MetaData.LastUpdatedTime >= '{stamp}' maxresults 1000",  # noqa: S608
    )
    ids = [i["Id"] for i in body["QueryResponse"]["Invoice"]]
    assert "7" in ids
    assert "25" in ids  # same-second changes are re-delivered, never lost


async def test_projection(
    books: EmulatorState, emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    _, body = await run_query(
        session, emu, token, "select Id, DocNumber from Invoice where Id = '2'"
    )
    invoice = body["QueryResponse"]["Invoice"][0]
    assert invoice == {"Id": "2", "DocNumber": "1002", "domain": "QBO", "sparse": True}


async def test_maxresults_above_1000_is_a_400_fault(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    status, body = await run_query(session, emu, token, "select * from Invoice maxresults 1001")
    assert status == 400
    error = body["Fault"]["Error"][0]
    assert body["Fault"]["type"] == "ValidationFault"
    assert error["code"] == "4001"
    assert "MAXRESULTS" in error["Detail"]


async def test_bad_syntax_is_a_400_parse_fault(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    status, body = await run_query(session, emu, token, "select * form Invoice")
    assert status == 400
    error = body["Fault"]["Error"][0]
    assert error["Message"] == "Error parsing query"
    assert error["code"] == "4000"
    assert error["Detail"].startswith("QueryParserError: ")
    assert body["Fault"]["type"] == "ValidationFault"


async def test_unknown_property_is_rejected(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    status, body = await run_query(
        session, emu, token, "select * from Invoice where Colour = 'red'"
    )
    assert status == 400
    assert body["Fault"]["Error"][0]["code"] == "4001"


async def test_missing_or_retired_minorversion_is_served_as_75(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    """Intuit serves minor versions 1-74, and none at all, as 75 instead of refusing them."""
    emu.state.create_customer(REALM, {"DisplayName": "Acme"})
    url = emu.url(f"/v3/company/{REALM}/query")
    query = "select * from Customer"
    for params in ({"query": query}, {"query": query, "minorversion": "4"}):
        async with session.get(url, params=params, headers=bearer(token)) as response:
            assert response.status == 200
            body = await response.json()
        assert [c["DisplayName"] for c in body["QueryResponse"]["Customer"]] == ["Acme"]
    status, _, _ = await api_get(session, emu, "query", token, minorversion="76", query=query)
    assert status == 200
    assert emu.state.stats.minor_versions == {"missing": 1, "4": 1, "76": 1}


async def test_missing_or_bad_token_gives_intuit_401(
    emu: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    status, body, response = await api_get(
        session, emu, "query", "not-a-token", query="select * from Invoice"
    )
    assert status == 401
    assert response.headers["intuit_tid"]
    error = body["Fault"]["Error"][0]
    assert body["Fault"]["type"] == "AUTHENTICATION"
    assert error["code"] == "3200"
    assert error["Message"] == "message=AuthenticationFailed; errorCode=003200; statusCode=401"
    assert "time" in body


async def test_token_of_another_realm_gives_403(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    status, body, _ = await api_get(
        session, emu, "query", token, realm=OTHER_REALM, query="select * from Invoice"
    )
    assert status == 403
    error = body["fault"]["error"][0]
    assert error["code"] == "3100"
    assert error["message"] == (
        "message=ApplicationAuthorizationFailed; errorCode=003100; statusCode=403"
    )
    assert body["fault"]["type"] == "SERVICE"
    assert isinstance(body["time"], int)


async def test_company_info_is_read_with_the_realms_own_token_only(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    status, body, _ = await api_get(session, emu, f"companyinfo/{REALM}", token)
    assert status == 200, body
    assert body["CompanyInfo"]["CompanyName"] == f"Sandbox Company {REALM}"

    status, body, _ = await api_get(
        session, emu, f"companyinfo/{OTHER_REALM}", token, realm=OTHER_REALM
    )
    assert status == 403
    assert body["fault"]["error"][0]["code"] == "3100"


async def test_every_response_has_a_unique_intuit_tid(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    tids = set()
    for _ in range(5):
        _, _, response = await api_get(session, emu, "query", token, query="select * from Invoice")
        tids.add(response.headers["intuit_tid"])
    _, _, response = await api_get(session, emu, "query", "bad", query="select * from Invoice")
    tids.add(response.headers["intuit_tid"])
    assert len(tids) == 6


async def test_post_query_with_text_body(
    books: EmulatorState, emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    async with session.post(
        emu.url(f"/v3/company/{REALM}/query"),
        params={"minorversion": "75"},
        data="select count(*) from Invoice",
        headers={**bearer(token), "Content-Type": "application/text"},
    ) as response:
        assert response.status == 200
        body = await response.json()
    assert body["QueryResponse"]["totalCount"] == 25


async def test_read_by_id_and_missing_object(
    books: EmulatorState, emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    status, body, _ = await api_get(session, emu, "invoice/3", token)
    assert status == 200
    assert body["Invoice"]["Id"] == "3"
    assert "time" in body
    status, body, _ = await api_get(session, emu, "customer/1", token)
    assert status == 200
    assert body["Customer"]["DisplayName"] == "O'Brien"
    status, body, _ = await api_get(session, emu, "invoice/999", token)
    assert status == 400
    error = body["Fault"]["Error"][0]
    assert (error["code"], error["Message"]) == ("610", "Object Not Found")


async def test_pages_of_a_query_asked_again_follow_every_change_in_between(
    books: EmulatorState, emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    query = "select * from Invoice where CustomerRef = '1' orderby TotalAmt desc"

    async def page(start: int) -> list[str]:
        _, body = await run_query(
            session, emu, token, f"{query} startposition {start} maxresults 3"
        )
        return [i["Id"] for i in body["QueryResponse"].get("Invoice", [])]

    assert await page(1) == ["25", "21", "17"]
    # The same query again (the next page) after an invoice moved, one was added, one changed.
    books.update_invoice(REALM, "17", {"CustomerRef": {"value": "2"}})
    books.create_invoice(REALM, {"CustomerRef": {"value": "1"}, "TotalAmt": "99.00"})
    books.update_invoice(REALM, "1", {"TotalAmt": "50.00"})
    assert await page(1) == ["26", "1", "25"]
    assert await page(4) == ["21", "13", "9"]
