"""The system under test as separate processes: the QBO emulator, the sync service, the api.

The one launcher of those processes: the benchmark, the fault suite and the end-to-end tests
(tests/e2e) all start, wait for and stop them through `Stack`. It lives here because `bench` runs
without the test suite (`make bench`, `make chaos`); tests import it, never the other way round.

A run gets its own topics, consumer groups and database (named after the run), so it can share
a Kafka and a MongoDB with a developer's `make run` or the test suite without touching their
data, and removes them afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import Child, child_env, free_port
from services.common.kafka import delete_topics, ensure_topics, topics_for
from services.common.mongo import make_client
from services.common.settings import Settings


def run_settings(
    base: Settings, prefix: str, run_id: str | None = None, **extra: object
) -> Settings:
    """`base` with topics, groups and database of their own, named `<prefix>-<run id>`."""
    rid = run_id or uuid.uuid4().hex[:8]
    name = f"{prefix}-{rid}"
    return base.model_copy(
        update={
            "mongodb_database": name.replace("-", "_"),
            "commands_topic": f"{name}.commands",
            "invoice_events_topic": f"{name}.invoice-events",
            "dead_letter_topic": f"{name}.commands-dlq",
            "sync_consumer_group": f"{name}.sync",
            "projector_consumer_group": f"{name}.projector",
            **extra,
        }
    )


def infra_env(settings: Settings) -> dict[str, str]:
    """Environment variables (named after Settings fields) for the Kafka and MongoDB parts of
    `settings`: servers, database, topics, partitions and consumer groups."""
    return {
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "MONGODB_URI": settings.mongodb_uri,
        "MONGODB_DATABASE": settings.mongodb_database,
        "COMMANDS_TOPIC": settings.commands_topic,
        "INVOICE_EVENTS_TOPIC": settings.invoice_events_topic,
        "DEAD_LETTER_TOPIC": settings.dead_letter_topic,
        "COMMANDS_PARTITIONS": str(settings.commands_partitions),
        "EVENTS_PARTITIONS": str(settings.events_partitions),
        "SYNC_CONSUMER_GROUP": settings.sync_consumer_group,
        "PROJECTOR_CONSUMER_GROUP": settings.projector_consumer_group,
    }


def service_env(settings: Settings, emulator_url: str, sync_url: str) -> dict[str, str]:
    """Environment variables (named after Settings fields) that make a child use `settings`."""
    return child_env(
        {
            **infra_env(settings),
            "QBO_API_BASE_URL": emulator_url,
            "QBO_OAUTH_AUTHORIZE_URL": f"{emulator_url}/connect/oauth2",
            "QBO_OAUTH_TOKEN_URL": f"{emulator_url}/oauth2/v1/tokens/bearer",
            "QBO_OAUTH_REVOKE_URL": f"{emulator_url}/v2/oauth2/tokens/revoke",
            "QBO_REDIRECT_URI": f"{sync_url}/oauth/callback",
            "SYNC_PUBLIC_URL": sync_url,
            "CDC_POLL_INTERVAL_S": str(settings.cdc_poll_interval_s),
            "CDC_OVERLAP_S": str(settings.cdc_overlap_s),
            "OUTBOX_SWEEP_INTERVAL_S": str(settings.outbox_sweep_interval_s),
            "COMMAND_MAX_ATTEMPTS": str(settings.command_max_attempts),
            "WORKER_CONCURRENCY": str(settings.worker_concurrency),
            "QBO_THROTTLE_PAUSE_S": str(settings.qbo_throttle_pause_s),
            "QBO_RETRY_BASE_DELAY_S": str(settings.qbo_retry_base_delay_s),
            "MONGODB_COMMAND_COUNTS": str(settings.mongodb_command_counts).lower(),
            # Local mode on loopback: the published development secrets and tokens.
            "ENVIRONMENT": "local",
            "API_TOKENS": "",
            "SYNC_API_TOKENS": "",
            "CONNECT_LINK_SECRET": "",
            "LOG_LEVEL": settings.log_level,
            "LOG_JSON": "true",
        }
    )


@dataclass
class Stack:
    """Where the children listen and how to (re)start them; nothing runs until `start_*`."""

    settings: Settings
    logs: Path
    emulator_env: Mapping[str, str] = field(default_factory=dict)
    # Run the services under `bench.profiled` (a profiler that sleeps until SIGUSR1), writing
    # their profiles here.
    profile_dir: Path | None = None
    emulator_port: int = field(default_factory=free_port)
    sync_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    children: dict[str, Child] = field(default_factory=dict)

    @property
    def emulator_url(self) -> str:
        return f"http://127.0.0.1:{self.emulator_port}"

    @property
    def sync_url(self) -> str:
        return f"http://127.0.0.1:{self.sync_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def env(self) -> dict[str, str]:
        return service_env(self.settings, self.emulator_url, self.sync_url)

    def wired(self) -> Settings:
        """The run's settings pointing at its emulator, as the children get them."""
        url = self.emulator_url
        return self.settings.model_copy(
            update={
                "qbo_api_base_url": url,
                "qbo_oauth_authorize_url": f"{url}/connect/oauth2",
                "qbo_oauth_token_url": f"{url}/oauth2/v1/tokens/bearer",
                "qbo_oauth_revoke_url": f"{url}/v2/oauth2/tokens/revoke",
                "qbo_redirect_uri": f"{self.sync_url}/oauth/callback",
            }
        )

    def child(self, name: str, *args: str, env: Mapping[str, str] | None = None) -> Child:
        made = Child(name, args, env if env is not None else self.env(), self.logs)
        self.children[name] = made
        return made

    def _service_args(self, name: str, module: str, *args: str) -> tuple[str, ...]:
        if self.profile_dir is None:
            return (module, *args)
        return ("bench.profiled", "--out", str(self.profile_dir), "--name", name, module, *args)

    async def start_emulator(self) -> Child:
        emulator = self.child(
            "emulator",
            "qbo_emulator",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.emulator_port),
            env=child_env(self.emulator_env),
        )
        await emulator.start()
        await emulator.wait_http(f"{self.emulator_url}/_emulator/health")
        return emulator

    async def start_sync(self, role: str = "all", name: str = "sync") -> Child:
        port = self.sync_port if role in ("all", "web") else free_port()
        sync = self.child(
            name,
            *self._service_args(
                name, "services.sync", "--host", "127.0.0.1", "--port", str(port), "--role", role
            ),
        )
        await sync.start()
        if role in ("all", "web"):
            await sync.wait_http(f"{self.sync_url}/healthz")
        return sync

    async def start_api(self, env: Mapping[str, str] | None = None) -> Child:
        """The api; `env` adds to (or overrides) the run's environment."""
        api = self.child(
            "api",
            *self._service_args(
                "api", "services.api", "--host", "127.0.0.1", "--port", str(self.api_port)
            ),
            env={**self.env(), **(env or {})},
        )
        await api.start()
        await api.wait_http(f"{self.api_url}/readyz")
        return api

    async def stop_all(self) -> None:
        for child in reversed(list(self.children.values())):
            await child.stop()

    def logs_tail(self) -> str:
        return "\n".join(c.tail() for c in self.children.values())


async def create_topics(settings: Settings) -> None:
    await ensure_topics(settings.kafka_bootstrap_servers, topics_for(settings))


async def remove_run_data(settings: Settings) -> None:
    """Delete the run's topics and database (a benchmark's figures are already written by
    then; the test fixtures use this too)."""
    await delete_topics(settings.kafka_bootstrap_servers, [t.name for t in topics_for(settings)])
    client = make_client(settings.mongodb_uri)
    try:
        await client.drop_database(settings.mongodb_database)
    finally:
        await client.close()
