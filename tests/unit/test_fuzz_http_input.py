"""Property-based fuzzing of what arrives over HTTP: webhook bodies (legacy and CloudEvents),
the invoice listing's query parameters and cursors, and JSON request bodies read through the
shared bounded reader. Each either parses or is refused with a reason; nothing else escapes."""

from __future__ import annotations

from typing import Any

import httpx
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.api.handlers.commands import _refresh_request
from services.api.listing import Cursor, InvalidParameter, parse_invoice_query
from services.api.responses import ApiError
from services.common import jsoncodec
from services.common.httpbody import BodyRejected, read_json
from services.sync.web import QueryRejected, rejected_query
from services.sync.webhooks import group_into_commands, parse_delivery
from tests.unit.fuzz import FUZZ, json_values, raw_bytes

# ------------------------------------------------------------------------------ webhooks

ids = st.one_of(st.from_regex(r"[0-9]{1,6}", fullmatch=True), json_values)
legacy_entity = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(st.sampled_from(["Invoice", "Customer", "Payment"]), json_values),
        "id": ids,
        "operation": st.one_of(
            st.sampled_from(["Create", "Update", "Delete", "Merge"]), json_values
        ),
        "lastUpdated": st.one_of(st.just("2030-01-01T00:00:00.000Z"), json_values),
        "deletedId": ids,
    },
)
entities = st.one_of(st.lists(legacy_entity, max_size=4), json_values)
legacy = st.fixed_dictionaries(
    {
        "eventNotifications": st.one_of(
            st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "realmId": ids,
                        "dataChangeEvent": st.one_of(
                            st.fixed_dictionaries(
                                {
                                    "entities": st.one_of(
                                        st.lists(legacy_entity, max_size=4), json_values
                                    )
                                }
                            ),
                            json_values,
                        ),
                    },
                ),
                max_size=3,
            ),
            json_values,
        )
    }
)
cloudevent = st.fixed_dictionaries(
    {},
    optional={
        "specversion": st.just("1.0"),
        "id": json_values,
        "type": st.one_of(
            st.sampled_from(
                ["qbo.invoice.updated.v1", "qbo.customer.merged.v1", "qbo.invoice.deleted.v2"]
            ),
            json_values,
        ),
        "intuitaccountid": ids,
        "intuitentityid": ids,
        "time": st.one_of(st.just("2030-01-01T00:00:00.123456789Z"), json_values),
        "data": st.one_of(st.fixed_dictionaries({"deletedid": ids}), json_values),
    },
)
webhook_bodies = st.one_of(
    raw_bytes,
    legacy.map(jsoncodec.dumpb),
    st.lists(cloudevent, max_size=5).map(jsoncodec.dumpb),
    cloudevent.map(jsoncodec.dumpb),
)


@FUZZ
@given(webhook_bodies)
def test_a_webhook_body_becomes_valid_commands_and_reasoned_rejections(body: bytes) -> None:
    delivery = parse_delivery(body)  # never raises: a signed delivery is always answered 2xx
    for command in group_into_commands(delivery.notices):
        command.to_bytes()  # validates against the SyncChanges schema, or raises
    for rejected in delivery.rejected:
        assert rejected.reason and rejected.where
        assert rejected.code in _REJECTION_CODES  # a small set: safe as a metric label
    if any(r.where == "body" for r in delivery.rejected):
        assert delivery.notices == [] and len(delivery.rejected) == 1


_REJECTION_CODES = {"not_json", "shape", "not_an_object", "missing_field", "bad_id"}


@FUZZ
@given(st.lists(st.one_of(cloudevent, json_values), max_size=6))
def test_each_cloudevent_is_taken_or_rejected_on_its_own(events: list[Any]) -> None:
    delivery = parse_delivery(jsoncodec.dumpb(events))
    alone = [parse_delivery(jsoncodec.dumpb([event])) for event in events]
    # The same changes and rejections as each event sent by itself: no event sinks another.
    assert delivery.notices == [n for d in alone for n in d.notices]
    assert [r.code for r in delivery.rejected] == [r.code for d in alone for r in d.rejected]
    assert [r.where for r in delivery.rejected] == [
        f"[{i}]" for i, d in enumerate(alone) for _ in d.rejected
    ]


# ---------------------------------------------------------------------------- api queries

