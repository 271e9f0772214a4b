"""Posting transfers: one conditional update per account in a fixed order, lots, both entries."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import Subquery

from app.db import dialect
from app.errors import (
    InsufficientPoints,
    InsufficientReductions,
    InvalidInput,
    InvalidState,
    NotEligible,
)
from app.ledger.models import (
    Account,
    AccountKind,
    Asset,
    EntryKind,
    Lot,
    LotHolding,
)
from app.sql import execute, fetch, insert_rows
from app.units import BIGINT_MAX


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
_META_LIMIT = 500_000  # above accounts.HOLDER_CACHE_SIZE: a kept holder id keeps its details


def note_account(account_id: int, asset: str, kind: str, individual: bool) -> None:
    """Remember what the ledger needs of a committed account read elsewhere (saves a query)."""
    if len(_meta) >= _META_LIMIT:
        _meta.clear()
    _meta[account_id] = _Meta(asset, kind, individual)


async def _account_meta(conn: BaseDBAsyncClient, ids: set[int]) -> dict[int, _Meta]:
    """Asset, kind and owner class of each account; none ever changes, so kept per process."""
    found = {i: _meta[i] for i in ids if i in _meta}
    missing = [i for i in ids if i not in found]
    if missing:
        rows = await conn.execute_query_dict(
            "SELECT a.id AS id, a.asset AS asset, a.kind AS kind, p.kind AS owner"
            " FROM ledger_account a LEFT JOIN participant p ON p.id = a.participant_id"
            f" WHERE a.id IN ({', '.join(str(int(i)) for i in missing)})"
        )
        # SQLite hands a rolled-back row's id to the next insert: an account read here may be
        # this transaction's own and never committed, so only PostgreSQL's ids are kept.
        keep = dialect() == "postgres"
        for r in rows:
            found[r["id"]] = _Meta(r["asset"], r["kind"], r["owner"] == "individual")
            if keep:
                note_account(r["id"], r["asset"], r["kind"], r["owner"] == "individual")
    if len(found) != len(ids):
        raise InvalidInput("Unknown ledger account.")
    return found


_ADD_TO_HOLDING = (  # the tail of a multi-row insert into ledger_lot_holding
    " ON CONFLICT (account_id, lot_id)"
    " DO UPDATE SET balance = ledger_lot_holding.balance + EXCLUDED.balance"
)
_TAKE_FROM_HOLDING = """
UPDATE ledger_lot_holding SET balance = balance - $1 WHERE account_id = $2 AND lot_id = $3
"""
# Every parameter cast to bigint (CAST, which SQLite reads too): left to infer, PostgreSQL types
# $1 from `$1 <= 0` as a 32-bit integer, and a change past 2^31 could not even be sent.
_APPLY = """
UPDATE ledger_account
SET balance = balance + CAST($1 AS BIGINT), pending = pending - CAST($2 AS BIGINT)
WHERE id = CAST($3 AS BIGINT) AND pending >= CAST($2 AS BIGINT)
  AND (kind = 'issuance' OR balance + CAST($4 AS BIGINT) >= pending - CAST($2 AS BIGINT))
  AND (CAST($1 AS BIGINT) <= 0 OR balance <= 9223372036854775807 - CAST($1 AS BIGINT))
  AND (CAST($1 AS BIGINT) >= 0 OR balance >= -9223372036854775807 - CAST($1 AS BIGINT))
