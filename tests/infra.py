"""Where the tests find Kafka and the MongoDB-protocol server.

In order: KAFKA_BOOTSTRAP_SERVERS / MONGODB_URI from the environment; testcontainers when a
Docker engine answers; otherwise the project's own local processes (deploy/local/infra.sh:
Kafka, and FerretDB on PostgreSQL), started on demand. Each test then gets its own topics and
database (see conftest.py).
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
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
    endpoints = Endpoints(kafka or "", mongo or "", "testcontainers")
    if not kafka:
        from testcontainers.kafka import KafkaContainer

        kc = KafkaContainer("apache/kafka:4.1.1").with_kraft()
        kc.start()
        endpoints._cleanups.append(kc.stop)
        endpoints.kafka_bootstrap_servers = kc.get_bootstrap_server()
    if not mongo:
        from testcontainers.mongodb import MongoDbContainer

        mc = MongoDbContainer("mongo:8.0")
        mc.start()
        endpoints._cleanups.append(mc.stop)
        endpoints.mongodb_uri = mc.get_connection_url()
    return endpoints
