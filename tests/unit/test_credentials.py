"""Published development secrets: only `ENVIRONMENT=local`, only on loopback; connect links."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from services.api.app import OWN_SECRETS as API_SECRETS
from services.common.connect_links import ConnectLinks, LinkRejected
from services.common.credentials import (
    InsecureConfiguration,
    is_loopback,
    published_defaults,
    require_own_secrets,
)
from services.common.settings import Settings
from services.sync.access import DEV_SYNC_TOKEN, load_sync_tokens
from services.sync.app import OWN_SECRETS as SYNC_SECRETS

ROOT = Path(__file__).resolve().parents[2]
CONFIGURED: dict[str, Any] = {
    "token_encryption_keys": SecretStr("k1:" + "A" * 43 + "="),
    "oauth_state_secret": SecretStr("s" * 40),
    "connect_link_secret": SecretStr("c" * 40),
    "sync_api_tokens": SecretStr("sync-token-1"),
    "qbo_webhook_verifier_token": SecretStr("verifier-of-our-intuit-app"),
    "api_tokens": SecretStr("api-token-1"),
}


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.53", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),  # noqa: S104 - the case under test
        ("::", False),
        ("10.0.0.7", False),
        ("sync.internal", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_defaults_are_published_and_every_secret_is_named() -> None:
    assert published_defaults(Settings(), SYNC_SECRETS) == [n.upper() for n in SYNC_SECRETS]
    assert published_defaults(Settings(**CONFIGURED), [*SYNC_SECRETS, *API_SECRETS]) == []


@pytest.mark.parametrize("secrets", [SYNC_SECRETS, API_SECRETS])
def test_outside_local_every_published_secret_refuses_to_start(secrets: tuple[str, ...]) -> None:
    for missing in secrets:
        values = {k: v for k, v in CONFIGURED.items() if k != missing}
        settings = Settings(environment="production", **values)
        with pytest.raises(InsecureConfiguration, match=missing.upper()):
            require_own_secrets(settings, secrets, host="127.0.0.1")
    require_own_secrets(Settings(environment="production", **CONFIGURED), secrets, "0.0.0.0")  # noqa: S104


def test_local_mode_uses_published_secrets_on_loopback_only() -> None:
    local = Settings(environment="local")
    require_own_secrets(local, SYNC_SECRETS, host="127.0.0.1")
    require_own_secrets(local, SYNC_SECRETS, host=None)  # a worker serves no port
    with pytest.raises(InsecureConfiguration, match="loopback"):
        require_own_secrets(local, SYNC_SECRETS, host="0.0.0.0")  # noqa: S104
    # With its own secrets, local mode may listen anywhere (a developer's LAN demo).
    require_own_secrets(Settings(environment="local", **CONFIGURED), SYNC_SECRETS, "0.0.0.0")  # noqa: S104


def test_the_sync_token_is_required_and_the_dev_token_refused_outside_local() -> None:
    assert load_sync_tokens(Settings(environment="local")).accepts(DEV_SYNC_TOKEN)
    with pytest.raises(InsecureConfiguration, match="SYNC_API_TOKENS"):
        load_sync_tokens(Settings(environment="production"))
    with pytest.raises(InsecureConfiguration, match=DEV_SYNC_TOKEN):
        load_sync_tokens(
            Settings(environment="staging", sync_api_tokens=SecretStr(f"real,{DEV_SYNC_TOKEN}"))
        )
    tokens = load_sync_tokens(Settings(environment="production", sync_api_tokens=SecretStr("a,b")))
    assert tokens.accepts("b")
    assert not tokens.accepts(DEV_SYNC_TOKEN)


@pytest.mark.parametrize("module", ["services.sync", "services.api"])
def test_the_service_refuses_to_listen_beyond_loopback_with_published_secrets(
    module: str,
) -> None:
    env = {"PATH": "/usr/bin:/bin", "ENVIRONMENT": "local", "LOG_JSON": "false"}
    done = subprocess.run(  # noqa: S603 - our own module, fixed arguments
        [sys.executable, "-m", module, "--host", "0.0.0.0", "--port", "1"],  # noqa: S104
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "refusing to start" in done.stderr
    assert "loopback" in done.stderr


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_a_connect_link_names_its_user_until_it_expires() -> None:
    clock = Clock()
    links = ConnectLinks(b"x" * 32, clock)
    link = links.sign("alice@example.com")
    assert links.verify(link.token) == "alice@example.com"
    clock.now += timedelta(minutes=15)
    with pytest.raises(LinkRejected, match="expired"):
        links.verify(link.token)


def test_a_connect_link_of_another_key_or_edited_is_refused() -> None:
    clock = Clock()
    ours, theirs = ConnectLinks(b"x" * 32, clock), ConnectLinks(b"y" * 32, clock)
    with pytest.raises(LinkRejected, match="signature"):
        ours.verify(theirs.sign("alice").token)
    payload, mac = ours.sign("alice").token.split(".")
    with pytest.raises(LinkRejected, match="signature"):
        ours.verify(f"{payload}x.{mac}")
    for garbage in ("", "no-dot", "a" * 2000 + ".b"):
        with pytest.raises(LinkRejected, match="malformed"):
            ours.verify(garbage)
