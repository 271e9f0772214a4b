"""Issuing one lot to many holders at once: exactly what `post()` writes, set-based on PostgreSQL.

For each credit (account, grams), in ascending account order, one ISSUANCE transfer from the
grams issuance account, its two entries with their balances after (the issuance account's
running balance on the debit side), its transfer-lot row, the holder's lot holding and the
new account balances. On SQLite the postings go through `post()` itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from app.db import dialect
from app.errors import InvalidInput
from app.ledger.accounts import SystemAccount, holder_account_id, system_account_id
from app.ledger.models import AccountKind, Asset, EntryKind, Lot, LotHolding
from app.ledger.posting import Posting, balance_limit, post
from app.units import BIGINT_MAX

_ISSUE = """
WITH c AS (
    SELECT u.account_id, u.amount, u.ord
    FROM unnest($1::bigint[], $2::bigint[]) WITH ORDINALITY AS u(account_id, amount, ord)
),
t AS (
    INSERT INTO ledger_transfer (asset, kind, debit_account_id, credit_account_id, amount,
                                 reference, memo, reverses_id, created_at)
    SELECT 'REDUCTION_GRAMS', $3, $4, account_id, amount, $5, $6, NULL, $7 FROM c ORDER BY ord
    RETURNING id, credit_account_id, amount
),
tr AS (
    SELECT t.id, t.credit_account_id, t.amount, SUM(t.amount) OVER (ORDER BY t.id) AS running
    FROM t
),
e AS (
    INSERT INTO ledger_entry (account_id, transfer_id, asset, kind, amount, balance_after, memo,
                              created_at)
    SELECT x.account_id, x.transfer_id, 'REDUCTION_GRAMS', $3, x.amount, x.balance_after, $6, $7
    FROM (
        SELECT tr.id AS transfer_id, 0 AS side, $4::bigint AS account_id, -tr.amount AS amount,
               $8::bigint - tr.running AS balance_after
        FROM tr
        UNION ALL
        SELECT tr.id, 1, tr.credit_account_id, tr.amount, a.balance + tr.amount
        FROM tr JOIN ledger_account a ON a.id = tr.credit_account_id
    ) x
    ORDER BY x.transfer_id, x.side
),
tl AS (
    INSERT INTO ledger_transfer_lot (transfer_id, lot_id, amount)
    SELECT id, $9, amount FROM tr ORDER BY id
),
h AS (
    INSERT INTO ledger_lot_holding (account_id, lot_id, balance)
    SELECT credit_account_id, $9, amount FROM tr ORDER BY credit_account_id
),
ua AS (
    UPDATE ledger_account a SET balance = a.balance + c.amount FROM c WHERE a.id = c.account_id
)
UPDATE ledger_account SET balance = balance - $10 WHERE id = $4
"""

# In post()'s lock order, so that an issuance and a posting can never deadlock:
# residents' accounts first, then the shared ones (organisations' and the issuance account),
# each group in ascending id order; without building a model per account.
_LOCK = """
SELECT a.id, a.asset, a.kind, a.balance FROM ledger_account a
LEFT JOIN participant p ON p.id = a.participant_id
WHERE a.id = ANY($1::bigint[]) AND (p.kind IS NOT DISTINCT FROM 'individual') = $2
ORDER BY a.id FOR UPDATE OF a
"""

_ACCOUNTS = """
SELECT participant_id, id FROM ledger_account
WHERE asset = $2 AND participant_id = ANY($1::bigint[])
"""

_OPEN_ACCOUNTS = """
INSERT INTO ledger_account (asset, kind, participant_id, code, balance, pending)
SELECT $2, 'holder', p, NULL, 0, 0 FROM unnest($1::bigint[]) AS p
ON CONFLICT (participant_id, asset) DO NOTHING
"""


async def holder_accounts(
    conn: BaseDBAsyncClient, participant_ids: Iterable[int], asset: Asset
) -> dict[int, int]:
    """Account ids of `asset` for many participants, opening the missing ones."""
    wanted = sorted(set(participant_ids))
    if dialect() != "postgres":
        return {pid: await holder_account_id(pid, asset) for pid in wanted}
    async with conn.acquire_connection() as raw:
        found = {r["participant_id"]: r["id"] for r in await raw.fetch(_ACCOUNTS, wanted, asset.value)}
        missing = [pid for pid in wanted if pid not in found]
        if missing:  # most holders have their accounts already: open only the others
            await raw.execute(_OPEN_ACCOUNTS, missing, asset.value)
            rows = await raw.fetch(_ACCOUNTS, missing, asset.value)
            found.update((r["participant_id"], r["id"]) for r in rows)
    return found


async def issue_lot(
    conn: BaseDBAsyncClient,
    lot_id: int,
    credits: Sequence[tuple[int, int]],
    reference: str,
    memo: str = "",
    now: datetime | None = None,
) -> None:
    """Credit each (account id, grams) its grams of a new lot, inside `conn`'s transaction.

    The grams must add up to the lot's issued grams; each account appears once; the lot has no
    holder yet (so each holding is a plain insert).
    """
    now = now or datetime.now(UTC)
    ordered = sorted(credits)
    accounts = [a for a, _ in ordered]
    amounts = [g for _, g in ordered]
    if len(set(accounts)) != len(accounts) or any(g <= 0 for g in amounts):
        raise InvalidInput("Each account is credited once, with a positive amount.")
    lot = await Lot.filter(id=lot_id).using_db(conn).only("id", "issued_grams").first()
    total = sum(amounts)
    if lot is None or lot.issued_grams != total:
        raise InvalidInput("The credits must add up to the lot's issued grams.")
    if await LotHolding.filter(lot_id=lot_id).using_db(conn).exists():
        raise InvalidInput("The lot has already been issued.")
    issuance = await system_account_id(SystemAccount.GRAMS_ISSUANCE)
    if dialect() != "postgres":
        await post(conn, [_posting(issuance, a, g, lot_id, reference, memo) for a, g in ordered], now)
        return
    async with conn.acquire_connection() as raw:
        # Compiling the statement (JIT) would cost more than running it; its sorts of a row per
        # entry stay in memory.
        await raw.execute("SET LOCAL jit = off; SET LOCAL work_mem = '64MB'")
        personal = await raw.fetch(_LOCK, accounts, True)
        locked = {r["id"] for r in personal}
        shared = await raw.fetch(_LOCK, [a for a in [issuance, *accounts] if a not in locked], False)
        rows = [*personal, *shared]
        if len(rows) != len(accounts) + 1:
            raise InvalidInput("Unknown ledger account.")
        issuance_balance = _check_and_find(rows, issuance)
        credited = dict(ordered)
        if issuance_balance - total < -BIGINT_MAX or any(
            r["balance"] + credited[r["id"]] > BIGINT_MAX for r in rows if r["id"] in credited
        ):
            raise balance_limit()
        await raw.execute(
            _ISSUE,
            accounts,
            amounts,
            EntryKind.ISSUANCE.value,
            issuance,
            reference[:96],
            memo[:256],
            now,
            issuance_balance,
            lot_id,
            total,
        )


def _posting(issuance: int, account: int, grams: int, lot_id: int, reference: str, memo: str) -> Posting:
    return Posting(
        asset=Asset.REDUCTION_GRAMS,
        debit=issuance,
        credit=account,
        amount=grams,
        kind=EntryKind.ISSUANCE,
        reference=reference,
        memo=memo,
        lots=((lot_id, grams),),
    )


def _check_and_find(rows: Iterable[Any], issuance: int) -> int:
    """Check the locked accounts may take issued grams; the issuance account's balance."""
    balance = 0
    for row in rows:
        if row["asset"] != Asset.REDUCTION_GRAMS:
            raise InvalidInput("Both accounts of a transfer must hold its asset.")
        if row["id"] == issuance:
            balance = row["balance"]
        elif row["kind"] == AccountKind.ISSUANCE:
            raise InvalidInput("Issued grams go to holder accounts.")
    return balance