RETURNING balance
"""
_TRANSFER_COLUMNS = (
    "asset", "kind", "debit_account_id", "credit_account_id", "amount", "reference", "memo",
    "reverses_id", "created_at",
)
_ENTRY_COLUMNS = (
    "account_id", "transfer_id", "asset", "kind", "amount", "balance_after", "memo", "created_at",
)


async def _apply(conn: BaseDBAsyncClient, postings: Sequence[Posting], account_id: int,
                 change: int, released: int, lowest: int) -> int:
    """Change one account's balance by `change` (and release its pending) if, at its lowest
    point along the postings (`lowest`, the smallest running change), it stays valid; its
    new balance."""
    params = [change, released, account_id, lowest]
    rows = await fetch(_APPLY, params, conn)
    if not rows:
        await _refuse(conn, postings, account_id, lowest, change)
    return int(rows[0]["balance"])


async def _take_lots(conn: BaseDBAsyncClient, posting: Posting, account_id: int) -> list[tuple[int, int]]:
    """Draw the posting's grams from the account's lots and take them from its holdings."""
    lots = await _draw_lots(conn, posting, account_id)
    for lot_id, amount in lots:
        await execute(_TAKE_FROM_HOLDING, [amount, account_id, lot_id], conn)
    return lots


async def post(
    conn: BaseDBAsyncClient,
    postings: Sequence[Posting],
    now: datetime | None = None,
    before_shared: Callable[[], Awaitable[object]] | None = None,
) -> list[Posted]:
    """Post transfers inside `conn`'s transaction; raise (the caller rolls back) if one fails.

    Each account changes by one conditional `balance = balance + delta` (refused when a holder
    account would go below its pending holds), which also locks its row. Lock order, the same
    in every transaction so none can deadlock: residents' accounts first, in id order; then the
    shared accounts (organisations' accounts, the conversion reserve, the issuance, retired and
    burned accounts) in id order, after the transfers are written, so a hot shared account (the
    reserve, a merchant's pool, the issuance accounts) stays locked only from its update to the
    commit. Grams are drawn from a debited account's lots, oldest first, once its row is locked.
    `before_shared` is awaited just before the first shared account is changed (a HotRows turn).
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
    delta: dict[int, int] = {}
    lowest: dict[int, int] = {}  # the smallest running change of each account along the postings
    released: dict[int, int] = {}
    for p in postings:
        if meta[p.debit].asset != p.asset or meta[p.credit].asset != p.asset:
            raise InvalidInput("Both accounts of a transfer must hold its asset.")
        issued = meta[p.debit].kind == AccountKind.ISSUANCE and p.asset == Asset.REDUCTION_GRAMS
        if issued and (not p.lots or sum(a for _, a in p.lots) != p.amount):
            raise InvalidInput("Issued grams must name their lots.")
        delta[p.debit] = delta.get(p.debit, 0) - p.amount
        lowest[p.debit] = min(lowest.get(p.debit, 0), delta[p.debit])
        delta[p.credit] = delta.get(p.credit, 0) + p.amount
        lowest.setdefault(p.credit, 0)
        if delta[p.debit] < -BIGINT_MAX or delta[p.credit] > BIGINT_MAX:
            raise balance_limit()
        released[p.debit] = released.get(p.debit, 0) + p.release_pending
    personal = sorted(a for a in delta if meta[a].individual)
    shared = sorted(a for a in delta if not meta[a].individual)

    final: dict[int, int] = {}
    lots_of: list[list[tuple[int, int]]] = [[] for _ in postings]
    # Residents' accounts: changed (and so locked) first, then their grams drawn from lots.
    for account_id in personal:
        final[account_id] = await _apply(conn, postings, account_id, delta[account_id],
                                         released.get(account_id, 0), lowest[account_id])
    for index, p in enumerate(postings):
        if p.asset == Asset.REDUCTION_GRAMS and meta[p.debit].individual:
            lots_of[index] = await _take_lots(conn, p, p.debit)
    rows = [(p.asset.value, p.kind.value, p.debit, p.credit, p.amount, p.reference[:96],
             p.memo[:256], p.reverses_id, now) for p in postings]
    returned = await insert_rows(conn, "ledger_transfer", _TRANSFER_COLUMNS, rows, " RETURNING id")
    # Ids come from the sequence in row order; RETURNING's own order is not promised.
    transfer_ids = sorted(int(r["id"]) for r in returned)

    # Shared accounts last, in id order; then their grams, and the lots each credit receives.
    if shared and before_shared is not None:
        await before_shared()
    for account_id in shared:
        final[account_id] = await _apply(conn, postings, account_id, delta[account_id],
                                         released.get(account_id, 0), lowest[account_id])
    for index, p in enumerate(postings):
        if p.asset != Asset.REDUCTION_GRAMS or meta[p.debit].individual:
            continue
        if meta[p.debit].kind == AccountKind.ISSUANCE:
            lots_of[index] = list(p.lots or ())
        else:
            lots_of[index] = await _take_lots(conn, p, p.debit)
    received: dict[tuple[int, int], int] = {}
    for p, lots in zip(postings, lots_of, strict=True):
        if meta[p.credit].kind != AccountKind.ISSUANCE:
            for lot_id, amount in lots:
                received[(p.credit, lot_id)] = received.get((p.credit, lot_id), 0) + amount
    holdings = [(account_id, lot_id, amount) for (account_id, lot_id), amount in sorted(received.items())]
    await insert_rows(conn, "ledger_lot_holding", ("account_id", "lot_id", "balance"), holdings,
                      _ADD_TO_HOLDING)

    # Entries with the balance after each one: replayed from where each account started.
    running = {a: final[a] - delta[a] for a in delta}
    entries: list[tuple[object, ...]] = []
    transfer_lots: list[tuple[int, int, int]] = []
    posted: list[Posted] = []
    for p, lots, transfer_id in zip(postings, lots_of, transfer_ids, strict=True):
        running[p.debit] -= p.amount
        running[p.credit] += p.amount
        for account_id, signed in ((p.debit, -p.amount), (p.credit, p.amount)):
            entries.append((account_id, transfer_id, p.asset.value, p.kind.value, signed,
                            running[account_id], p.memo[:256], now))
        transfer_lots.extend((transfer_id, lot_id, amount) for lot_id, amount in lots)
        posted.append(Posted(transfer_id, running[p.debit], running[p.credit], lots))
    await insert_rows(conn, "ledger_entry", _ENTRY_COLUMNS, entries)
    await insert_rows(conn, "ledger_transfer_lot", ("transfer_id", "lot_id", "amount"), transfer_lots)
    return posted


def balance_limit() -> InvalidState:
    """The refusal of a movement that would take an account past the largest balance it holds."""
    return InvalidState("This would take an account past the largest balance it can hold "
                        f"({BIGINT_MAX} units); move less at a time.")


async def _refuse(
    conn: BaseDBAsyncClient, postings: Sequence[Posting], account_id: int, change: int, total: int
) -> None:
    """Raise the refusal for an account whose conditional update matched no row (`change`: its
    lowest running change along the postings; `total`: its whole change)."""
    row = await Account.get(id=account_id).using_db(conn)
    if not -BIGINT_MAX <= row.balance + total <= BIGINT_MAX:
        raise balance_limit()
    asset = Asset(row.asset)
    wanted = sum(p.release_pending for p in postings if p.debit == account_id)
    if wanted > row.pending:
        raise InvalidInput("Cannot release more than the pending hold.")
    available = row.balance - (row.pending - wanted)
    raise _shortfall(asset, max(available, 0), -change)


class HotRows:
    """A per-process queue in front of shared rows every transaction of a kind writes last
    (the conversion reserve and points issuance, say). A transaction does its own rows in
    parallel with the others and takes its turn only just before the shared ones, keeping it
    until it has ended: the rows' holder never waits behind this process's other transactions
    for the event loop or a pooled connection, and the next one is ready to go."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[Callable[[], Awaitable[object]]]:
        """Yield the function that takes the turn; the turn, if taken, is given back on exit
        (enter it before the transaction, so the commit comes first)."""
        taken = False

        async def take() -> None:
            nonlocal taken
            if not taken:
                await self._lock.acquire()
                taken = True

        try:
            yield take
        finally:
            if taken:
                self._lock.release()


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
