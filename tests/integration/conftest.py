from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from qbo_emulator.testing import RunningEmulator, running_emulator
from services.common.settings import Settings
from services.sync.app import SyncService, sync_service
from tests.support import MovableClock, bound_socket, serve_asgi


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    async with running_emulator() as running:
        yield running


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


class SyncUnderTest:
    def __init__(self, service: SyncService, base_url: str) -> None:
        self.service = service
        self.base_url = base_url


@pytest.fixture
async def sync(
    settings: Settings, emulator: RunningEmulator, clock: MovableClock
) -> AsyncIterator[SyncUnderTest]:
    """The sync service over real HTTP, talking to the emulator over real HTTP."""
    sock = bound_socket()
    host, port = sock.getsockname()[:2]
    wired = settings.model_copy(
        update={
            "qbo_api_base_url": emulator.base_url,
            "qbo_oauth_authorize_url": emulator.url("/connect/oauth2"),
            "qbo_oauth_token_url": emulator.url("/oauth2/v1/tokens/bearer"),
            "qbo_oauth_revoke_url": emulator.url("/oauth2/v1/tokens/revoke"),
            "qbo_redirect_uri": f"http://{host}:{port}/oauth/callback",
        }
    )
    async with sync_service(wired, clock=clock) as service:
        async with serve_asgi(service.web_app(), sock) as base_url:
            yield SyncUnderTest(service, base_url)
