"""On PostgreSQL a holder's ledger page is read from that holder's own index entries, however
many entries others wrote since: a query ordered by id walked the whole ledger backwards past
everyone else's entries to reach the newest of a holder with many old ones."""

from __future__ import annotations

import logging

import pytest
from tortoise.transactions import in_transaction

from app.db import dialect
from app.ledger.queries import entries_page

pytestmark = pytest.mark.usefixtures("database")

_ENTRIES = """
INSERT INTO ledger_entry (account_id, transfer_id, asset, kind, amount, balance_after, memo,
    created_at)
SELECT $1 + n % $2, n, 'POINTS', 'CONVERSION', 1, n, '', now() FROM generate_series(1, $3) AS n
"""
_QUIET = -1_000_002  # two account ids no real account has (the rows are rolled back)


class _RolledBack(Exception):
    """Raised to roll back the test's entries, which no transfer stands behind."""


async def test_a_quiet_holders_page_is_read_from_their_own_index_entries(caplog):
    if dialect() != "postgres":
        pytest.skip("the plan is PostgreSQL's")
    plans = []
    with pytest.raises(_RolledBack):
        async with in_transaction() as conn:
            # The holder's, long ago: many on one account (a tenth of the table, as one busy
            # holder can be), few on the other; then everyone else's.
            await conn.execute_query(_ENTRIES, [_QUIET, 1, 20_000])
            await conn.execute_query(_ENTRIES, [_QUIET + 1, 1, 30])
            await conn.execute_query(_ENTRIES, [1_000_000_000, 50_000, 200_000])
            await conn.execute_query("ANALYZE ledger_entry")
            with caplog.at_level(logging.DEBUG, logger="tortoise.db_client"):
                page = await entries_page([_QUIET, _QUIET + 1], 20, None)
            assert len(page) == 21 and [e.id for e in page] == sorted((e.id for e in page), reverse=True)
            reads = [r.args for r in caplog.records if r.name == "tortoise.db_client"
                     and str(r.args[0]).lstrip().upper().startswith("SELECT")]
            assert reads
            for sql, values in reads:
                _, rows = await conn.execute_query("EXPLAIN " + sql, values)
                plans.append("\n".join(r[0] for r in rows))
            raise _RolledBack()
    for plan in plans:
        assert "ledger_entry_pkey" not in plan, plan  # not a walk of the whole ledger by id
