"""``EmulatorState``: everything one emulator instance knows.

It owns the books of every realm, the OAuth store, fault rules, throttle,
webhook dispatcher and counters, and exposes the admin operations as plain
methods so in-process tests can arrange data without HTTP. All methods are
synchronous and must be called from the event-loop thread that serves the app
(there is no locking; aiohttp handlers run on that same thread).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from qbo_emulator.books import CUSTOMER, INVOICE, ChangeClock, Entity, RealmBooks
from qbo_emulator.config import EmulatorConfig
from qbo_emulator.faults import FaultInjector, FaultRule
from qbo_emulator.stats import Stats
from qbo_emulator.throttle import Throttle
from qbo_emulator.tokens import TokenStore
from qbo_emulator.webhooks import WebhookDispatcher, WebhookSettings


class EmulatorState:
    """In-memory QBO: realms -> books, OAuth, faults, throttle, webhooks, stats.

    ``clock`` (default ``time.time``) is read through ``self.clock`` on every
    use, so a test can assign ``state.clock = lambda: t`` to expire tokens or
    move the throttle window without sleeping.
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        clock: Callable[[], float] | None = None,
        seed: int | None = None,
    ) -> None:
        self.config = config or EmulatorConfig()
        self.clock: Callable[[], float] = clock or time.time
        self.change_clock = ChangeClock(self._now)
        self.realms: dict[str, RealmBooks] = {}
        self.tokens = TokenStore(self.config, self._now)
        self.faults = FaultInjector(seed)
        self.throttle = Throttle(
            self.config.throttle_concurrency,
            self.config.throttle_per_minute,
            self._now,
            per_second=self.config.throttle_per_second,
        )
        self._latency_rng = random.Random(seed)  # noqa: S311 - reproducible, not secret
        self.webhooks = WebhookDispatcher(
            lambda: self.config.webhook_verifier_token,
            lambda: self.config.client_id,
            WebhookSettings(url=self.config.webhook_url),
            seed=seed,
        )
        self.stats = Stats()

    def _now(self) -> float:
        return self.clock()

    def apply_config(self, config: EmulatorConfig) -> None:
        """Swap in a new config (``create_app(state, config)`` does this)."""
        self.config = config
        self.tokens.config = config
        self.tokens.clients[config.client_id] = config.client_secret
        self.throttle.concurrency = config.throttle_concurrency
        self.throttle.per_minute = config.throttle_per_minute
        self.throttle.per_second = config.throttle_per_second
        if config.webhook_url is not None:
            self.webhooks.settings.url = config.webhook_url

    def latency_s(self, rows: int) -> float:
        """How long an accounting answer of `rows` entities takes (0 with the model off)."""
        c = self.config
        delay = c.latency_base_ms / 1000 + rows * c.latency_per_row_us / 1_000_000
        if delay > 0 and c.latency_jitter_pct > 0:
            spread = c.latency_jitter_pct / 100
            delay *= 1 + self._latency_rng.uniform(-spread, spread)
        return max(delay, 0.0)

    # ----------------------------------------------------------------- realms
    def realm(self, realm_id: str) -> RealmBooks:
        """The books of ``realm_id``, created empty on first use."""
        books = self.realms.get(realm_id)
        if books is None:
            books = RealmBooks(realm_id, self._now, self.change_clock, self.webhooks.notify)
            self.realms[realm_id] = books
        return books

    def create_customer(self, realm_id: str, fields: Mapping[str, Any] | None = None) -> Entity:
        return self.realm(realm_id).create_customer(fields or {})

    def update_customer(self, realm_id: str, customer_id: str, fields: Mapping[str, Any]) -> Entity:
        return self.realm(realm_id).update_customer(str(customer_id), fields)

    def get_customer(self, realm_id: str, customer_id: str) -> Entity:
        return self.realm(realm_id).get(CUSTOMER, str(customer_id))

    def merge_customers(
        self, realm_id: str, absorbed_id: str, survivor_id: str, notify: bool = True
    ) -> dict[str, Any]:
        return self.realm(realm_id).merge_customers(str(absorbed_id), str(survivor_id), notify)

    def create_invoice(self, realm_id: str, fields: Mapping[str, Any]) -> Entity:
        return self.realm(realm_id).create_invoice(fields)

    def update_invoice(
        self, realm_id: str, invoice_id: str, fields: Mapping[str, Any], notify: bool = True
    ) -> Entity:
        return self.realm(realm_id).update_invoice(str(invoice_id), fields, notify)

    def void_invoice(self, realm_id: str, invoice_id: str) -> Entity:
        return self.realm(realm_id).void_invoice(str(invoice_id))

    def delete_invoice(self, realm_id: str, invoice_id: str, notify: bool = True) -> Entity:
        return self.realm(realm_id).delete_invoice(str(invoice_id), notify)

    def create_payment(self, realm_id: str, fields: Mapping[str, Any]) -> Entity:
        return self.realm(realm_id).create_payment(fields)

    def get_invoice(self, realm_id: str, invoice_id: str) -> Entity:
        return self.realm(realm_id).get(INVOICE, str(invoice_id))

    def seed(
        self,
        realm_id: str,
        customers: int,
        invoices_per_customer: int,
        customer_names: Sequence[str] | None = None,
        notify: bool = False,
    ) -> dict[str, int]:
        return self.realm(realm_id).seed(customers, invoices_per_customer, customer_names, notify)

    # ------------------------------------------------------------------ OAuth
    def issue_tokens(self, realm_id: str | None = None) -> dict[str, Any]:
        """Skip the consent dance: a fresh grant's token response for ``realm_id``."""
        return self.tokens.issue_for_realm(realm_id or self.config.default_realm_id)

    def expire_access_tokens(self, realm_id: str | None = None) -> int:
        return self.tokens.expire_access_tokens(realm_id)

    def expire_refresh_tokens(self, realm_id: str | None = None) -> int:
        return self.tokens.expire_refresh_tokens(realm_id)

    # --------------------------------------------------------- faults / hooks
    def set_faults(
        self,
        rules: Iterable[FaultRule | Mapping[str, Any]],
        seed: int | None = None,
        append: bool = False,
    ) -> None:
        parsed = [r if isinstance(r, FaultRule) else FaultRule.from_dict(r) for r in rules]
        self.faults.configure(parsed, seed=seed, append=append)

    def configure_webhooks(self, **settings: Any) -> WebhookSettings:
        """e.g. ``configure_webhooks(url=..., format="legacy", enabled=True, drop_next=1)``."""
        return self.webhooks.configure(**settings)

    # ------------------------------------------------------------------ reset
    def reset(self) -> None:
        """Forget books, tokens, faults, counters and webhook settings (config stays)."""
        self.realms.clear()
        self.tokens = TokenStore(self.config, self._now)
        self.faults.clear()
        self.throttle.reset()
        self.webhooks.reset()
        self.webhooks.settings = WebhookSettings(url=self.config.webhook_url)
        self.stats.reset()
