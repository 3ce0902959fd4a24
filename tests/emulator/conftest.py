"""Fixtures: a fresh emulator on a loopback port per test, plus an HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from qbo_emulator.testing import RunningEmulator, running_emulator

from .helpers import REALM


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    async with running_emulator() as running:
        yield running


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def token(emu: RunningEmulator) -> str:
    """An access token for ``REALM`` issued without the consent dance."""
    return str(emu.state.issue_tokens(REALM)["access_token"])
