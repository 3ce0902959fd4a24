from __future__ import annotations

import asyncio
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from bench.stack import create_topics, remove_run_data
from services.common.mongo import Document, make_client
from services.common.settings import Settings
from tests.infra import Endpoints, resolve_endpoints

CLEANUP_TIMEOUT_S = 60


@pytest.fixture(scope="session")
def endpoints() -> Iterator[Endpoints]:
    found = resolve_endpoints()
    try:
        yield found
    finally:
        found.close()


@pytest.fixture
def test_id() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
async def settings(endpoints: Endpoints, test_id: str) -> AsyncIterator[Settings]:
    """Settings for one test: its own topics and its own database, removed afterwards."""
    s = Settings(
        kafka_bootstrap_servers=endpoints.kafka_bootstrap_servers,
        mongodb_uri=endpoints.mongodb_uri,
        mongodb_database=f"test_{test_id}",
        commands_topic=f"test-{test_id}.commands",
        invoice_events_topic=f"test-{test_id}.invoice-events",
        dead_letter_topic=f"test-{test_id}.commands-dlq",
        sync_consumer_group=f"test-{test_id}.sync",
        projector_consumer_group=f"test-{test_id}.projector",
        commands_partitions=3,
        events_partitions=3,
    )
    await create_topics(s)
    yield s
    # Best effort, and bounded: every name is the test's own, so leftovers harm no other test,
    # while a clean-up that never returns would stall the whole suite.
    try:
        async with asyncio.timeout(CLEANUP_TIMEOUT_S):
            await remove_run_data(s)
    except TimeoutError:
        warnings.warn(f"clean-up of test {test_id} timed out; its data is left", stacklevel=1)


@pytest.fixture
async def mongo_db(settings: Settings) -> AsyncIterator[AsyncDatabase[Document]]:
    client = make_client(settings.mongodb_uri)
    try:
        yield client[settings.mongodb_database]
    finally:
        await client.close()
