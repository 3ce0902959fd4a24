"""deploy/local/infra.sh: safe to run twice, a clear error when a port is taken, and
PostgreSQL run unprivileged on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.infra import INFRA_SH, ROOT, free_port, local_postgres

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


def _skip_unless_local() -> None:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or os.environ.get("MONGODB_URI"):
        pytest.skip("external services configured; the local processes are not in use")


@needs_toolchains
def test_second_up_is_safe_and_changes_nothing() -> None:
    _skip_unless_local()
    first = _run("up")
    assert first.returncode == 0, first.stderr
    pids = _run("status").stdout
    second = _run("up")
    assert second.returncode == 0, second.stderr
    assert "kafka already running" in second.stderr
    assert "ferretdb already running" in second.stderr
    assert "postgres already running" in second.stderr
    assert _run("status").stdout == pids  # same processes, nothing restarted


def _up_with_taken_port(
    tmp_path: Path, variable: str, env: dict[str, str]
) -> tuple[int, subprocess.CompletedProcess[str]]:
    """`infra.sh up` while another process holds the port named by `variable`."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = _run("up", env={"QBO_LOCAL_DIR": str(tmp_path), **env, variable: str(port)})
    return port, result


@needs_toolchains
def test_taken_port_gives_a_clear_error(tmp_path: Path) -> None:
    # never reached: the taken Mongo port is checked first
    port, result = _up_with_taken_port(
        tmp_path, "QBO_MONGO_PORT", {"QBO_KAFKA_PORT": "1", "QBO_POSTGRES_PORT": "1"}
    )
    assert result.returncode != 0
    assert f"port {port} (for mongo) is taken" in result.stderr
    assert "QBO_MONGO_PORT" in result.stderr


@needs_toolchains
def test_taken_postgres_port_gives_a_clear_error(tmp_path: Path) -> None:
    port, result = _up_with_taken_port(
        tmp_path,
        "QBO_POSTGRES_PORT",
        {
            "QBO_MONGO_PORT": str(free_port()),
            "QBO_KAFKA_PORT": str(free_port()),
            "QBO_KAFKA_CONTROLLER_PORT": str(free_port()),
        },
    )
    assert result.returncode != 0
    assert f"port {port} (for postgres) is taken" in result.stderr
    assert "QBO_POSTGRES_PORT" in result.stderr
    assert not (tmp_path / "kafka").exists()  # ports are checked before anything is installed


@needs_toolchains
def test_postgres_runs_unprivileged_on_loopback_with_its_data_under_local() -> None:
    _skip_unless_local()
    assert _run("up").returncode == 0
    pg = local_postgres(f"mongodb://127.0.0.1:{os.environ.get('QBO_MONGO_PORT', '27017')}/")
    assert pg is not None
    settings = dict(
        pg.rows(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('listen_addresses', 'port', 'data_directory', 'unix_socket_directories')"
        )
    )
    assert settings["listen_addresses"] == "127.0.0.1"
    assert settings["port"] == os.environ.get("QBO_POSTGRES_PORT", "15432")
    state = Path(os.environ.get("QBO_LOCAL_DIR", ROOT / ".local")).resolve()
    assert Path(settings["data_directory"]) == state / "postgres" / "data"
    assert Path(settings["unix_socket_directories"]) == state / "postgres" / "socket"
    postmaster = int((state / "run" / "postgres.pid").read_text())
    uid = os.stat(f"/proc/{postmaster}").st_uid
    assert uid != 0, "PostgreSQL must not run as root"
    if os.geteuid() != 0:
        assert uid == os.geteuid()
