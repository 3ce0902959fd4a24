"""`GET /api/customers/{id}`: the customer's mapping and its company's QBO connection, and the
lookups of a mapped customer the other resources share."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from services.api import models
from services.api.responses import JSON, ApiError, not_found
from services.api.store import SyncRecords
from services.common.connect_links import ConnectLinks
from services.common.mongo import Document
from services.common.statuses import ConnectionStatus

_LOCAL_CUSTOMER_ID = re.compile(models.LOCAL_CUSTOMER_ID_PATTERN)


def customer_id(request: Request) -> str:
    """The `localCustomerId` path parameter, checked."""
    value = str(request.path_params["localCustomerId"])
    if not _LOCAL_CUSTOMER_ID.fullmatch(value):
        raise ApiError(400, "bad_customer_id", "customer ids are 1-128 of A-Z a-z 0-9 . _ : @ -")
    return value


@dataclass(frozen=True)
class MappedCustomers:
    """The sync service's customer mappings, as the handlers look them up (read-only)."""

    records: SyncRecords

    async def mapping(self, local_customer_id: str) -> Document:
        """The customer's mapping; 404 when the customer is not mapped."""
        mapping = await self.records.mapping(local_customer_id)
        if mapping is None:
            raise not_found(f"customer {local_customer_id} is not mapped to a QBO customer")
        return mapping


def _text_or_none(value: Any) -> str | None:
    # QBO's SyncToken is a decimal string; it is stored as an integer so it can be compared.
    return None if value is None else str(value)


def render_customer(
    mapping: Mapping[str, Any],
    connection: Mapping[str, Any] | None,
    reconnect_url: Callable[[str], str],
) -> models.CustomerStatus:
    """The mapping and connection status; built from the token-free projection only.

    `reconnect_url(user)` is a connect link signed for the connection's own user: only that
    user may take the company's connection over again (the sync service refuses others).
    """
    customer = models.CustomerMapping(
        local_customer_id=mapping.get("local_customer_id") or mapping["_id"],
        realm_id=mapping["realm_id"],
        qbo_customer_id=mapping.get("qbo_customer_id"),
        display_name=mapping.get("display_name"),
        # The QBO customer as of the last read; `active` None until one was read.
        active=mapping.get("active"),
        qbo_sync_token=_text_or_none(mapping.get("qbo_sync_token")),
        merged_from=mapping.get("merged_from"),
        customer_read_at=mapping.get("customer_read_at"),
        mapped_at=mapping.get("mapped_at"),
        last_synced_at=mapping.get("last_synced_at"),
        last_sync_command_id=mapping.get("last_sync_command_id"),
    )
    if connection is None:
        return models.CustomerStatus(customer=customer, connection=None)
    status = ConnectionStatus(connection["status"])
    user = connection.get("user_id")
    reconnect = None
    if status != ConnectionStatus.ACTIVE and isinstance(user, str) and user:
        reconnect = reconnect_url(user)
    return models.CustomerStatus(
        customer=customer,
        connection=models.Connection(
            realm_id=connection["_id"],
            status=status,
            needs_reauth=status == ConnectionStatus.NEEDS_REAUTH,
            reauth_reason=connection.get("reauth_reason"),
            refresh_token_hard_expires_at=connection.get("refresh_token_hard_expires_at"),
            updated_at=connection.get("updated_at"),
            reconnect_url=reconnect,
        ),
    )


@dataclass(frozen=True)
class Customers:
    """`GET /api/customers/{localCustomerId}`."""

    customers: MappedCustomers
    links: ConnectLinks
    sync_public_url: str

    async def get(self, request: Request) -> Response:
        mapping = await self.customers.mapping(customer_id(request))
        connection = await self.customers.records.connection(mapping["realm_id"])
        return JSON(render_customer(mapping, connection, self._reconnect_url))

    def _reconnect_url(self, user: str) -> str:
        return self.links.url(self.sync_public_url, user)
