"""On PostgreSQL an owner's page (a holder's ledger entries, a merchant's redemptions) is read
from that owner's own index entries, however many rows others wrote since: a query ordered by id
walked the whole table backwards past everyone else's rows to reach the newest of an owner with
many old ones."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from app.db import dialect
from app.ledger.queries import entries_page
from mall.redemptions import redemptions_page

pytestmark = pytest.mark.usefixtures("database")

_ENTRIES = """
INSERT INTO ledger_entry (account_id, transfer_id, asset, kind, amount, balance_after, memo,
    created_at)
SELECT $1 + n % $2, n, 'POINTS', 'CONVERSION', 1, n, '', now() FROM generate_series(1, $3) AS n
"""
_REDEMPTIONS = """
INSERT INTO mall_redemption (right_id, merchant_id, participant_id, quantity, unit_price,
    points_spent, voucher_code, status, created_at)
SELECT 1, $1 + n % $2, n, 1, 1, 1, $4 || n, 'USED', now() FROM generate_series(1, $3) AS n
"""
_QUIET = -1_000_002  # ids no real owner has (the rows are rolled back)


class _RolledBack(Exception):
    """Raised to roll back the test's rows, which nothing else stands behind."""


async def _plans(caplog: Any, conn: BaseDBAsyncClient, read: Callable[[], Awaitable[list]]) -> list[str]:
    """The plans of every SELECT `read` runs, after checking it gave a full page newest first."""
    with caplog.at_level(logging.DEBUG, logger="tortoise.db_client"):
        page = await read()
    assert len(page) == 21 and [r.id for r in page] == sorted((r.id for r in page), reverse=True)
    reads = [r.args for r in caplog.records if r.name == "tortoise.db_client"
             and str(r.args[0]).lstrip().upper().startswith("SELECT")]
    assert reads
    plans = []
    for sql, values in reads:
        _, rows = await conn.execute_query("EXPLAIN " + sql, values)
        plans.append("\n".join(r[0] for r in rows))
    return plans


async def _with_skew(
    caplog: Any, fill: list[tuple[str, list]], read: Callable[[], Awaitable[list]]
) -> list[str]:
    """The plans of `read` once `fill` wrote its rows and the statistics saw them; all rolled back."""
    if dialect() != "postgres":
        pytest.skip("the plan is PostgreSQL's")
    plans: list[str] = []
    with pytest.raises(_RolledBack):
        async with in_transaction() as conn:
            for sql, params in fill:
                await conn.execute_query(sql, params)
            await conn.execute_query("ANALYZE")
            plans = await _plans(caplog, conn, read)
            raise _RolledBack()
    return plans


async def test_a_holders_ledger_page_is_read_from_their_own_index_entries(caplog):
    # The holder's, long ago: many on one account (a tenth of the table, as one busy holder can
    # be), few on the other; then everyone else's.
    plans = await _with_skew(caplog, [
        (_ENTRIES, [_QUIET, 1, 20_000]), (_ENTRIES, [_QUIET + 1, 1, 30]),
        (_ENTRIES, [1_000_000_000, 50_000, 200_000]),
    ], lambda: entries_page([_QUIET, _QUIET + 1], 20, None))
    for plan in plans:
        assert "ledger_entry_pkey" not in plan, plan  # not a walk of the whole ledger by id


async def test_a_merchants_redemptions_page_is_read_from_its_own_index_entries(caplog):
    # A merchant with a tenth of all redemptions, none lately; then everyone else's.
    plans = await _with_skew(caplog, [
        (_REDEMPTIONS, [_QUIET, 1, 20_000, "pq"]), (_REDEMPTIONS, [1_000_000_000, 5_000, 200_000, "pn"]),
    ], lambda: redemptions_page(20, None, merchant_id=_QUIET))
    for plan in plans:
        assert "mall_redemption_pkey" not in plan, plan
