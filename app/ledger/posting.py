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
from app.sql import for_dialect


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
    rows = await Account.filter(id__in=unique).order_by("id").select_for_update().using_db(conn)
    found = {row.id: row for row in rows}
    if len(found) != len(unique):
        raise InvalidInput("Unknown ledger account.")
    return found


async def _draw_lots(conn: BaseDBAsyncClient, posting: Posting, account_id: int) -> list[tuple[int, int]]:
    """Pick lots from the debit account, oldest first (or as given), within its holdings."""
    query = LotHolding.filter(account_id=account_id, balance__gt=0)
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
            f"Only {total} g of class {posting.lot_class} reductions are held; {posting.amount} g needed."
        )
    raise _shortfall(posting.asset, total, posting.amount)


@dataclass(frozen=True)
class _Meta:
    asset: str
    kind: str
    individual: bool


_meta: dict[int, _Meta] = {}
_META_LIMIT = 200_000


async def _account_meta(conn: BaseDBAsyncClient, ids: set[int]) -> dict[int, _Meta]:
    """Asset, kind and owner class of each account; none ever changes, so kept per process."""
    missing = [i for i in ids if i not in _meta]
    if missing:
        if len(_meta) > _META_LIMIT:
            _meta.clear()
        rows = await conn.execute_query_dict(
            "SELECT a.id AS id, a.asset AS asset, a.kind AS kind, p.kind AS owner"
            " FROM ledger_account a LEFT JOIN participant p ON p.id = a.participant_id"
            f" WHERE a.id IN ({', '.join(str(int(i)) for i in missing)})"
        )
        for r in rows:
            _meta[r["id"]] = _Meta(r["asset"], r["kind"], r["owner"] == "individual")
    if any(i not in _meta for i in ids):
        raise InvalidInput("Unknown ledger account.")
    return {i: _meta[i] for i in ids}


_ADD_TO_HOLDING = """
INSERT INTO ledger_lot_holding (account_id, lot_id, balance) VALUES ($1, $2, $3)
ON CONFLICT (account_id, lot_id) DO UPDATE SET balance = ledger_lot_holding.balance + EXCLUDED.balance
"""
_APPLY = """
UPDATE ledger_account SET balance = balance + $1, pending = pending - $2
WHERE id = $3 AND pending >= $2 AND (kind = 'issuance' OR balance + $1 >= pending - $2)
RETURNING balance
"""


