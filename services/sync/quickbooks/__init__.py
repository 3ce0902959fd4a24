"""Async client for the QuickBooks Online (QBO) Accounting API.

Only the read side the sync service needs: query (with paging), read by id and
change data capture (CDC), with Intuit's per-realm throttling limits enforced
locally and its retry/auth quirks handled in one place.
"""

from services.sync.quickbooks.budget import RealmBudget
from services.sync.quickbooks.client import DEFAULT_RETRY, QboClient, RetryPolicy
from services.sync.quickbooks.errors import (
    QboAuthError,
    QboError,
    QboRequestError,
    QboThrottled,
    QboUnavailable,
    ReauthRequired,
)
from services.sync.quickbooks.query import Select
from services.sync.quickbooks.tokens import TokenSource

__all__ = [
    "DEFAULT_RETRY",
    "QboAuthError",
    "QboClient",
    "QboError",
    "QboRequestError",
    "QboThrottled",
    "QboUnavailable",
    "RealmBudget",
    "ReauthRequired",
    "RetryPolicy",
    "Select",
    "TokenSource",
]
