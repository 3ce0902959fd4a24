"""Run the emulator on a real loopback socket inside a test's event loop.

Going over TCP (rather than aiohttp's in-memory test client) exercises the
real client stack - connection pooling, timeouts, dropped connections - which
is the point of an emulator.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from qbo_emulator.app import create_app
from qbo_emulator.config import EmulatorConfig
from qbo_emulator.keys import STATE_KEY
from qbo_emulator.state import EmulatorState


@dataclass
class RunningEmulator:
    base_url: str
    state: EmulatorState
    config: EmulatorConfig
    app: web.Application
    host: str
    port: int

    def url(self, path: str) -> str:
        return self.base_url + (path if path.startswith("/") else "/" + path)


@asynccontextmanager
async def running_emulator(
    state: EmulatorState | None = None,
    config: EmulatorConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> AsyncIterator[RunningEmulator]:
    """Serve a fresh (or the given) emulator; ``port=0`` picks a free port."""
    app = create_app(state, config)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = int(runner.addresses[0][1])
        emulator_state = app[STATE_KEY]
        yield RunningEmulator(
            base_url=f"http://{host}:{bound_port}",
            state=emulator_state,
            config=emulator_state.config,
            app=app,
            host=host,
            port=bound_port,
        )
    finally:
        await runner.cleanup()
