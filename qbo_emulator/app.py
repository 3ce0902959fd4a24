"""The aiohttp application factory."""

from __future__ import annotations

from aiohttp import web

from qbo_emulator import accounting_routes, admin_routes, oauth_routes
from qbo_emulator.config import EmulatorConfig
from qbo_emulator.keys import STATE_KEY
from qbo_emulator.middleware import intuit_middleware
from qbo_emulator.state import EmulatorState

__all__ = ["STATE_KEY", "create_app"]

MAX_BODY_BYTES = 16 * 1024 * 1024


def create_app(
    state: EmulatorState | None = None, config: EmulatorConfig | None = None
) -> web.Application:
    """Build the emulator app.

    With no ``state`` a fresh one is made from ``config`` (or defaults). With
    both, ``config`` replaces ``state.config``. The state is ``app[STATE_KEY]``.
    The webhook sender runs as a background task for the app's lifetime.
    """
    if state is None:
        state = EmulatorState(config)
    elif config is not None:
        state.apply_config(config)
    app = web.Application(middlewares=[intuit_middleware], client_max_size=MAX_BODY_BYTES)
    app[STATE_KEY] = state
    oauth_routes.setup(app)
    accounting_routes.setup(app)
    admin_routes.setup(app)
    app.on_startup.append(_start_webhooks)
    app.on_cleanup.append(_stop_webhooks)
    return app


async def _start_webhooks(app: web.Application) -> None:
    await app[STATE_KEY].webhooks.start()


async def _stop_webhooks(app: web.Application) -> None:
    await app[STATE_KEY].webhooks.stop()
