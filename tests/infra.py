"""Where the tests find Kafka and the MongoDB-protocol server.

In order: KAFKA_BOOTSTRAP_SERVERS / MONGODB_URI from the environment; testcontainers when a
Docker engine answers (the images deploy/images/build.sh makes, or the official ones: see
container_images); otherwise the project's own local processes (deploy/local/infra.sh:
Kafka, and FerretDB on PostgreSQL), started on demand. Each test then gets its own topics and
database (see conftest.py).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
INFRA_SH = ROOT / "deploy" / "local" / "infra.sh"


@dataclass
class Endpoints:
    kafka_bootstrap_servers: str
    mongodb_uri: str
    source: str
    _cleanups: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for cleanup in reversed(self._cleanups):
            cleanup()


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=2)
        client.ping()
        return True
    except Exception:
        return False


class LocalPostgres:
    """The PostgreSQL under the local FerretDB, through `infra.sh psql` (its unix socket)."""

    def run(self, *commands: str) -> str:
        """What psql prints for these commands, run in one session (tab-separated, no headers)."""
        args = [arg for command in commands for arg in ("-c", command)]
        result = subprocess.run(  # noqa: S603
            [str(INFRA_SH), "psql", "-qAt", "-F", "\t", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return result.stdout

    def rows(self, sql: str) -> list[list[str]]:
        return [line.split("\t") for line in self.run(sql).splitlines()]


def local_postgres(mongodb_uri: str) -> LocalPostgres | None:
    """The PostgreSQL under `mongodb_uri` if that is the local FerretDB: infra.sh's port, and
    infra.sh runs a PostgreSQL (a FerretDB started from an older checkout may have none)."""
    url = urlsplit(mongodb_uri)
    local_port = int(os.environ.get("QBO_MONGO_PORT", "27017"))
    if url.hostname not in ("127.0.0.1", "localhost") or (url.port or 27017) != local_port:
        return None
    status = subprocess.run(  # noqa: S603
        [str(INFRA_SH), "status"], capture_output=True, text=True, timeout=60, check=False
    )
    if "postgres: running" not in status.stdout:
        return None
    return LocalPostgres()


def _local() -> tuple[str, str]:
    kafka_port = int(os.environ.get("QBO_KAFKA_PORT", "9092"))
    mongo_port = int(os.environ.get("QBO_MONGO_PORT", "27017"))
    if not (_port_open("127.0.0.1", kafka_port) and _port_open("127.0.0.1", mongo_port)):
        # Idempotent: starts only what is not running and waits until both answer.
        subprocess.run([str(INFRA_SH), "up"], check=True, timeout=900)  # noqa: S603
    return f"127.0.0.1:{kafka_port}", f"mongodb://127.0.0.1:{mongo_port}/"


def resolve_endpoints() -> Endpoints:
    kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    mongo = os.environ.get("MONGODB_URI")
    if kafka and mongo:
        return Endpoints(kafka, mongo, "environment")
    if os.environ.get("QBO_TESTS_NO_DOCKER") != "1" and _docker_answers():
        return _containers(kafka, mongo)
    local_kafka, local_mongo = _local()
    return Endpoints(kafka or local_kafka, mongo or local_mongo, "local processes")


def _containers(kafka: str | None, mongo: str | None) -> Endpoints:
    """Kafka and the MongoDB-protocol server as containers on the host's network, each on a free
    loopback port: no traffic leaves loopback (docs/design.md, "Container images")."""
    images = container_images()
    endpoints = Endpoints(kafka or "", mongo or "", f"testcontainers ({images.flavour} images)")
    try:
        if not kafka:
            port, controller = free_port(), free_port()
            broker = _start(images.kafka, env=kafka_container_env(port, controller))
            endpoints._cleanups.append(broker.stop)
            # apache/kafka has no health check of its own: the probe compose.yaml runs.
            official = images.flavour == "official"
            _wait_healthy(broker, _apache_kafka_probe(port) if official else None)
            endpoints.kafka_bootstrap_servers = f"127.0.0.1:{port}"
        if not mongo:
            port = free_port()
            if images.flavour == "official":
                server = _start(images.mongo, command=f"--bind_ip 127.0.0.1 --port {port}")
                endpoints._cleanups.append(server.stop)
                _wait_healthy(server, _mongosh_probe(port))
            else:
                server = _start(images.mongo, env={"FERRETDB_LISTEN_ADDR": f"127.0.0.1:{port}"})
                endpoints._cleanups.append(server.stop)
                _wait_healthy(server)
            endpoints.mongodb_uri = f"mongodb://127.0.0.1:{port}/"
    except BaseException:
        endpoints.close()
        raise
    return endpoints


@dataclass(frozen=True)
class ContainerImages:
    flavour: str
    kafka: str
    mongo: str


# The images deploy/images/build.sh makes from the package registries, and the official ones.
LOCAL_IMAGES = ContainerImages("local", "qbo-local/kafka:4.1.1", "qbo-local/ferretdb:1.24.2")
OFFICIAL_IMAGES = ContainerImages("official", "apache/kafka:4.1.1", "mongo:8.0")
HEALTHY_WITHIN_S = 180


def container_images() -> ContainerImages:
    """QBO_TEST_IMAGES=local|official; unset: the local images where they were built, else the
    official ones (pulled from a registry)."""
    choice = os.environ.get("QBO_TEST_IMAGES", "")
    if choice in ("", "local", "official"):
        if choice == "official" or (choice == "" and not _have_images(LOCAL_IMAGES)):
            return OFFICIAL_IMAGES
        return LOCAL_IMAGES
    raise ValueError(f"QBO_TEST_IMAGES must be local or official, not {choice!r}")


def kafka_container_env(port: int, controller_port: int) -> dict[str, str]:
    """A single KRaft node on 127.0.0.1, configured the way apache/kafka reads its environment
    (the local image reads it the same way), with deploy/local/kafka/server.properties.in's
    settings."""
    return {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": f"1@127.0.0.1:{controller_port}",
        "KAFKA_LISTENERS": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_INTER_BROKER_LISTENER_NAME": "PLAINTEXT",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_NUM_PARTITIONS": "6",
        "KAFKA_DEFAULT_REPLICATION_FACTOR": "1",
        "KAFKA_MIN_INSYNC_REPLICAS": "1",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS": "6",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        "KAFKA_HEAP_OPTS": "-Xms256m -Xmx768m",
    }


def free_port() -> int:
    """A port free on loopback now (the caller binds it soon after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _have_images(images: ContainerImages) -> bool:
    import docker

    client = docker.from_env(timeout=10)
    try:
        for name in (images.kafka, images.mongo):
            client.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    finally:
        client.close()
    return True


def _start(image: str, env: dict[str, str] | None = None, command: str | None = None) -> Any:
    from testcontainers.core.config import testcontainers_config
    from testcontainers.core.container import DockerContainer

    # Ryuk, testcontainers' reaper, is an image of its own from Docker Hub: the fixtures remove
    # their containers themselves.
    testcontainers_config.ryuk_disabled = True
    # Host networking: the engine runs without a bridge, and every port is on 127.0.0.1.
    container = DockerContainer(image, env=env, command=command).with_kwargs(network_mode="host")
    return container.start()


def _apache_kafka_probe(port: int) -> list[str]:
    script = "/opt/kafka/bin/kafka-broker-api-versions.sh"
    return ["CMD-SHELL", f"{script} --bootstrap-server 127.0.0.1:{port} > /dev/null 2>&1"]


def _mongosh_probe(port: int) -> list[str]:
    ping = "db.adminCommand('ping').ok"
    return ["CMD", "mongosh", "--quiet", "--port", str(port), "--eval", ping]


def _wait_healthy(container: Any, probe: list[str] | None = None) -> None:
    """Until the image's own health check passes, or `probe` (run inside) for an image that has
    none."""
    wrapped = container.get_wrapped_container()
    deadline = time.monotonic() + HEALTHY_WITHIN_S
    while time.monotonic() < deadline:
        wrapped.reload()
        state = wrapped.attrs["State"]
        if not state["Running"]:
            break
        if probe is not None:
            shell = probe[0] == "CMD-SHELL"
            command = ["sh", "-c", probe[1]] if shell else probe[1:]
            if wrapped.exec_run(command).exit_code == 0:
                return
        elif state.get("Health", {}).get("Status") == "healthy":
            return
        time.sleep(1)
    logs = wrapped.logs(tail=40).decode(errors="replace")
    raise RuntimeError(f"{wrapped.image.tags} did not become healthy:\n{logs}")