async def post(
    conn: BaseDBAsyncClient, postings: Sequence[Posting], now: datetime | None = None
) -> list[Posted]:
    """Post transfers inside `conn`'s transaction; raise (the caller rolls back) if one fails.

    Lock order, the same in every transaction so none can deadlock: residents' accounts first,
    locked FOR UPDATE in id order and checked under the lock; then the shared accounts
    (organisations' accounts, the conversion reserve, the issuance, retired and burned accounts),
    each changed by one conditional `balance = balance + delta` in id order as the last writes.
    A hot shared account (the reserve, a merchant's pool, the issuance accounts) is so locked
    only from that statement to the commit, not for the whole transaction.
    """
    if not postings:
        return []
    now = now or datetime.now(UTC)
    for p in postings:
        if p.amount <= 0:
            raise InvalidInput("A transfer amount must be positive.")
        if p.debit == p.credit:
            raise InvalidInput("A transfer needs two different accounts.")
    meta = await _account_meta(conn, {a for p in postings for a in (p.debit, p.credit)})
    for p in postings:
        if meta[p.debit].asset != p.asset or meta[p.credit].asset != p.asset:
            raise InvalidInput("Both accounts of a transfer must hold its asset.")
    personal = sorted({a for p in postings for a in (p.debit, p.credit) if meta[a].individual})
    locked = await lock_accounts(conn, personal) if personal else {}
    balance = {a.id: a.balance for a in locked.values()}
    pending = {a.id: a.pending for a in locked.values()}
    delta: dict[int, int] = {}
    released: dict[int, int] = {}
    lots_of: list[list[tuple[int, int]]] = []

    for p in postings:
        lots: list[tuple[int, int]] = []
        if p.debit in locked:
            if p.release_pending:
                if p.release_pending > pending[p.debit]:
                    raise InvalidInput("Cannot release more than the pending hold.")
                pending[p.debit] -= p.release_pending
            available = balance[p.debit] - pending[p.debit]
            if available < p.amount:
                raise _shortfall(p.asset, max(available, 0), p.amount)
            if p.asset == Asset.REDUCTION_GRAMS:
                lots = await _draw_lots(conn, p, p.debit)
            balance[p.debit] -= p.amount
        else:
            if meta[p.debit].kind == AccountKind.ISSUANCE and p.asset == Asset.REDUCTION_GRAMS:
                if not p.lots or sum(a for _, a in p.lots) != p.amount:
                    raise InvalidInput("Issued grams must name their lots.")
                lots = list(p.lots)
            delta[p.debit] = delta.get(p.debit, 0) - p.amount
            released[p.debit] = released.get(p.debit, 0) + p.release_pending
        if p.credit in locked:
            balance[p.credit] += p.amount
        else:
            delta[p.credit] = delta.get(p.credit, 0) + p.amount
        lots_of.append(lots)

    # Residents' accounts: their new balances and lots, under the locks taken above.
    for account_id, row in locked.items():
        if (balance[account_id], pending[account_id]) != (row.balance, row.pending):
            await (
                Account.filter(id=account_id)
                .using_db(conn)
                .update(balance=balance[account_id], pending=pending[account_id])
            )
    transfers = [
        await Transfer.create(
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
        for p in postings
    ]
    for p, lots in zip(postings, lots_of, strict=True):
        for lot_id, amount in lots if p.debit in locked else ():
            await (
                LotHolding.filter(account_id=p.debit, lot_id=lot_id)
                .using_db(conn)
                .update(balance=F("balance") - amount)
            )

    # Shared accounts last, in id order: one conditional update each, then their lots.
    final: dict[int, int] = {}
    for account_id in sorted(delta):
        rows = await conn.execute_query_dict(
            *for_dialect(_APPLY, [delta[account_id], released.get(account_id, 0), account_id])
        )
        if not rows:
            await _refuse_shared(conn, postings, account_id, delta[account_id])
        final[account_id] = int(rows[0]["balance"])
    for index, p in enumerate(postings):
        if p.debit in delta and p.asset == Asset.REDUCTION_GRAMS and not lots_of[index]:
            lots_of[index] = await _draw_lots(conn, p, p.debit)
            for lot_id, amount in lots_of[index]:
                await (
                    LotHolding.filter(account_id=p.debit, lot_id=lot_id)
                    .using_db(conn)
                    .update(balance=F("balance") - amount)
                )
    for p, lots in zip(postings, lots_of, strict=True):
        if meta[p.credit].kind != AccountKind.ISSUANCE:
            for lot_id, amount in lots:
                await conn.execute_query(*for_dialect(_ADD_TO_HOLDING, [p.credit, lot_id, amount]))

    # balance_after: residents' accounts replay from the locked balance, shared ones back from
    # the balance their single update returned.
    running = {a.id: a.balance for a in locked.values()}
    later = dict(delta)
    posted: list[Posted] = []
    entries: list[Entry] = []
    transfer_lots: list[TransferLot] = []
    for p, lots, transfer in zip(postings, lots_of, transfers, strict=True):
        after: dict[int, int] = {}
        for account_id, signed in ((p.debit, -p.amount), (p.credit, p.amount)):
            if account_id in running:
                running[account_id] += signed
                after[account_id] = running[account_id]
            else:
                later[account_id] -= signed
                after[account_id] = final[account_id] - later[account_id]
            entries.append(
                Entry(
                    account_id=account_id,
                    transfer_id=transfer.id,
                    asset=p.asset.value,
                    kind=p.kind.value,
                    amount=signed,
                    balance_after=after[account_id],
                    memo=p.memo[:256],
                    created_at=now,
                )
            )
        transfer_lots.extend(
            TransferLot(transfer_id=transfer.id, lot_id=lot_id, amount=amount) for lot_id, amount in lots
        )
        posted.append(Posted(transfer.id, after[p.debit], after[p.credit], lots))
    await Entry.bulk_create(entries, using_db=conn)
    if transfer_lots:
        await TransferLot.bulk_create(transfer_lots, using_db=conn)
    return posted


async def _refuse_shared(
    conn: BaseDBAsyncClient, postings: Sequence[Posting], account_id: int, change: int
) -> None:
    """Raise the refusal for a shared account whose conditional update matched no row."""
    row = await Account.get(id=account_id).using_db(conn)
    asset = Asset(row.asset)
    wanted = sum(p.release_pending for p in postings if p.debit == account_id)
    if wanted > row.pending:
        raise InvalidInput("Cannot release more than the pending hold.")
    available = row.balance - (row.pending - wanted)
    raise _shortfall(asset, max(available, 0), -change)


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
