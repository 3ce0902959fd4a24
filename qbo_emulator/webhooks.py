"""Signed change notifications, in Intuit's legacy and CloudEvents formats.

What Intuit documents (developer.intuit.com webhooks pages and the
2025-11-12 "Upcoming change to webhooks payload structure" post):

* Every delivery is an HTTP POST whose ``intuit-signature`` header is
  base64(HMAC-SHA256(verifier token, raw body)); the check is unchanged by the
  format migration.
* Legacy body::

      {"eventNotifications": [{"realmId": "310687", "dataChangeEvent": {"entities": [
          {"name": "Invoice", "id": "1234", "operation": "Create",
           "lastUpdated": "2025-09-08T20:52:31.657Z"}]}}]}

  one ``eventNotifications`` item per realm; operations are Create, Update,
  Delete, Merge, Void and Emailed.
* CloudEvents body (mandatory for all apps from 2026): a JSON *array* of
  events that may mix realms::

      [{"specversion": "1.0", "id": "88cd52aa-...", "source": "intuit.<opaque>",
        "type": "qbo.account.created.v1", "datacontenttype": "application/json",
        "time": "2025-09-10T21:31:25.179851517Z", "intuitentityid": "1234",
        "intuitaccountid": "310687", "data": {}}]

  ``type`` is ``qbo.<entity in lower case>.<created|updated|deleted|merged|
  voided|emailed>.v1``; ``intuitaccountid`` is the realm id; ``data`` is
  usually empty (a merge carries ``{"deletedid": ...}``).
* Notifications carry ids only; receivers fetch the entity (or use CDC).
* Changes are batched over a short window; delivery is best effort.

The emulator batches for ``flush_interval_s`` (50 ms) or ``max_batch``
events, does not retry failed deliveries, and can drop deliveries on purpose
(``drop_next`` / ``drop_probability``) so tests can prove a CDC fallback.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import random
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import aiohttp

from qbo_emulator import jsonenc
from qbo_emulator.books import Change
from qbo_emulator.timeutil import format_utc_micros, format_utc_millis

log = logging.getLogger(__name__)

FORMATS = frozenset({"legacy", "cloudevents"})
CLOUDEVENT_VERBS: Mapping[str, str] = {
    "Create": "created",
    "Update": "updated",
    "Delete": "deleted",
    "Merge": "merged",
    "Void": "voided",
    "Emailed": "emailed",
}


def sign(body: bytes, verifier_token: str) -> str:
    """The ``intuit-signature`` value for ``body``."""
    digest = hmac.new(verifier_token.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def cloudevents_source(client_id: str) -> str:
    """An opaque per-app ``source`` in Intuit's ``intuit.<base64>`` shape."""
    digest = hashlib.sha256(client_id.encode("utf-8")).digest()
    return "intuit." + base64.b64encode(digest).decode("ascii")


def legacy_payload(events: Sequence[tuple[str, Change]]) -> dict[str, Any]:
    by_realm: dict[str, list[dict[str, str]]] = {}
    for realm_id, change in events:
        entity = {
            "name": change.entity,
            "id": change.entity_id,
            "operation": change.operation,
            "lastUpdated": format_utc_millis(change.ts),
        }
        if change.deleted_id is not None:
            entity["deletedId"] = change.deleted_id
        by_realm.setdefault(realm_id, []).append(entity)
    return {
        "eventNotifications": [
            {"realmId": realm_id, "dataChangeEvent": {"entities": entities}}
            for realm_id, entities in by_realm.items()
        ]
    }


def cloudevents_payload(events: Sequence[tuple[str, Change]], source: str) -> list[dict[str, Any]]:
    return [
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": source,
            "type": f"qbo.{change.entity.lower()}.{CLOUDEVENT_VERBS[change.operation]}.v1",
            "datacontenttype": "application/json",
            "time": format_utc_micros(change.ts),
            "intuitentityid": change.entity_id,
            "intuitaccountid": realm_id,
            "data": {} if change.deleted_id is None else {"deletedid": change.deleted_id},
        }
        for realm_id, change in events
    ]


@dataclass
class WebhookSettings:
    url: str | None = None
    format: str = "cloudevents"
    enabled: bool = True
    drop_next: int = 0  # drop the next N deliveries (batches)
    drop_probability: float = 0.0
    flush_interval_s: float = 0.05
    max_batch: int = 100
    timeout_s: float = 10.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Delivery:
    """What happened to one POST, kept for test assertions."""

    url: str
    format: str
    events: int
    body: bytes
    signature: str
    status: int | None = None
    dropped: bool = False
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "format": self.format,
            "events": self.events,
            "status": self.status,
            "dropped": self.dropped,
            "error": self.error,
            "signature": self.signature,
            "body": self.body.decode("utf-8"),
        }


