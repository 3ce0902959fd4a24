"""Tests that run the images themselves (deploy/images/build.sh): only where asked for with
QBO_CONTAINER_TESTS=1, as CI's container step does, because they need a Docker engine, the
built images and, for the compose stack, a set of free ports (docs/design.md, "Container
images"). Asked for, a missing engine or image fails them instead of skipping."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

HERE = Path(__file__).resolve().parent
ASKED = os.environ.get("QBO_CONTAINER_TESTS") == "1"
APP_IMAGE = os.environ.get("QBO_APP_IMAGE", "qbo-sync:local")
UID = "10001"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if ASKED:
        return
    skip = pytest.mark.skip(reason="runs the images: set QBO_CONTAINER_TESTS=1 (CI does)")
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    client = docker.from_env(timeout=60)
    client.ping()
    try:
        client.images.get(APP_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"{APP_IMAGE} is not built: deploy/images/build.sh")
    try:
        yield client
    finally:
        client.close()


def wait_exited(container: Any, within_s: float) -> int:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        container.reload()
        if container.status == "exited":
            code: int = container.attrs["State"]["ExitCode"]
            return code
        time.sleep(0.5)
    raise AssertionError(f"{container.name} still runs after {within_s} s")
