"""Reading the ledger: a holder's entries, newest first, by keyset."""

from __future__ import annotations

import heapq

from app.ledger.models import Entry


async def entries_page(account_ids: list[int], first: int, before_id: int | None) -> list[Entry]:
    """Up to `first + 1` entries of these accounts, newest first, older than `before_id`.

    Each account is read on its own (its (account_id, id) index, newest first, at most `first
    + 1` rows) and the pages merged: one query over all of them ordered by id may walk the whole
    ledger backwards past everyone else's entries to find a quiet holder's.
    """
    pages = []
    for account_id in account_ids:
        query = Entry.filter(account_id=account_id)
        if before_id is not None:
            query = query.filter(id__lt=before_id)
        pages.append(await query.order_by("-id").limit(first + 1))
    return list(heapq.merge(*pages, key=lambda e: e.id, reverse=True))[: first + 1]
