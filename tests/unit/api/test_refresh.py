from __future__ import annotations

import re

from services.api.models import COMMAND_ID_PATTERN
from services.api.refresh import IDEMPOTENCY_KEY, command_id_for


def test_an_idempotency_key_names_one_command_per_customer() -> None:
    first = command_id_for("cust-42", "key-1")
    assert first == command_id_for("cust-42", "key-1")
    assert first != command_id_for("cust-42", "key-2")
    assert first != command_id_for("cust-43", "key-1")
    assert re.fullmatch(COMMAND_ID_PATTERN, first)


def test_idempotency_keys_are_printable_ascii() -> None:
    assert IDEMPOTENCY_KEY.fullmatch("2f1c-AB_9:x")
    assert not IDEMPOTENCY_KEY.fullmatch("")
    assert not IDEMPOTENCY_KEY.fullmatch("has space")
    assert not IDEMPOTENCY_KEY.fullmatch("k" * 256)
    assert not IDEMPOTENCY_KEY.fullmatch("caf\u00e9")
