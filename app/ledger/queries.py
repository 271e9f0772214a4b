"""Reading the ledger: a holder's entries, newest first, by keyset."""

from __future__ import annotations

import heapq

from app.keyset import owners_newest
from app.ledger.models import Entry


async def entries_page(account_ids: list[int], first: int, before_id: int | None) -> list[Entry]:
    """Up to `first + 1` entries of these accounts, newest first, older than `before_id`: each
    account's own newest (`owners_newest`, through its (account_id, id) index), merged."""
    pages = [await owners_newest(Entry.all(), "account_id", account_id, before_id, first + 1)
             for account_id in account_ids]
    return list(heapq.merge(*pages, key=lambda e: e.id, reverse=True))[: first + 1]
