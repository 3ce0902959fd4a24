"""Rendered invoice listings, kept while the customer's read model has not changed.

A listing costs two reads of the customer's invoices (the page, sorted, and the totals); on
FerretDB v1 both decode every invoice of the customer, whatever the page size. The projector
gives a customer a new `revision` (in `read_customers`) after every batch that touched one of
its invoices, so a listing rendered under revision R is still exact while R is current. The
revision is read before the invoices, so a listing can only be filed under a revision that is
as old as or older than what it shows. An age limit bounds what a projector crash between its
writes and its revision bump could leave (docs/design.md, "Read model").
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

MAX_ENTRIES = 512
MAX_AGE_S = 30.0
MAX_BODY = 1024 * 1024  # a listing of 200 invoices is far below; larger ones are not kept


class ListingCache:
    """Least-recently-used listings of this process, each valid for one customer revision."""

    def __init__(
        self,
        max_entries: int = MAX_ENTRIES,
        max_age_s: float = MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._entries: OrderedDict[tuple[str, ...], tuple[str, float, bytes]] = OrderedDict()
        self._max_entries = max_entries
        self._max_age_s = max_age_s
        self._clock = clock
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[str, ...], revision: str | None) -> bytes | None:
        entry = self._entries.get(key)
        if (
            entry is None
            or revision is None
            or entry[0] != revision
            or self._clock() - entry[1] > self._max_age_s
        ):
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[2]

    def put(self, key: tuple[str, ...], revision: str | None, body: bytes) -> None:
        """File `body`, rendered from reads made after `revision` was read. Nothing is kept
        without a revision (a customer the projector never stamped: an older read model)."""
        if revision is None or len(body) > MAX_BODY or not self._max_entries:
            return
        self._entries[key] = (revision, self._clock(), body)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
