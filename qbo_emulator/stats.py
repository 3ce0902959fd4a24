"""Call counters, so tests can assert on traffic ("exactly one refresh")."""

from __future__ import annotations

from collections import Counter
from typing import Any

UNKNOWN_REALM = "unknown"


class Stats:
    """Per-realm request counts by endpoint, token-endpoint calls by grant, 429s, faults."""

    def __init__(self) -> None:
        self.requests: dict[str, Counter[str]] = {}
        self.token_calls: dict[str, Counter[str]] = {}
        self.throttled: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        #: ``minorversion`` values clients sent ("missing" when absent); all are served.
        self.minor_versions: Counter[str] = Counter()

    def record_request(self, realm_id: str | None, endpoint: str) -> None:
        self.requests.setdefault(realm_id or UNKNOWN_REALM, Counter())[endpoint] += 1

    def record_token_call(self, realm_id: str | None, kind: str) -> None:
        """``kind``: authorization_code, refresh_token, revoke, or invalid."""
        self.token_calls.setdefault(realm_id or UNKNOWN_REALM, Counter())[kind] += 1

    def record_throttled(self, realm_id: str) -> None:
        self.throttled[realm_id] += 1

    def record_minor_version(self, asked: str | None) -> None:
        self.minor_versions["missing" if asked is None else asked] += 1

    def record_fault(self, kind: str) -> None:
        self.faults[kind] += 1

    def request_count(self, realm_id: str, endpoint: str | None = None) -> int:
        counts = self.requests.get(realm_id, Counter())
        return counts.total() if endpoint is None else counts[endpoint]

    def token_call_count(self, realm_id: str | None = None, kind: str | None = None) -> int:
        """Token-endpoint calls for one realm (or all), optionally of one kind."""
        realms = (
            self.token_calls.values()
            if realm_id is None
            else [self.token_calls.get(realm_id, Counter())]
        )
        return sum(c.total() if kind is None else c[kind] for c in realms)

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    def to_dict(self) -> dict[str, Any]:
        realms = set(self.requests) | set(self.token_calls) | set(self.throttled)
        return {
            "realms": {
                realm: {
                    "requests": self.request_count(realm),
                    "endpoints": dict(self.requests.get(realm, Counter())),
                    "throttled": self.throttled[realm],
                    "token_calls": {
                        **dict(self.token_calls.get(realm, Counter())),
                        "total": self.token_call_count(realm),
                    },
                }
                for realm in sorted(realms)
            },
            "token_calls_total": self.token_call_count(),
            "faults": dict(self.faults),
            "minor_versions": dict(self.minor_versions),
        }
