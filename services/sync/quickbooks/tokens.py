"""The contract between the QBO client and whatever owns OAuth tokens.

Intuit access tokens live one hour and refresh tokens rotate on every refresh,
so two concurrent refreshes for the same realm can invalidate each other. The
token source therefore owns refresh and must make it single-flight per realm;
the client only reports the token that was rejected.
"""

from __future__ import annotations

from typing import Protocol


class TokenSource(Protocol):
    """Supplies bearer tokens per realm."""

    async def access_token(self, realm_id: str) -> str:
        """Return a currently valid access token (refreshing first if it has expired).

        Raises ``ReauthRequired`` if the refresh token is no longer accepted.
        """
        ...

    async def refresh_after_401(self, realm_id: str, rejected: str) -> str:
        """Return a fresh token after Intuit rejected ``rejected``.

        Must be single-flight per realm: if another caller already replaced
        ``rejected``, return the newer token without refreshing again. Raises
        ``ReauthRequired`` on ``invalid_grant``.
        """
        ...
