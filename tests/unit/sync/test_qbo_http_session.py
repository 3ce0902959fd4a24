"""The QBO HTTP client has no cap across realms (services/sync/app.py `qbo_http_session`): with
more requests in flight than aiohttp's default pool of 100 (64 realms, each reading its next
page while storing one), another realm's request still goes out at once."""

from __future__ import annotations

import asyncio

from aiohttp import web

from services.sync.app import qbo_http_session
from services.sync.metrics import SyncMetrics

IN_FLIGHT = 130


async def test_a_request_goes_out_while_more_than_a_default_pool_of_requests_are_held() -> None:
    release = asyncio.Event()
    held = 0

    async def slow_page(request: web.Request) -> web.Response:
        nonlocal held
        held += 1
        await release.wait()
        return web.Response(text="page")

    async def one_invoice(request: web.Request) -> web.Response:
        return web.Response(text="invoice")

    app = web.Application()
    app.router.add_get("/page", slow_page)
    app.router.add_get("/invoice", one_invoice)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    http = qbo_http_session(SyncMetrics())

    async def get(path: str) -> str:
        async with http.get(f"http://127.0.0.1:{port}{path}") as response:
            return await response.text()

    try:
        pages = [asyncio.create_task(get("/page")) for _ in range(IN_FLIGHT)]
        for _ in range(1000):  # until every page request has reached the server
            if held == IN_FLIGHT:
                break
            await asyncio.sleep(0.01)
        assert held == IN_FLIGHT, f"only {held} of {IN_FLIGHT} requests went out"
        assert await get("/invoice") == "invoice"
        assert not any(p.done() for p in pages)
        release.set()
        assert await asyncio.gather(*pages) == ["page"] * IN_FLIGHT
    finally:
        release.set()
        await http.close()
        await runner.cleanup()
