"""`make run`'s shell pieces (deploy/local/run-lib.sh): the URLs follow moved ports, and a TERM
stops the processes it started, not only their log prefixers."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from services.common.settings import Settings
from tests.infra import ROOT

BASH = shutil.which("bash") or "/bin/bash"
RUN_LIB = ROOT / "deploy" / "local" / "run-lib.sh"
URLS = (
    "QBO_API_BASE_URL",
    "QBO_OAUTH_AUTHORIZE_URL",
    "QBO_OAUTH_TOKEN_URL",
    "QBO_OAUTH_REVOKE_URL",
    "QBO_REDIRECT_URI",
    "SYNC_PUBLIC_URL",
)


def endpoints(**env: str) -> dict[str, str]:
    """The environment `local_endpoints` exports, starting from `env` alone."""
    base = {k: v for k, v in os.environ.items() if k not in URLS and not k.startswith("QBO_")}
    out = subprocess.run(  # noqa: S603 - our own script
        [BASH, "-c", f'source "{RUN_LIB}" && local_endpoints && env -0'],
        env={**base, **env},
        check=True,
        capture_output=True,
    ).stdout.decode()
    pairs = (item.split("=", 1) for item in out.split("\0") if "=" in item)
    return {k: v for k, v in pairs if k in URLS}


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


def test_moved_ports_move_every_url(monkeypatch: pytest.MonkeyPatch) -> None:
    env = endpoints(QBO_EMULATOR_PORT="18790", QBO_SYNC_PORT="18000", QBO_API_PORT="18080")
    assert set(env) == set(URLS)
    settings = settings_from(env, monkeypatch)
    assert settings.qbo_api_base_url == "http://127.0.0.1:18790"
    assert settings.qbo_oauth_authorize_url == "http://127.0.0.1:18790/connect/oauth2"
    assert settings.qbo_oauth_token_url == "http://127.0.0.1:18790/oauth2/v1/tokens/bearer"
    assert settings.qbo_oauth_revoke_url == "http://127.0.0.1:18790/v2/oauth2/tokens/revoke"
    assert settings.qbo_redirect_uri == "http://127.0.0.1:18000/oauth/callback"
    assert settings.sync_public_url == "http://127.0.0.1:18000"


def test_default_ports_give_the_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    derived = settings_from(endpoints(), monkeypatch)
    defaults = Settings.model_fields
    for name in URLS:
        field = name.lower()
        assert getattr(derived, field) == defaults[field].default, name


def test_a_url_set_by_hand_is_kept() -> None:
    env = endpoints(QBO_EMULATOR_PORT="18790", QBO_API_BASE_URL="https://quickbooks.api.intuit.com")
    assert env["QBO_API_BASE_URL"] == "https://quickbooks.api.intuit.com"
    assert env["QBO_OAUTH_TOKEN_URL"] == "http://127.0.0.1:18790/oauth2/v1/tokens/bearer"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_term_stops_the_started_processes(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    script = (
        f'source "{RUN_LIB}"\n'
        "trap stop_all INT TERM EXIT\n"
        "start service sleep 300\n"
        f'echo "$!" > "{pid_file}"\n'
        "wait\n"
    )
    runner = subprocess.Popen([BASH, "-c", script], stdout=subprocess.DEVNULL)  # noqa: S603
    try:
        deadline = time.monotonic() + 10
        while not (pid_file.exists() and pid_file.read_text().strip()):
            assert time.monotonic() < deadline, "the script did not start its process"
            time.sleep(0.02)  # a real process starting; there is no clock to inject
        service = int(pid_file.read_text())
        assert alive(service)

        def program() -> bytes:
            return Path(f"/proc/{service}/cmdline").read_bytes().split(b"\0")[0]

        # `$!` names the service itself: the forked shell becomes `sleep` once it has exec'd.
        while program() != b"sleep":
            assert time.monotonic() < deadline, f"pid {service} runs {program()!r}, not sleep"
            time.sleep(0.02)

        runner.send_signal(signal.SIGTERM)
        runner.wait(timeout=10)

        assert not alive(service)  # reaped by the script's wait: stopped, not orphaned
    finally:
        if runner.poll() is None:
            runner.kill()
