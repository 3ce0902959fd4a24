"""Prove that freshly granted tokens belong to the realm the callback named.

Intuit's redirect carries `realmId` as a plain query parameter: a user who consents for their
own company can edit it to another company's id. The tokens, though, are bound to the company
that was consented to, and Intuit answers 403 when they are used for any other. So before
anything is stored, the new access token reads that realm's CompanyInfo: only the right company
answers.
"""

from __future__ import annotations

from collections.abc import Callable

from services.sync.oauth.intuit import TokenGrant
from services.sync.quickbooks.client import QboClient
from services.sync.quickbooks.errors import QboError, QboRequestError
from services.sync.quickbooks.tokens import TokenSource


class RealmNotProven(Exception):
    """The new tokens do not open the named realm (another company's id, most likely)."""


class QboUnreachable(Exception):
    """QuickBooks could not answer the proof read; the user may simply try again."""


class _FreshGrant:
    """The `TokenSource` of a grant not stored yet: its one access token, no refresh."""

    def __init__(self, realm_id: str, grant: TokenGrant) -> None:
        self._realm_id = realm_id
        self._token = grant.access_token

    async def access_token(self, realm_id: str) -> str:
        if realm_id != self._realm_id:
            raise RealmNotProven(f"the new tokens were not issued for realm {realm_id}")
        return self._token

    async def refresh_after_401(self, realm_id: str, rejected: str) -> str:
        # A token Intuit issued a moment ago and refuses now proves nothing; do not refresh.
        raise RealmNotProven("Intuit refused the new access token")


class RealmProof:
    def __init__(self, client_for: Callable[[TokenSource], QboClient]) -> None:
        self._client_for = client_for

    async def check(self, realm_id: str, grant: TokenGrant) -> str:
        """The company's name, if `grant` opens `realm_id`; `RealmNotProven` otherwise."""
        client = self._client_for(_FreshGrant(realm_id, grant))
        try:
            info = await client.read(realm_id, "CompanyInfo", realm_id)
        except QboRequestError as exc:
            # 403 (ApplicationAuthorizationFailed, code 3100) for another company's id; any
            # other refusal of a read of the company's own record proves nothing either.
            raise RealmNotProven(f"QuickBooks refused the company read ({exc})") from None
        except QboError as exc:
            raise QboUnreachable(str(exc)) from None
        name = info.get("CompanyName")
        return name if isinstance(name, str) else ""
