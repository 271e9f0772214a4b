"""Reading the ledger: a holder's entries, newest first, by keyset."""

from __future__ import annotations

import heapq

from app.ledger.models import Entry


async def entries_page(account_ids: list[int], first: int, before_id: int | None) -> list[Entry]:
    """Up to `first + 1` entries of these accounts, newest first, older than `before_id`.

    Each account is read on its own through its (account_id, id) index, newest first, at most
    `first + 1` rows, and the pages merged. Asked for `account_id = X ORDER BY id`, PostgreSQL
    may instead walk the whole ledger backwards by id past everyone else's entries (its plan
    for an account holding a good share of them). Here the account is a range of one value,
    which the planner does not fold into a constant, and the order is the index's own two
    columns (the same order, the account being fixed): only that index gives it without a sort.
    """
    pages = []
    for account_id in account_ids:
        query = Entry.filter(account_id__gte=account_id, account_id__lte=account_id)
        if before_id is not None:
            query = query.filter(id__lt=before_id)
        pages.append(await query.order_by("-account_id", "-id").limit(first + 1))
    return list(heapq.merge(*pages, key=lambda e: e.id, reverse=True))[: first + 1]
