"""Emulator settings.

Defaults mirror Intuit's published numbers (1 h access tokens, 100-day rolling
refresh tokens, the 5-year refresh-token hard cap introduced in 2025, 10
concurrent / 10 per-second / 500 per-minute requests per realm) so a client tuned against the
emulator behaves the same against production.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import cast

from qbo_emulator.intuit_errors import FAULT_STYLES, FaultStyle

ENV_PREFIX = "QBO_EMULATOR_"

#: Intuit's rolling refresh-token lifetime: 100 days (8,640,000 s).
DEFAULT_REFRESH_TOKEN_TTL_S = 100 * 24 * 3600
#: Intuit's hard cap on a refresh-token chain: five years (157,680,000 s).
DEFAULT_REFRESH_TOKEN_MAX_LIFETIME_S = 5 * 365 * 24 * 3600


@dataclass
class EmulatorConfig:
    """Tunable behaviour of one emulator instance.

    ``from_env`` reads ``QBO_EMULATOR_<FIELD NAME IN UPPER CASE>``, for example
    ``QBO_EMULATOR_THROTTLE_PER_MINUTE=50``.
    """

    client_id: str = "emulator-client-id"
    client_secret: str = "emulator-client-secret"  # noqa: S105 - well-known test value
    webhook_verifier_token: str = "emulator-verifier-token"  # noqa: S105
    webhook_url: str | None = None
    access_token_ttl_s: int = 3600
    refresh_token_ttl_s: int = DEFAULT_REFRESH_TOKEN_TTL_S
    refresh_token_max_lifetime_s: int = DEFAULT_REFRESH_TOKEN_MAX_LIFETIME_S
    throttle_concurrency: int = 10
    throttle_per_minute: int = 500
    throttle_per_second: int = 10
    # Latency model of an accounting request, off by default (tests): a base per request plus
    # a cost per entity in the answer, each varied by up to +/- jitter percent. Intuit answers
    # a 1,000-invoice page in hundreds of milliseconds; the multi-company benchmark turns it on.
    latency_base_ms: int = 0
    latency_per_row_us: int = 0
    latency_jitter_pct: int = 0
    default_realm_id: str = "9130350000000001"
    rotate_refresh_tokens: bool = True
    #: Shape of 401/403 bodies: ``json``, ``json_lowercase`` or ``xml`` (see intuit_errors).
    auth_fault_style: str = "json"

    def __post_init__(self) -> None:
        if self.auth_fault_style not in FAULT_STYLES:
            raise ValueError(f"auth_fault_style must be one of {sorted(FAULT_STYLES)}")

    @property
    def auth_style(self) -> FaultStyle:
        return cast(FaultStyle, self.auth_fault_style)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EmulatorConfig:
        """Build a config from ``QBO_EMULATOR_*`` variables, defaults elsewhere."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None:
                continue
            values[f.name] = _coerce(f.name, str(f.type), raw)
        return cls(**values)  # type: ignore[arg-type]


def _coerce(name: str, type_name: str, raw: str) -> object:
    if type_name == "int":
        try:
            return int(raw)
        except ValueError as exc:
            raise ValueError(f"{ENV_PREFIX}{name.upper()} must be an integer") from exc
    if type_name == "bool":
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ValueError(f"{ENV_PREFIX}{name.upper()} must be a boolean")
    if type_name == "str | None":
        return raw or None
    return raw
