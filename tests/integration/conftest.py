from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from qbo_emulator.testing import RunningEmulator, running_emulator
from services.common.settings import Settings
from services.sync.access import DEV_SYNC_TOKEN
from services.sync.app import SyncService, sync_service
from tests.support import MovableClock, bound_socket, serve_asgi


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    async with running_emulator() as running:
        yield running


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


# The sync service's published development token, accepted in local mode on loopback.
SYNC_AUTH = {"Authorization": f"Bearer {DEV_SYNC_TOKEN}"}


class SyncUnderTest:
    def __init__(self, service: SyncService, base_url: str) -> None:
        self.service = service
        self.base_url = base_url


@pytest.fixture
async def sync(
    settings: Settings,
    emulator: RunningEmulator,
    clock: MovableClock,
    request: pytest.FixtureRequest,
) -> AsyncIterator[SyncUnderTest]:
    """The sync service over real HTTP, talking to the emulator over real HTTP.

    The CDC poller only runs often in tests marked `@pytest.mark.cdc_poll(seconds)`, so other
    tests see exactly what their commands did. `@pytest.mark.throttle(pause_s, retry_base_s)`
    shortens the waits of a throttled realm, so a test can go through many of them.
    """
    marker = request.node.get_closest_marker("cdc_poll")
    cdc_interval = float(marker.args[0]) if marker else 3600.0
    throttle = request.node.get_closest_marker("throttle")
    pause_s, retry_base_s = (float(a) for a in throttle.args) if throttle else (1.0, 0.5)
    sock = bound_socket()
    host, port = sock.getsockname()[:2]
    wired = settings.model_copy(
        update={
            "qbo_api_base_url": emulator.base_url,
            "qbo_oauth_authorize_url": emulator.url("/connect/oauth2"),
            "qbo_oauth_token_url": emulator.url("/oauth2/v1/tokens/bearer"),
            "qbo_oauth_revoke_url": emulator.url("/v2/oauth2/tokens/revoke"),
            "qbo_redirect_uri": f"http://{host}:{port}/oauth/callback",
            "sync_public_url": f"http://{host}:{port}",
            # Fast background loops and retries so tests don't wait on production timings.
            "cdc_poll_interval_s": cdc_interval,
            "cdc_overlap_s": 5.0,
            "outbox_sweep_interval_s": 1.0,
            "command_max_attempts": 2,
            "qbo_throttle_pause_s": pause_s,
            "qbo_retry_base_delay_s": retry_base_s,
        }
    )
    async with sync_service(wired, clock=clock) as service:
        async with serve_asgi(service.web_app(), sock) as base_url:
            yield SyncUnderTest(service, base_url)


@pytest.fixture
async def worker(sync: SyncUnderTest) -> AsyncIterator[SyncUnderTest]:
    """The sync service with one command consumer running in the background."""
    stop = asyncio.Event()
    task = asyncio.create_task(sync.service.run_worker(stop))
    try:
        yield sync
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
