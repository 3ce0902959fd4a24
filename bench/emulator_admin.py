"""An HTTP client of the QBO emulator: its `/_emulator` admin API plus plain QBO queries.

Runs drive the emulator over HTTP (it is its own process) the way a person would drive
QuickBooks: changes made here bump SyncTokens, land in CDC and fire webhooks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from services.common import jsoncodec

JSON_HEADERS = {"Content-Type": "application/json"}


class EmulatorError(RuntimeError):
    pass


class EmulatorAdmin:
    def __init__(self, http: aiohttp.ClientSession, base_url: str) -> None:
        self._http = http
        self.base_url = base_url.rstrip("/")

    async def _call(
        self, method: str, path: str, body: Any = None, ok: Sequence[int] = (200, 201)
    ) -> Any:
        data = jsoncodec.dumpb(body) if body is not None else None
        async with self._http.request(
            method, f"{self.base_url}{path}", data=data, headers=JSON_HEADERS
        ) as response:
            raw = await response.read()
            if response.status not in ok:
                raise EmulatorError(f"{method} {path}: {response.status} {raw[:300]!r}")
            return jsoncodec.loads(raw) if raw else None

    # -- books ----------------------------------------------------------------------------

    async def seed(self, realm_id: str, customers: int, per_customer: int) -> dict[str, int]:
        body = {"customers": customers, "invoices_per_customer": per_customer}
        result: dict[str, int] = await self._call(
            "POST", f"/_emulator/realms/{realm_id}/seed", body
        )
        return result

    async def create_invoice(self, realm_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        found = await self._call("POST", f"/_emulator/realms/{realm_id}/invoices", fields)
        return dict(found["Invoice"])

    async def update_invoice(
        self, realm_id: str, invoice_id: str, fields: Mapping[str, Any]
    ) -> dict[str, Any]:
        path = f"/_emulator/realms/{realm_id}/invoices/{invoice_id}"
        return dict((await self._call("POST", path, fields))["Invoice"])

    async def void_invoice(self, realm_id: str, invoice_id: str) -> dict[str, Any]:
        path = f"/_emulator/realms/{realm_id}/invoices/{invoice_id}/void"
        return dict((await self._call("POST", path, {}))["Invoice"])

    async def delete_invoice(self, realm_id: str, invoice_id: str) -> None:
        await self._call("DELETE", f"/_emulator/realms/{realm_id}/invoices/{invoice_id}")

    async def get_invoice(self, realm_id: str, invoice_id: str) -> dict[str, Any] | None:
        """The live invoice, or None when QBO no longer has it (deleted)."""
        path = f"/_emulator/realms/{realm_id}/invoices/{invoice_id}"
        found = await self._call("GET", path, ok=(200, 404))
        return dict(found["Invoice"]) if found and "Invoice" in found else None

    # -- behaviour ------------------------------------------------------------------------

    async def set_faults(self, rules: Sequence[Mapping[str, Any]], seed: int) -> None:
        await self._call("POST", "/_emulator/faults", {"rules": list(rules), "seed": seed})

    async def clear_faults(self) -> None:
        await self._call("DELETE", "/_emulator/faults")

    async def faults_fired(self) -> dict[str, int]:
        return dict((await self._call("GET", "/_emulator/faults"))["fired"])

    async def configure_webhooks(self, **settings: Any) -> None:
        await self._call("POST", "/_emulator/webhooks", settings)

    async def flush_webhooks(self) -> None:
        await self._call("POST", "/_emulator/webhooks/flush")

    async def expire_access_tokens(self, realm_id: str) -> int:
        found = await self._call("POST", "/_emulator/tokens/expire", {"realm_id": realm_id})
        return int(found["access_tokens"])

    async def issue_tokens(self, realm_id: str) -> dict[str, Any]:
        return dict(await self._call("POST", "/_emulator/tokens/issue", {"realm_id": realm_id}))

    async def stats(self) -> dict[str, Any]:
        return dict(await self._call("GET", "/_emulator/stats"))

    # -- QBO itself -----------------------------------------------------------------------

    async def query_all(
        self, realm_id: str, entity: str, where: str, access_token: str
    ) -> list[dict[str, Any]]:
        """Every row of `SELECT * FROM <entity> [WHERE ...]`, page by page in Id order."""
        rows: list[dict[str, Any]] = []
        start = 1
        condition = f" WHERE {where}" if where else ""
        while True:
            # A QBO query (the emulator's), not SQL.
            statement = f"SELECT * FROM {entity}{condition} ORDERBY Id"  # noqa: S608
            statement += f" STARTPOSITION {start} MAXRESULTS 1000"
            async with self._http.get(
                f"{self.base_url}/v3/company/{realm_id}/query",
                params={"query": statement, "minorversion": "75"},
                headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
            ) as response:
                raw = await response.read()
                status, retry_after = response.status, response.headers.get("Retry-After")
            if status == 429:  # the realm's real per-minute quota, shared with the workers
                await asyncio.sleep(float(retry_after or 1))
                continue
            if status != 200:
                raise EmulatorError(f"query: {status} {raw[:300]!r}")
            page = jsoncodec.loads(raw)["QueryResponse"].get(entity, [])
            rows.extend(page)
            if len(page) < 1000:
                return rows
            start += 1000

    async def invoices_of(
        self, realm_id: str, qbo_customer_id: str, access_token: str
    ) -> list[dict[str, Any]]:
        """Every live invoice of one customer."""
        where = f"CustomerRef = '{qbo_customer_id}'"
        return await self.query_all(realm_id, "Invoice", where, access_token)
