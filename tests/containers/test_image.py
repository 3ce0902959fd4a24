"""What the image promises (Dockerfile, docs/design.md "Container images"), checked on the image
itself: uid 10001 on a read-only root filesystem, no start outside `local` without its own keys,
/healthz and /readyz answered, a clean stop on SIGTERM within the grace period. Every container
here uses the host's network and listens on 127.0.0.1."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.containers.conftest import APP_IMAGE, UID, wait_exited
from tests.infra import Endpoints, free_port

# Kubernetes' default terminationGracePeriodSeconds, and `docker stop`'s 10 s.
GRACE_S = 10
KEYS = {
    "services.sync": {
        "TOKEN_ENCRYPTION_KEYS": "k1:" + "A" * 43 + "=",
        "TOKEN_ENCRYPTION_PRIMARY_KEY_ID": "k1",
        "OAUTH_STATE_SECRET": secrets.token_urlsafe(32),
        "CONNECT_LINK_SECRET": secrets.token_urlsafe(32),
        "SYNC_API_TOKENS": secrets.token_urlsafe(32),
        "QBO_WEBHOOK_VERIFIER_TOKEN": secrets.token_urlsafe(32),
    },
    "services.api": {
        "API_TOKENS": secrets.token_urlsafe(32),
        "CONNECT_LINK_SECRET": secrets.token_urlsafe(32),
    },
}
MODULES = sorted(KEYS)


def _run(docker_client: Any, module: str, port: int, env: dict[str, str]) -> Any:
    # As Kubernetes and compose.yaml run it: read-only root, a writable /tmp, no capabilities.
    return docker_client.containers.run(
        APP_IMAGE,
        [module, "--host", "127.0.0.1", "--port", str(port)],
        environment=env,
        network_mode="host",
        read_only=True,
        tmpfs={"/tmp": ""},  # noqa: S108
        cap_drop=["ALL"],
        security_opt=["no-new-privileges:true"],
        detach=True,
    )


@pytest.fixture(params=MODULES)
def running(
    request: pytest.FixtureRequest, docker_client: Any, endpoints: Endpoints
) -> Iterator[tuple[Any, str]]:
    module: str = request.param
    port = free_port()
    env = {
        **KEYS[module],
        "KAFKA_BOOTSTRAP_SERVERS": endpoints.kafka_bootstrap_servers,
        "MONGODB_URI": endpoints.mongodb_uri,
        "MONGODB_DATABASE": f"image_{secrets.token_hex(4)}",
    }
    container = _run(docker_client, module, port, env)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_answering(container, f"{base}/healthz")
        yield container, base
    finally:
        container.remove(force=True)


def _wait_answering(container: Any, url: str, within_s: float = 60) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        container.reload()
        assert container.status == "running", container.logs().decode(errors="replace")
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {within_s} s")


def test_fixtures_run_kafka_and_mongo_as_containers(endpoints: Endpoints) -> None:
    """The container step runs the integration suite in testcontainers mode: make sure it is."""
    assert endpoints.source.startswith("testcontainers"), endpoints.source


def test_runs_as_uid_10001_on_a_read_only_root(running: tuple[Any, str]) -> None:
    container, _ = running
    uid = container.exec_run(["id", "-u"])
    assert uid.output.decode().strip() == UID
    write = container.exec_run(["python", "-c", "open('/app/written', 'w')"])
    assert write.exit_code != 0
    assert "Read-only file system" in write.output.decode()
    assert container.exec_run(["python", "-c", "open('/tmp/written', 'w')"]).exit_code == 0
    # Every process of the container, the server included, is uid 10001.
    top = container.top(ps_args="-o pid,uid,args")
    uids = {row[1] for row in top["Processes"]}
    assert uids == {UID}, top


def test_answers_healthz_and_readyz(running: tuple[Any, str]) -> None:
    _, base = running
    assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
    deadline = time.monotonic() + 60
    while (ready := httpx.get(f"{base}/readyz", timeout=5)).status_code != 200:
        assert time.monotonic() < deadline, ready.text
        time.sleep(0.5)


def test_stops_cleanly_on_sigterm_within_the_grace_period(running: tuple[Any, str]) -> None:
    container, _ = running
    started = time.monotonic()
    container.stop(timeout=GRACE_S)  # SIGTERM, then SIGKILL after the grace period
    took = time.monotonic() - started
    container.reload()
    assert container.attrs["State"]["ExitCode"] == 0, container.logs().decode(errors="replace")
    assert took < GRACE_S


@pytest.mark.parametrize("module", MODULES)
def test_refuses_to_start_outside_local_without_its_keys(docker_client: Any, module: str) -> None:
    """The image's own ENVIRONMENT (production) and no keys: it names them and exits."""
    container = _run(docker_client, module, free_port(), {})
    try:
        assert wait_exited(container, 60) != 0
        logs = container.logs().decode(errors="replace")
        assert "refusing to start" in logs
        for name in KEYS[module]:
            if name != "TOKEN_ENCRYPTION_PRIMARY_KEY_ID":
                assert name in logs, name
    finally:
        container.remove(force=True)