@dataclass
class WebhookCounters:
    queued: int = 0
    deliveries: int = 0
    events_sent: int = 0
    dropped: int = 0
    failed: int = 0


class WebhookDispatcher:
    """Queues changes synchronously; a background task batches, signs and POSTs them."""

    def __init__(
        self,
        verifier_token: Callable[[], str],
        client_id: Callable[[], str],
        settings: WebhookSettings | None = None,
        seed: int | None = None,
    ) -> None:
        self._verifier_token = verifier_token
        self._client_id = client_id
        self.settings = settings or WebhookSettings()
        self._rng = random.Random(seed)  # noqa: S311 - reproducible drops, not security
        self.pending: list[tuple[str, Change]] = []
        self.deliveries: deque[Delivery] = deque(maxlen=1000)
        self.counters = WebhookCounters()
        self._wake: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    # ------------------------------------------------------------ producers
    @property
    def active(self) -> bool:
        return bool(self.settings.enabled and self.settings.url)

    def notify(self, realm_id: str, change: Change) -> None:
        """Called by the books for every change (synchronously, in the loop thread)."""
        if not self.active:
            return
        self.pending.append((realm_id, change))
        self.counters.queued += 1
        if self._idle is not None:
            self._idle.clear()
        if self._wake is not None:
            self._wake.set()

    def configure(self, **changes: Any) -> WebhookSettings:
        """Change some settings atomically (nothing changes if one is invalid)."""
        unknown = set(changes) - set(self.settings.to_dict())
        if unknown:
            raise ValueError(f"unknown webhook setting(s) {sorted(unknown)}")
        updated = replace(self.settings, **changes)
        if updated.format not in FORMATS:
            raise ValueError(f"format must be one of {sorted(FORMATS)}")
        if updated.max_batch < 1 or updated.flush_interval_s < 0:
            raise ValueError("max_batch must be >= 1 and flush_interval_s >= 0")
        if not 0.0 <= updated.drop_probability <= 1.0:
            raise ValueError("drop_probability must be within [0, 1]")
        self.settings = updated
        return updated

    def reseed(self, seed: int | None) -> None:
        self._rng = random.Random(seed)  # noqa: S311

    def reset(self) -> None:
        self.pending.clear()
        self.deliveries.clear()
        self.counters = WebhookCounters()

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._task is not None:
            return
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._session = aiohttp.ClientSession()
        if self.pending:
            self._wake.set()
        else:
            self._idle.set()
        self._task = asyncio.create_task(self._run(), name="qbo-emulator-webhooks")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._wake = None
        self._idle = None

    async def wait_idle(self, within_s: float = 5.0) -> None:
        """Wait until everything queued so far has been delivered (or dropped)."""
        if self._idle is None:
            return
        await asyncio.wait_for(self._idle.wait(), within_s)

    # ------------------------------------------------------------- consumer
    async def _run(self) -> None:
        assert self._wake is not None and self._idle is not None
        while True:
            await self._wake.wait()
            if len(self.pending) < self.settings.max_batch:
                await asyncio.sleep(self.settings.flush_interval_s)
            batch = self.pending[: self.settings.max_batch]
            del self.pending[: len(batch)]
            if batch:
                try:
                    await self._deliver(batch)
                except asyncio.CancelledError:
                    raise
                except Exception:  # pragma: no cover - never let the loop die
                    log.exception("webhook delivery crashed")
            if not self.pending:
                self._wake.clear()
                self._idle.set()

    async def _deliver(self, batch: list[tuple[str, Change]]) -> None:
        settings = self.settings
        url = settings.url
        if not url:
            return
        if settings.format == "legacy":
            payload: Any = legacy_payload(batch)
        else:
            payload = cloudevents_payload(batch, cloudevents_source(self._client_id()))
        body = jsonenc.dumps_bytes(payload)
        delivery = Delivery(
            url, settings.format, len(batch), body, sign(body, self._verifier_token())
        )
        self.deliveries.append(delivery)
        if settings.drop_next > 0 or (
            settings.drop_probability > 0 and self._rng.random() < settings.drop_probability
        ):
            if settings.drop_next > 0:
                settings.drop_next -= 1
            delivery.dropped = True
            self.counters.dropped += 1
            return
        assert self._session is not None
        headers = {
            "Content-Type": "application/json",
            "intuit-signature": delivery.signature,
            "User-Agent": "qbo-emulator-webhooks",
        }
        try:
            async with self._session.post(
                url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=settings.timeout_s),
            ) as response:
                delivery.status = response.status
                await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            delivery.error = f"{type(exc).__name__}: {exc}"
            self.counters.failed += 1
            return
        self.counters.deliveries += 1
        self.counters.events_sent += len(batch)
        if delivery.status is not None and delivery.status >= 300:
            self.counters.failed += 1
