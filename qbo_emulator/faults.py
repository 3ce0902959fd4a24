"""Fault injection rules: make the emulator fail the way production does.

A rule matches requests by path substring and/or realm, may fire only on the
next ``times`` matches and/or with a ``probability`` drawn from a seeded RNG
(so a flaky-network test is reproducible), and then produces one of:

* ``401`` - an expired-token fault, exactly what Intuit sends when an access
  token lapses mid-flight;
* ``403`` - Intuit's ``AuthorizationFailed`` (3100);
* ``429`` - the throttle XML, with ``Retry-After`` when ``retry_after`` is set;
* ``500`` - a ``SystemFault`` JSON body;
* ``503`` - an HTML gateway page (not JSON: clients must cope);
* ``slow`` - wait ``delay_s`` then answer normally;
* ``malformed_json`` - 200 with a truncated JSON body;
* ``drop_connection`` - close the socket without any response.

``body`` picks the shape of a ``401``/``403`` body, since Intuit's gateway sends
all three: ``json`` (capitalised ``Fault``), ``json_lowercase`` (``fault`` with an
integer ``time``) or ``xml`` (``<IntuitResponse>``, code 100 for a 401); without it
the emulator's ``auth_fault_style`` setting applies.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, cast

from qbo_emulator.intuit_errors import FAULT_STYLES, FaultStyle

FAULT_KINDS = frozenset(
    {"401", "403", "429", "500", "503", "slow", "malformed_json", "drop_connection"}
)


class FaultConfigError(ValueError):
    """A rule that cannot be understood."""


@dataclass
class FaultRule:
    kind: str
    path_contains: str | None = None
    realm_id: str | None = None
    times: int | None = None  # remaining firings; None = unlimited
    probability: float | None = None
    delay_s: float = 1.0
    retry_after: int | None = None
    body: FaultStyle | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> FaultRule:
        kind = str(raw.get("kind", ""))
        if kind not in FAULT_KINDS:
            raise FaultConfigError(f"unknown fault kind {kind!r}; use one of {sorted(FAULT_KINDS)}")
        try:
            times = None if raw.get("times") is None else int(raw["times"])
            probability = None if raw.get("probability") is None else float(raw["probability"])
            delay_s = float(raw.get("delay_s", 1.0))
            retry_after = None if raw.get("retry_after") is None else int(raw["retry_after"])
        except (TypeError, ValueError) as exc:
            raise FaultConfigError(f"bad fault rule {dict(raw)!r}: {exc}") from exc
        if times is not None and times < 0:
            raise FaultConfigError("times must be >= 0")
        if probability is not None and not 0.0 <= probability <= 1.0:
            raise FaultConfigError("probability must be within [0, 1]")
        body = raw.get("body")
        if body is not None and body not in FAULT_STYLES:
            raise FaultConfigError(f"unknown body {body!r}; use one of {sorted(FAULT_STYLES)}")
        path = raw.get("path_contains")
        realm = raw.get("realm_id")
        return cls(
            kind=kind,
            path_contains=None if path is None else str(path),
            realm_id=None if realm is None else str(realm),
            times=times,
            probability=probability,
            delay_s=delay_s,
            retry_after=retry_after,
            body=cast(FaultStyle | None, body),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FaultInjector:
    """Ordered rule list; the first rule that matches and fires wins."""

    def __init__(self, seed: int | None = None) -> None:
        self.rules: list[FaultRule] = []
        self.seed = seed
        self._rng = random.Random(seed)  # noqa: S311 - reproducibility, not security
        self.fired: dict[str, int] = {}

    def configure(
        self, rules: Iterable[FaultRule], seed: int | None = None, append: bool = False
    ) -> None:
        if not append:
            self.rules = []
        self.rules.extend(rules)
        if seed is not None or not append:
            self.seed = seed
            self._rng = random.Random(seed)  # noqa: S311

    def add(self, rule: FaultRule) -> None:
        self.rules.append(rule)

    def clear(self) -> None:
        self.rules = []
        self.fired = {}

    def pick(self, path: str, realm_id: str | None) -> FaultRule | None:
        """Return the rule to apply to this request, consuming one ``times``."""
        for rule in list(self.rules):
            if rule.path_contains is not None and rule.path_contains not in path:
                continue
            if rule.realm_id is not None and rule.realm_id != realm_id:
                continue
            if rule.times is not None and rule.times <= 0:
                continue
            if rule.probability is not None and self._rng.random() >= rule.probability:
                continue
            if rule.times is not None:
                rule.times -= 1
                if rule.times == 0:
                    self.rules.remove(rule)
            self.fired[rule.kind] = self.fired.get(rule.kind, 0) + 1
            return rule
        return None
