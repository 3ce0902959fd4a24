"""Shared helpers for the emulator tests."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aiohttp
from aiohttp import web

from qbo_emulator import jsonenc
from qbo_emulator.testing import RunningEmulator

REALM = "9130350000000001"
OTHER_REALM = "9130350000000002"
MINOR = "75"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


async def read_json(response: aiohttp.ClientResponse) -> Any:
    """Parse a body keeping decimals exact, as a money-aware client must."""
    return jsonenc.loads(await response.read())


async def api_get(
    session: aiohttp.ClientSession,
    emu: RunningEmulator,
    path: str,
    token: str,
    realm: str = REALM,
    **params: str,
) -> tuple[int, Any, aiohttp.ClientResponse]:
    query = {"minorversion": MINOR, **params}
    async with session.get(
        emu.url(f"/v3/company/{realm}/{path}"), params=query, headers=bearer(token)
    ) as response:
        raw = await response.read()
        body: Any = jsonenc.loads(raw) if response.content_type == "application/json" else raw
        return response.status, body, response


async def run_query(
    session: aiohttp.ClientSession,
    emu: RunningEmulator,
    token: str,
    text: str,
    realm: str = REALM,
) -> tuple[int, Any]:
    status, body, _ = await api_get(session, emu, "query", token, realm, query=text)
    return status, body


def expected_signature(body: bytes, token: str) -> str:
    digest = hmac.new(token.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


async def admin_post(
    session: aiohttp.ClientSession, emu: RunningEmulator, path: str, payload: Any = None
) -> tuple[int, Any]:
    data = jsonenc.dumps_bytes(payload if payload is not None else {})
    async with session.post(
        emu.url("/_emulator" + path), data=data, headers={"Content-Type": "application/json"}
    ) as response:
        return response.status, jsonenc.loads(await response.read())


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class WebhookReceiver:
    url: str
    received: list[Received] = field(default_factory=list)
    status: int = 200

    def payloads(self) -> list[Any]:
        return [jsonenc.loads(r.body) for r in self.received]


@asynccontextmanager
async def webhook_receiver() -> AsyncIterator[WebhookReceiver]:
    """A tiny HTTP server that records every POST it gets."""
    holder: list[WebhookReceiver] = []

    async def handle(request: web.Request) -> web.Response:
        receiver = holder[0]
        receiver.received.append(Received(dict(request.headers), await request.read()))
        return web.Response(status=receiver.status)

    app = web.Application()
    app.router.add_post("/hooks", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    holder.append(WebhookReceiver(url=f"http://127.0.0.1:{port}/hooks"))
    try:
        yield holder[0]
    finally:
        await runner.cleanup()


def money(value: str) -> Decimal:
    return Decimal(value)
