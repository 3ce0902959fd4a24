"""Credentials both services check: bearer tokens, and when development secrets may be used.

Outside `ENVIRONMENT=local` every secret must be configured: a service refuses to start on a
default, because the defaults are published (they are in this repository). `local` uses them,
but only on a loopback address, so a development process is never reachable with them.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import SecretStr

from services.common.settings import Settings


class InsecureConfiguration(RuntimeError):
    """A service would run with published secrets where someone else could reach it."""


def _digest(token: str) -> bytes:
    # Comparing fixed-length digests keeps the comparison time independent of the token length.
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True)
class BearerTokens:
    """The accepted bearer tokens, kept only as digests."""

    _digests: tuple[bytes, ...]

    @classmethod
    def of(cls, tokens: Iterable[str]) -> BearerTokens:
        digests = tuple(_digest(t) for t in tokens if t)
        if not digests:
            raise ValueError("at least one token is required")
        return cls(digests)

    def __repr__(self) -> str:
        return f"BearerTokens(<{len(self._digests)} tokens>)"

    def accepts(self, presented: str | None) -> bool:
        """Constant-time check of `presented` against every token (no early exit)."""
        if not presented:
            return False
        candidate = _digest(presented)
        accepted = False
        for known in self._digests:
            accepted |= hmac.compare_digest(candidate, known)
        return accepted


def parse_tokens(raw: str) -> list[str]:
    """`"a, b,,c"` -> `["a", "b", "c"]` (several, so a new token can be rolled out first)."""
    return [part.strip() for part in raw.split(",") if part.strip()]


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


def development_secret(purpose: str) -> bytes:
    """A stable, public secret for local development (so `make run` survives restarts)."""
    return hashlib.sha256(f"qbo-sync local development {purpose}".encode()).digest()


def _plain(value: object) -> object:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def published_defaults(settings: Settings, fields: Iterable[str]) -> list[str]:
    """The environment variables among `fields` still at their default, which is public."""
    published = []
    for name in fields:
        default = Settings.model_fields[name].default
        if _plain(getattr(settings, name)) == _plain(default):
            published.append(name.upper())
    return published


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def require_own_secrets(settings: Settings, fields: Iterable[str], host: str | None) -> None:
    """Refuse published secrets outside `local`, and in `local` off loopback.

    `host` is the address the service binds (None when it serves no port of its own).
    """
    published = published_defaults(settings, fields)
    if not published:
        return
    names = ", ".join(published)
    if settings.environment != "local":
        raise InsecureConfiguration(
            f"{names} must be configured outside local development "
            f"(ENVIRONMENT={settings.environment})"
        )
    if host is not None and not is_loopback(host):
        raise InsecureConfiguration(
            f"ENVIRONMENT=local uses the published development values of {names}, which is "
            f"only allowed on a loopback address, not {host}: configure them or bind 127.0.0.1"
        )
