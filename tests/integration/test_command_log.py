"""The command log tells the worker whether a command ever started before: only then can an
earlier attempt have left events owed in the outbox, so only then does the handler look there."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from services.common.messages import RefreshInvoices
from services.common.mongo import Document
from services.sync.store import CommandLog

pytestmark = pytest.mark.integration


async def ran_before(log: CommandLog, command: RefreshInvoices, number: int) -> bool:
    attempt = await log.running(command, number)
    assert attempt is not None, "the command has not finished"
    return attempt.ran_before


def _command() -> RefreshInvoices:
    return RefreshInvoices(realm_id="9130350000000001", issued_by="api", local_customer_id="c-1")


async def test_running_answers_whether_an_attempt_started_before(
    mongo_db: AsyncDatabase[Document],
) -> None:
    log = CommandLog(mongo_db, lambda: datetime.now(UTC))
    command = _command()
    assert await ran_before(log, command, 1) is False  # never seen
    assert await ran_before(log, command, 2) is True  # a retry in the same process
    assert await ran_before(log, command, 1) is True  # redelivered to another worker
    stored = await log.get(command.command_id)
    # The record keeps the highest attempt count it was told.
    assert stored is not None and stored["status"] == "running" and stored["attempts"] == 2


async def test_a_command_only_queued_by_the_api_never_started(
    mongo_db: AsyncDatabase[Document],
) -> None:
    command = _command()
    await mongo_db["commands"].insert_one(
        {"_id": command.command_id, "type": command.type, "status": "queued"}
    )
    log = CommandLog(mongo_db, lambda: datetime.now(UTC))
    assert await ran_before(log, command, 1) is False
    assert await ran_before(log, command, 1) is True
