"""Reading the ledger: a holder's entries, newest first, by keyset."""

from __future__ import annotations

from app.ledger.models import Entry


async def entries_page(account_ids: list[int], first: int, before_id: int | None) -> list[Entry]:
    """Up to `first + 1` entries of these accounts, newest first, older than `before_id`."""
    query = Entry.filter(account_id__in=account_ids)
    if before_id is not None:
        query = query.filter(id__lt=before_id)
    return await query.order_by("-id").limit(first + 1)