params = st.dictionaries(
    st.sampled_from(["status", "sort", "limit", "offset", "cursor", "other"]),
    st.one_of(
        st.text(max_size=30),
        st.sampled_from(["open", "-total", "balance", "50", "0", "100001", "-1", "1e3"]),
        st.binary(max_size=60).map(lambda b: Cursor("total", b.hex(), "x").encode()),
    ),
)


@FUZZ
@given(params)
def test_listing_parameters_are_accepted_or_refused_by_name(query: dict[str, str]) -> None:
    try:
        parsed = parse_invoice_query(query)
    except InvalidParameter as exc:
        assert exc.param in query
        return
    assert 1 <= parsed.limit <= 200


@FUZZ
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.hex())))
def test_any_cursor_text_decodes_or_is_refused(text: str) -> None:
    try:
        Cursor.decode(text)
    except InvalidParameter as exc:
        assert exc.param == "cursor"


# ------------------------------------------------------------------------------ JSON bodies


async def _echo(request: Request) -> Response:
    try:
        body = await read_json(request, max_bytes=16 * 1024)
    except BodyRejected as exc:
        return JSONResponse({"error": exc.code, "message": exc.message}, exc.status)
    return Response(jsoncodec.dumpb({"depth": jsoncodec.depth(body, 100)}), 200)


ECHO = Starlette(routes=[Route("/", _echo, methods=["POST"])])
bodies = st.one_of(
    raw_bytes,
    json_values.map(jsoncodec.dumpb),
    st.integers(min_value=16 * 1024 - 10, max_value=20 * 1024).map(lambda n: b" " * n),
)


@FUZZ
@given(bodies, st.sampled_from([None, "chunked"]))
async def test_the_shared_body_reader_answers_4xx_json_for_anything_it_cannot_use(
    body: bytes, transfer: str | None
) -> None:
    content: Any = body if transfer is None else _chunks(body)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(ECHO), base_url="http://t"
    ) as client:
        response = await client.post("/", content=content)
    assert response.status_code in (200, 400, 413)
    if response.status_code == 413:
        assert len(body) > 16 * 1024
    if response.status_code != 200:
        assert response.json()["error"] in ("bad_json", "too_large")
    else:
        assert response.json()["depth"] <= 64


async def _refresh_body(request: Request) -> Response:
    try:
        accepted = await _refresh_request(request)
    except ApiError as exc:
        return JSONResponse({"error": exc.code, "message": exc.message}, exc.status)
    return JSONResponse({"correlation_id": accepted.correlation_id})


REFRESH = Starlette(routes=[Route("/", _refresh_body, methods=["POST"])])
refresh_bodies = st.one_of(
    bodies,
    st.dictionaries(
        st.one_of(st.just("correlation_id"), st.text(max_size=20)),
        st.one_of(st.text(max_size=300), json_values),
        max_size=3,
    ).map(jsoncodec.dumpb),
)


@FUZZ
@given(refresh_bodies)
async def test_a_refresh_body_is_taken_or_refused_with_a_400_that_says_why(body: bytes) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(REFRESH), base_url="http://t"
    ) as client:
        response = await client.post("/", content=body)
    assert response.status_code in (200, 400, 413), response.text
    if response.status_code == 200:
        taken = jsoncodec.loads(body) if body.strip() else {}
        assert response.json()["correlation_id"] == taken.get("correlation_id")
    else:
        assert response.json()["error"] in ("bad_json", "too_large", "bad_request")
        assert response.json()["message"]


async def _chunks(body: bytes) -> Any:
    for start in range(0, len(body), 1000):
        yield body[start : start + 1000]


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(["realm_id", "limit", "other"]),
        st.one_of(
            st.text(max_size=30),
            st.sampled_from(["9130350000000001", "1", "1000", "1001", "0", "-5", "٣"]),
            st.integers(min_value=0).map(lambda n: "9" * (n % 6000)),  # huge digit runs
        ),
    )
)
def test_rejected_invoice_queries_are_parsed_or_refused_with_a_400(
    query: dict[str, str],
) -> None:
    try:
        realm_id, limit = rejected_query(query)
    except QueryRejected as exc:
        assert exc.code in {"bad_realm", "bad_limit"}
        return
    assert realm_id == query.get("realm_id")
    assert 1 <= limit <= 1000
    assert limit == int(query.get("limit", "100"))
