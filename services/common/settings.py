"""One typed settings object, read from the environment, with defaults that work locally.

Every process (sync worker, api, tests, benchmarks) builds its `Settings` once at start-up
and passes it down; nothing else reads `os.environ`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True)

    # Infrastructure. The two names tests and operators know from everywhere keep their
    # usual spelling: KAFKA_BOOTSTRAP_SERVERS and MONGODB_URI.
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_client_id: str = "qbo-sync"
    kafka_replication_factor: int = Field(default=1, ge=1)
    mongodb_uri: str = "mongodb://127.0.0.1:27017/"
    mongodb_database: str = "qbo_sync"
    # Count the commands sent to MongoDB (by caller, command and collection), shown at the sync
    # service's /stats and the api's /metrics: the benchmarks' engine-independent figure.
    mongodb_command_counts: bool = False

    # Topics. Commands are keyed by realmId so one worker owns a realm (docs/design.md invariant 1).
    commands_topic: str = "qbo.commands.v1"
    invoice_events_topic: str = "qbo.invoice-events.v1"
    dead_letter_topic: str = "qbo.commands.dlq.v1"
    commands_partitions: int = Field(default=6, ge=1)
    events_partitions: int = Field(default=6, ge=1)
    sync_consumer_group: str = "qbo-sync-worker"
    projector_consumer_group: str = "qbo-api-projector"

    # Intuit. Defaults point at the local QBO emulator; production is a configuration change.
    qbo_api_base_url: str = "http://127.0.0.1:8790"
    qbo_oauth_authorize_url: str = "http://127.0.0.1:8790/connect/oauth2"
    qbo_oauth_token_url: str = "http://127.0.0.1:8790/oauth2/v1/tokens/bearer"  # noqa: S105
    qbo_oauth_revoke_url: str = "http://127.0.0.1:8790/v2/oauth2/tokens/revoke"
    qbo_client_id: str = "emulator-client-id"
    qbo_client_secret: SecretStr = SecretStr("emulator-client-secret")
    qbo_redirect_uri: str = "http://127.0.0.1:8000/oauth/callback"
    qbo_webhook_verifier_token: SecretStr = SecretStr("emulator-verifier-token")
    qbo_minor_version: int = Field(default=75, ge=75)

    # Sync worker. CDC is the safety net for lost webhooks: each worker polls the realms whose
    # command partition it owns. The overlap re-reads a little of the previous window so clock
    # skew between us and Intuit cannot lose a change (re-reads are harmless: writes are guarded).
    cdc_poll_interval_s: float = Field(default=300.0, gt=0)
    cdc_overlap_s: float = Field(default=60.0, ge=0)
    # Attempts of a command failing in MongoDB or Kafka; a QBO failure is retried by the QBO
    # client only (docs/design.md invariant 13).
    command_max_attempts: int = Field(default=3, ge=1)
    outbox_sweep_interval_s: float = Field(default=30.0, gt=0)
    # Realms a worker serves at once (commands, CDC polls, sweeps; one realm's run in order).
    # 1 gives the old one-command-at-a-time worker. Records of one partition received and not
    # yet done, past which the worker stops reading that partition until they drain.
    worker_concurrency: int = Field(default=64, ge=1)
    worker_max_in_flight_per_partition: int = Field(default=1000, ge=1)
    # Pages of refreshes and CDC polls (up to 1,000 invoices each) being written and emitted at
    # once, whatever the number of realms: past a few, the database is no faster, and each
    # more one slows every small command's writes (a webhook's) beside them.
    worker_page_writes: int = Field(default=4, ge=1)
    # Intuit asks clients to wait 60 s after a 429: a realm still throttled after the client's
    # retries is paused that long, its commands deferred (status `throttled`), and a command
    # throttled for longer than the give-up time is dead-lettered.
    qbo_throttle_pause_s: float = Field(default=60.0, gt=0)
    qbo_throttle_give_up_s: float = Field(default=3600.0, gt=0)
    # The QBO client's first back-off after a 429, 5xx or lost connection (then doubled, three
    # retries in all) before a throttled realm is paused.
    qbo_retry_base_delay_s: float = Field(default=0.5, ge=0)
    # How long a rebalance waits for the running commands of partitions it takes away; after
    # it they are abandoned uncommitted (the next owner redelivers them). Keep it well below
    # Kafka's max.poll.interval.ms (5 minutes), which bounds the whole rebalance.
    worker_rebalance_grace_s: float = Field(default=30.0, gt=0)

    # Secrets of our own. Left empty, they fall back to published development values, which
    # only `environment` "local" accepts, and only on a loopback address
    # (services.common.credentials); anything else refuses to start.
    token_encryption_keys: SecretStr = SecretStr("")
    token_encryption_primary_key_id: str = ""
    oauth_state_secret: SecretStr = SecretStr("")
    # Bearer tokens of the api's /api routes, and of the sync service's tenant endpoints
    # (mapping, connections, stats, connect links); comma-separated so tokens can be rolled.
    api_tokens: SecretStr = SecretStr("")
    sync_api_tokens: SecretStr = SecretStr("")
    # Signs the short-lived links that start a QBO connect for one app user; the sync service
    # verifies them and the api signs the dashboard's "reconnect" links with it.
    connect_link_secret: SecretStr = SecretStr("")
    environment: str = "local"

    # HTTP request paths of both services: how long a request waits for MongoDB before it
    # answers 503 with Retry-After (server selection included), so an unreachable or frozen
    # database costs callers seconds, not minutes.
    request_timeout_s: float = Field(default=2.5, gt=0)

    # Full garbage collections of both services run on this clock, not when the heap grows by a
    # quarter (services/common/gcpolicy.py).
    gc_full_collection_interval_s: float = Field(default=30.0, gt=0)

    # Logging.
    log_level: str = "INFO"
    log_json: bool = True

    # Tracing (services/common/tracing.py), under OpenTelemetry's own variable names. Off unless
    # an exporter is named; the SDK reads the exporter's own OTEL_EXPORTER_OTLP_* variables.
    otel_traces_exporter: Literal["none", "otlp", "console"] = "none"
    otel_service_name: str | None = None
    otel_sdk_disabled: bool = False

    # Read API (services.api).
    # Where people reach the sync service's OAuth pages: the dashboard's "reconnect" link.
    sync_public_url: str = "http://127.0.0.1:8000"
    # Run the event projector inside the api process (a separate projector process may be run
    # instead with `python -m services.api.projector`).
    api_run_projector: bool = True
    # Rendered listings the api keeps per process, each valid for one revision of its customer
    # (services/api/listing_cache.py); 0 turns the cache off (every GET reads the read model).
    api_listing_cache_entries: int = Field(default=512, ge=0)
    # Records the projector takes per batch. It reads the read model's versions once per batch,
    # so bigger batches are cheaper per event; but on FerretDB v1 each update of an invoice
    # already stored scans the collection, and a batch must finish within Kafka's
    # max.poll.interval (5 minutes) or the consumer is dropped from its group.
    projector_batch_size: int = Field(default=500, ge=1)
    # Events the projector reads ahead of its batches (about 1 KB each), so that a batch can
    # take a small company's waiting events before another company's backlog.
    projector_read_ahead: int = Field(default=50_000, ge=1)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
