"""deploy/local/infra.sh: safe to run twice, and a clear error when a port is taken."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.infra import INFRA_SH, ROOT

pytestmark = pytest.mark.integration

needs_toolchains = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("java", "mvn", "go")),
    reason="the local infrastructure is built with java, mvn and go",
)


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        [str(INFRA_SH), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
        check=False,
    )


@needs_toolchains
def test_second_up_is_safe_and_changes_nothing() -> None:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or os.environ.get("MONGODB_URI"):
        pytest.skip("external services configured; the local processes are not in use")
    first = _run("up")
    assert first.returncode == 0, first.stderr
    pids = _run("status").stdout
    second = _run("up")
    assert second.returncode == 0, second.stderr
    assert "kafka already running" in second.stderr
    assert "ferretdb already running" in second.stderr
    assert _run("status").stdout == pids  # same processes, nothing restarted


@needs_toolchains
def test_taken_port_gives_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = _run(
            "up",
            env={
                "QBO_LOCAL_DIR": str(tmp_path),
                "QBO_MONGO_PORT": str(port),
                "QBO_KAFKA_PORT": "1",  # never reached: the taken Mongo port is checked first
            },
        )
    assert result.returncode != 0
    assert f"port {port} (for mongo) is taken" in result.stderr
    assert "QBO_MONGO_PORT" in result.stderr
