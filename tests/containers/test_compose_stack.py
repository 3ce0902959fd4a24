"""The whole system from compose.yaml with compose.local-images.yaml: up, healthy, the emulator's
company connected through the real OAuth redirects (deploy/local/demo.py), a customer refreshed,
its invoices read through the api, down. Every container on the host's network, listening on
127.0.0.1 only; the ports are free ones, or QBO_COMPOSE_*_PORT where set."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.infra import free_port

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "qbo-sync-smoke"
PORTS = ("KAFKA", "KAFKA_CONTROLLER", "MONGO", "EMULATOR", "SYNC", "API")
REALM = "9130350000000001"
SEEDED_INVOICES = 20  # compose.yaml's --seed-invoices-per-customer
LOOPBACK_V4 = "0100007F"  # 127.0.0.1 in /proc/net/tcp
LOOPBACK_V6 = {"00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}


def _compose(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    command = ["docker", "compose", "-p", PROJECT, "-f", "compose.yaml"]
    command += ["-f", "compose.local-images.yaml", *args]
    result = subprocess.run(  # noqa: S603
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{' '.join(args)}: {result.stdout}\n{result.stderr}"
    return result.stdout


def _env_file(name: str) -> dict[str, str]:
    lines = (ROOT / ".local" / "compose" / f"{name}.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


@pytest.fixture(scope="module")
def stack(docker_client: Any) -> Iterator[dict[str, int]]:
    ports = {name: int(os.environ.get(f"QBO_COMPOSE_{name}_PORT") or free_port()) for name in PORTS}
    env = {**os.environ, **{f"QBO_COMPOSE_{name}_PORT": str(p) for name, p in ports.items()}}
    subprocess.run([str(ROOT / "deploy/local/compose-secrets.sh")], check=True, timeout=60)  # noqa: S603
    _compose(env, "down", "--volumes", "--remove-orphans")  # what a killed run left
    try:
        _compose(env, "up", "--detach", "--wait", "--wait-timeout", "240", timeout=300)
        yield ports
    finally:
        logs = subprocess.run(  # noqa: S603
            ["docker", "compose", "-p", PROJECT, "logs", "--tail", "30"],  # noqa: S607
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        print(logs.stdout[-6000:])
        _compose(env, "down", "--volumes", "--remove-orphans")
        left = docker_client.containers.list(
            all=True, filters={"label": f"com.docker.compose.project={PROJECT}"}
        )
        assert not left, left


def _listening() -> dict[int, set[str]]:
    """Listening TCP sockets of this host (the containers share its network): port -> addresses."""
    found: dict[int, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port = fields[1].split(":")
            if fields[3] == "0A":
                found.setdefault(int(port, 16), set()).add(address)
    return found


def test_every_container_is_on_the_host_network_and_healthy(
    docker_client: Any, stack: dict[str, int]
) -> None:
    containers = docker_client.containers.list(
        filters={"label": f"com.docker.compose.project={PROJECT}"}
    )
    assert len(containers) == 5
    for container in containers:
        assert container.attrs["HostConfig"]["NetworkMode"] == "host", container.name
        assert container.attrs["State"]["Health"]["Status"] == "healthy", container.name


def test_listens_on_loopback_only(stack: dict[str, int]) -> None:
    listening = _listening()
    for name, port in stack.items():
        addresses = listening.get(port)
        assert addresses, f"nothing listens on {name}'s port {port}"
        for address in addresses:
            assert address == LOOPBACK_V4 or address in LOOPBACK_V6, (name, port, address)


def test_connect_refresh_and_read_invoices_through_the_api(stack: dict[str, int]) -> None:
    sync_url = f"http://127.0.0.1:{stack['SYNC']}"
    api_url = f"http://127.0.0.1:{stack['API']}"
    api_token = _env_file("api")["API_TOKENS"]
    demo = subprocess.run(  # noqa: S603
        [sys.executable, "deploy/local/demo.py", "--sync-url", sync_url, "--api-url", api_url],
        cwd=ROOT,
        env={
            **os.environ,
            "QBO_DEMO_SYNC_TOKEN": _env_file("sync")["SYNC_API_TOKENS"],
            "QBO_DEMO_API_TOKEN": api_token,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    auth = {"Authorization": f"Bearer {api_token}"}
    url = f"{api_url}/api/customers/demo-customer/invoices"
    deadline = time.monotonic() + 90
    while True:
        response = httpx.get(url, headers=auth, timeout=10)
        invoices = response.json().get("invoices", []) if response.status_code == 200 else []
        if len(invoices) == SEEDED_INVOICES or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert response.status_code == 200, response.text
    assert len(invoices) == SEEDED_INVOICES
    assert {(i["realm_id"], i["qbo_customer_id"]) for i in invoices} == {(REALM, "1")}
    assert httpx.get(url, timeout=10).status_code == 401
