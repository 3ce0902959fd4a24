"""The sync layer over fakes, with REALM connected, for each test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.unit.sync.fakes import REALM, Sync, sync_layer


@pytest.fixture
async def sync() -> AsyncIterator[Sync]:
    async with sync_layer() as layer:
        layer.vault.connect(REALM)
        yield layer
