"""Posting transfers: lock accounts in id order, check balances, move lots, write both entries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import F, Subquery

from app.errors import InsufficientPoints, InsufficientReductions, InvalidInput, NotEligible
from app.ledger.models import (
    Account,
    AccountKind,
    Asset,
    Entry,
    EntryKind,
    Lot,
    LotHolding,
    Transfer,
    TransferLot,
)


@dataclass(frozen=True)
class Posting:
    """One transfer to post: `amount` of `asset` from `debit` to `credit` account ids."""

    asset: Asset
    debit: int
    credit: int
    amount: int
    kind: EntryKind
    reference: str
    memo: str = ""
    lots: tuple[tuple[int, int], ...] | None = None
    lot_class: str | None = None
    release_pending: int = 0
    reverses_id: int | None = None


@dataclass
class Posted:
    """What a posting became: its transfer id, balances after, and the lots it drew on."""

    transfer_id: int
    debit_balance_after: int
    credit_balance_after: int
    lots: list[tuple[int, int]] = field(default_factory=list)


def _shortfall(asset: Asset, available: int, wanted: int) -> Exception:
    if asset == Asset.POINTS:
        return InsufficientPoints(f"Only {available} points are available; {wanted} needed.")
    return InsufficientReductions(f"Only {available} g are available; {wanted} g needed.")


async def lock_accounts(conn: BaseDBAsyncClient, ids: Sequence[int]) -> dict[int, Account]:
    """Lock accounts FOR UPDATE in ascending id order and return them by id."""
    unique = sorted(set(ids))
    rows = (
        await Account.filter(id__in=unique).order_by("id").select_for_update().using_db(conn)
    )
    found = {row.id: row for row in rows}
    if len(found) != len(unique):
        raise InvalidInput("Unknown ledger account.")
    return found


async def _draw_lots(
    conn: BaseDBAsyncClient, posting: Posting, account: Account
) -> list[tuple[int, int]]:
    """Pick lots from the debit account, oldest first (or as given), within its holdings."""
    query = LotHolding.filter(account_id=account.id, balance__gt=0)
    if posting.lot_class is not None:
        lot_ids = Lot.filter(methodology_class=posting.lot_class).values("id")
        query = query.filter(lot_id__in=Subquery(lot_ids))
    holdings = await query.order_by("lot_id").using_db(conn).values_list("lot_id", "balance")
    held = dict(holdings)
    if posting.lots is not None:
        for lot_id, amount in posting.lots:
            if held.get(lot_id, 0) < amount:
                raise _shortfall(posting.asset, held.get(lot_id, 0), amount)
        return list(posting.lots)
    remaining = posting.amount
    drawn: list[tuple[int, int]] = []
    for lot_id, balance in holdings:
        take = min(balance, remaining)
        drawn.append((lot_id, take))
        remaining -= take
        if remaining == 0:
            return drawn
    total = sum(held.values())
    if posting.lot_class is not None:
        raise NotEligible(
            f"Only {total} g of class {posting.lot_class} reductions are held; "
            f"{posting.amount} g needed."
        )
    raise _shortfall(posting.asset, total, posting.amount)


async def _move_lots(
    conn: BaseDBAsyncClient, debit: Account, credit: Account, lots: list[tuple[int, int]]
) -> None:
    for lot_id, amount in lots:
        if debit.kind != AccountKind.ISSUANCE:
            await LotHolding.filter(account_id=debit.id, lot_id=lot_id).using_db(conn).update(
                balance=F("balance") - amount
            )
        if credit.kind != AccountKind.ISSUANCE:
            updated = await (
                LotHolding.filter(account_id=credit.id, lot_id=lot_id)
                .using_db(conn)
                .update(balance=F("balance") + amount)
            )
            if not updated:
                await LotHolding.create(
                    account_id=credit.id, lot_id=lot_id, balance=amount, using_db=conn
                )


async def post(
    conn: BaseDBAsyncClient, postings: Sequence[Posting], now: datetime | None = None
) -> list[Posted]:
    """Post transfers inside `conn`'s transaction; raise before writing anything if one fails."""
    if not postings:
        return []
    now = now or datetime.now(UTC)
    for p in postings:
        if p.amount <= 0:
            raise InvalidInput("A transfer amount must be positive.")
        if p.debit == p.credit:
            raise InvalidInput("A transfer needs two different accounts.")
    accounts = await lock_accounts(conn, [a for p in postings for a in (p.debit, p.credit)])
    balance = {a.id: a.balance for a in accounts.values()}
    pending = {a.id: a.pending for a in accounts.values()}

    plans: list[tuple[Posting, list[tuple[int, int]], int, int]] = []
    for p in postings:
        debit, credit = accounts[p.debit], accounts[p.credit]
        if debit.asset != p.asset or credit.asset != p.asset:
            raise InvalidInput("Both accounts of a transfer must hold its asset.")
        if p.release_pending:
            if p.release_pending > pending[debit.id]:
                raise InvalidInput("Cannot release more than the pending hold.")
            pending[debit.id] -= p.release_pending
        if debit.kind != AccountKind.ISSUANCE:
            available = balance[debit.id] - pending[debit.id]
            if available < p.amount:
                raise _shortfall(p.asset, max(available, 0), p.amount)
        lots: list[tuple[int, int]] = []
        if p.asset == Asset.REDUCTION_GRAMS:
            if debit.kind == AccountKind.ISSUANCE:
                if not p.lots or sum(a for _, a in p.lots) != p.amount:
                    raise InvalidInput("Issued grams must name their lots.")
                lots = list(p.lots)
            else:
                lots = await _draw_lots(conn, p, debit)
        balance[debit.id] -= p.amount
        balance[credit.id] += p.amount
        plans.append((p, lots, balance[debit.id], balance[credit.id]))

    posted: list[Posted] = []
    entries: list[Entry] = []
    transfer_lots: list[TransferLot] = []
    for p, lots, debit_after, credit_after in plans:
        transfer = await Transfer.create(
            asset=p.asset.value,
            kind=p.kind.value,
            debit_account_id=p.debit,
            credit_account_id=p.credit,
            amount=p.amount,
            reference=p.reference[:96],
            memo=p.memo[:256],
            reverses_id=p.reverses_id,
            created_at=now,
            using_db=conn,
        )
        sides = ((p.debit, -p.amount, debit_after), (p.credit, p.amount, credit_after))
        for account_id, signed, after in sides:
            entries.append(
                Entry(
                    account_id=account_id,
                    transfer_id=transfer.id,
                    asset=p.asset.value,
                    kind=p.kind.value,
                    amount=signed,
                    balance_after=after,
                    memo=p.memo[:256],
                    created_at=now,
                )
            )
        transfer_lots.extend(
            TransferLot(transfer_id=transfer.id, lot_id=lot_id, amount=amount)
            for lot_id, amount in lots
        )
        if lots:
            await _move_lots(conn, accounts[p.debit], accounts[p.credit], lots)
        posted.append(Posted(transfer.id, debit_after, credit_after, lots))

    await Entry.bulk_create(entries, using_db=conn)
    if transfer_lots:
        await TransferLot.bulk_create(transfer_lots, using_db=conn)
    for account_id in accounts:
        if balance[account_id] != accounts[account_id].balance or pending[account_id] != accounts[
            account_id
        ].pending:
            await Account.filter(id=account_id).using_db(conn).update(
                balance=balance[account_id], pending=pending[account_id]
            )
    return posted


async def hold(conn: BaseDBAsyncClient, account_id: int, amount: int) -> int:
    """Reserve `amount` of an account's available balance as pending; return the new pending."""
    if amount <= 0:
        raise InvalidInput("A hold must be positive.")
    account = (await lock_accounts(conn, [account_id]))[account_id]
    available = account.balance - account.pending
    if available < amount:
        raise _shortfall(Asset(account.asset), max(available, 0), amount)
    await Account.filter(id=account_id).using_db(conn).update(pending=account.pending + amount)
    return account.pending + amount


async def release(conn: BaseDBAsyncClient, account_id: int, amount: int) -> int:
    """Void `amount` of an account's pending hold; return the new pending."""
    account = (await lock_accounts(conn, [account_id]))[account_id]
    if not 0 < amount <= account.pending:
        raise InvalidInput("Cannot release more than the pending hold.")
    await Account.filter(id=account_id).using_db(conn).update(pending=account.pending - amount)
    return account.pending - amount
