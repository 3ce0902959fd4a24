"""The api as its users see it: bearer-token JSON over HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from services.common import jsoncodec

DEV_TOKEN = "dev-token"  # noqa: S105 - the api's public local-development token
AUTH = {"Authorization": f"Bearer {DEV_TOKEN}"}


class ApiUnavailable(RuntimeError):
    pass


class ApiClient:
    def __init__(self, http: aiohttp.ClientSession, base_url: str) -> None:
        self._http = http
        self.base_url = base_url.rstrip("/")

    async def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        try:
            async with self._http.get(
                f"{self.base_url}{path}", params=params, headers=AUTH
            ) as response:
                raw = await response.read()
                if response.status != 200:
                    raise ApiUnavailable(f"GET {path}: {response.status} {raw[:200]!r}")
                return jsoncodec.loads(raw)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiUnavailable(f"GET {path}: {type(exc).__name__}") from exc

    async def invoices_page(
        self, customer: str, limit: int = 200, cursor: str | None = None, status: str = "all"
    ) -> Any:
        params = {"status": status, "limit": str(limit)}
        if cursor:
            params["cursor"] = cursor
        return await self.get(f"/api/customers/{customer}/invoices", params)

    async def all_invoices(self, customer: str) -> AsyncIterator[dict[str, Any]]:
        """Every invoice of the listing (status=all), following the keyset cursor."""
        cursor: str | None = None
        while True:
            body = await self.invoices_page(customer, cursor=cursor)
            for invoice in body["invoices"]:
                yield invoice
            cursor = body["page"]["next_cursor"]
            if not body["page"]["has_more"] or not cursor:
                return

    async def refresh(self, customer: str, idempotency_key: str) -> str:
        """POST refreshInvoices; returns the command id (202)."""
        try:
            async with self._http.post(
                f"{self.base_url}/api/customers/{customer}/refreshInvoices",
                headers={**AUTH, "Idempotency-Key": idempotency_key},
            ) as response:
                raw = await response.read()
                if response.status != 202:
                    raise ApiUnavailable(f"refresh {customer}: {response.status} {raw[:200]!r}")
                return str(jsoncodec.loads(raw)["command_id"])
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiUnavailable(f"refresh {customer}: {type(exc).__name__}") from exc

    async def command(self, command_id: str) -> dict[str, Any]:
        found: dict[str, Any] = await self.get(f"/api/commands/{command_id}")
        return found

    async def wait_command(self, command_id: str, within_s: float = 120.0) -> dict[str, Any]:
        """The command's record once it finished; tolerates the api being briefly down."""
        deadline = time.monotonic() + within_s
        last: dict[str, Any] | str = "never answered"
        while time.monotonic() < deadline:
            try:
                last = await self.command(command_id)
                if last["status"] in ("succeeded", "failed", "needs_reauth"):
                    return last
            except ApiUnavailable as exc:
                last = str(exc)
            await asyncio.sleep(0.2)
        raise TimeoutError(f"command {command_id} did not finish in {within_s} s: {last}")
