"""Keyset pages of one owner's rows, newest first, read through the owner's (owner, id) index."""

from __future__ import annotations

from typing import TypeVar

from tortoise.models import Model
from tortoise.queryset import QuerySet

M = TypeVar("M", bound=Model)


def owners_newest(
    query: QuerySet[M], column: str, owner: int, before_id: int | None, size: int
) -> QuerySet[M]:
    """`query` narrowed to the rows of `owner` (in `column`) older than `before_id`, newest
    first, at most `size` of them.

    Asked for `column = X ORDER BY id DESC LIMIT n`, PostgreSQL may walk the primary key
    backwards past everyone else's rows to reach X's (its plan when X holds a good share of
    the table), however old X's newest row is. Here the owner is a range of one value, which
    the planner does not fold into a constant, and the order is the (column, id) index's own
    two columns (the same order, the owner being fixed): only that index gives it unsorted.
    """
    query = query.filter(**{f"{column}__gte": owner, f"{column}__lte": owner})
    if before_id is not None:
        query = query.filter(id__lt=before_id)
    return query.order_by(f"-{column}", "-id").limit(size)
