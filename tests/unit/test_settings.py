from __future__ import annotations

import pytest

from services.common.settings import Settings


def test_defaults_work_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "MONGODB_URI", "QBO_MINOR_VERSION"):
        monkeypatch.delenv(name, raising=False)
    s = Settings()
    assert s.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert s.mongodb_uri.startswith("mongodb://127.0.0.1")
    assert s.qbo_minor_version >= 75


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-0:9092,kafka-1:9092")
    monkeypatch.setenv("MONGODB_URI", "mongodb://db:27017/")
    monkeypatch.setenv("COMMANDS_PARTITIONS", "12")
    s = Settings()
    assert s.kafka_bootstrap_servers == "kafka-0:9092,kafka-1:9092"
    assert s.mongodb_uri == "mongodb://db:27017/"
    assert s.commands_partitions == 12


def test_minor_version_below_75_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QBO_MINOR_VERSION", "65")
    with pytest.raises(ValueError, match="greater than or equal to 75"):
        Settings()


def test_secrets_do_not_show_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QBO_CLIENT_SECRET", "very-secret-value")
    assert "very-secret-value" not in repr(Settings())
