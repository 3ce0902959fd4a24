"""`GET /api/customers/{id}/invoices`: a customer's invoices, filtered, sorted, paged, with
totals over everything the filter matches.

The query parameters stay a small parser (`listing.parse_invoice_query`) rather than a model:
they arrive as text, each refusal must name its parameter, a cursor is checked against the
sort it was made for, and the parser shares its limits with the document's parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from starlette.requests import Request
from starlette.responses import Response

from services.api import models
from services.api.handlers.customers import MappedCustomers, customer_id
from services.api.listing import (
    Cursor,
    InvalidParameter,
    InvoiceListQuery,
    customer_filter,
    parse_invoice_query,
)
from services.api.listing_cache import ListingCache
from services.api.metrics import ApiMetrics
from services.api.readmodel import render_invoice
from services.api.responses import ApiError
from services.api.store import ReadInvoices, customer_key
from services.common import jsoncodec
from services.common.clock import Clock
from services.common.mongo import Document


@dataclass(frozen=True)
class Invoices:
    """The invoice listing, served from the read model through the listing cache."""

    customers: MappedCustomers
    invoices: ReadInvoices
    listings: ListingCache
    metrics: ApiMetrics
    clock: Clock

    async def list(self, request: Request) -> Response:
        local_customer_id = customer_id(request)
        try:
            query = parse_invoice_query(request.query_params)
        except InvalidParameter as exc:
            raise ApiError(400, "bad_parameter", f"{exc.param}: {exc}") from None
        customer = customer_filter(await self.customers.mapping(local_customer_id))
        today = self.clock().date()
        # Read before the invoices: a listing is filed under a revision no newer than it.
        revision = await self.invoices.revision(customer)
        cache_key = (
            local_customer_id,
            customer_key(customer) or "",
            today.isoformat(),
            repr(sorted(request.query_params.multi_items())),
        )
        body = self.listings.get(cache_key, revision)
        self.metrics.listings.labels("miss" if body is None else "hit").inc()
        if body is None:
            page = await self._page(local_customer_id, customer, query, today)
            body = jsoncodec.dumpb(page.wire())
            self.listings.put(cache_key, revision, body)
        return Response(body, media_type="application/json")

    async def _page(
        self, local_customer_id: str, customer: Document, query: InvoiceListQuery, today: date
    ) -> models.InvoiceList:
        rows, has_more = await self.invoices.page(customer, query, today)
        totals = await self.invoices.totals(customer, query.status, today)
        next_cursor = None
        if has_more and rows:
            last = rows[-1]
            next_cursor = Cursor(query.sort.token, query.sort.value_of(last), last["_id"]).encode()
        return models.InvoiceList(
            customer_id=local_customer_id,
            status=query.status,
            sort=query.sort.token,
            as_of=today,
            invoices=[render_invoice(row, today) for row in rows],
            totals=totals.render(),
            page=models.Page(
                limit=query.limit,
                offset=query.offset,
                next_cursor=next_cursor,
                has_more=has_more,
            ),
        )
