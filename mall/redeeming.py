"""RedeemRight, the flash-sale path: the stock gate, then redemptions of a right committed in groups.

1. The stock gate (`mall.stock_gate`) takes the quantity in the store: a sold-out right is
   refused there, so losers never reach the database.
2. The requests that passed join their right's lane in this process. At most
   TRANSACTIONS_PER_RIGHT transactions per right run at a time (they all wait on the same rows,
   so more connections only lengthen the lock queue); each takes the requests waiting (up to
   GROUP_SIZE, one per person) and commits them together. The right's hot rows, the merchant
   pool and the stock, are then locked once per group instead of once per redemption: that
   lock is what limits a flash sale.
3. In a group every redemption is still its own: its idempotency key, its tally row, its
   resident account, its voucher, its ledger transfer. Requests that look refusable as things
   stand (short of points, at the per-person limit, below the credit grade; read before the
   transaction) and keys used before are done alone, to replay or refuse them. If anything
   else in the group is refused, the group is rolled back and each redemption is done alone,
   so every answer is exactly the one it would get alone.
4. A transaction: the idempotency claims (with the voucher codes, drawn in advance); the right
   and its merchant (read just before) checked (on sale now, stock, per-person limit); the
   per-person tallies raised with one conditional upsert; the redemptions written. Then the hot
   rows, last, so their locks are held for the shortest time: the ledger posting (locks the
   residents' accounts, adds to the merchant pool in its final statement) and the conditional
   stock UPDATE (`stock_remaining >= quantity`) just before the commit.
5. After commit, in a task of its own (a slow store never holds the lane): a refused request's
   token goes back to the gate (a replayed one's too, unless its twin redeemed with its stock),
   then every request gets its answer, then the account-change notices and credit refreshes
   are queued (app.coalesce). Taking a token marked the request's key in the store already, so
   a retry goes past a sold-out gate to its replay. This is done by the lane, so it holds even
   when the client has gone; at shutdown `finish_lanes` lets the groups under way finish.

Every path that touches these rows takes them in one order: redemption row, tally row, the
resident account, the merchant pool, the right (see mall.redemptions for refunds).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from app.auth import Principal
from app.errors import DomainError, InsufficientPoints, NotEligible, NotFound
from app.events import account_changed
from app.idempotency import check_key, claim, claim_new, claimed
from app.ledger.accounts import holder_account_id
from app.ledger.models import Account, Asset, EntryKind
from app.ledger.posting import Posting, post
from app.participants import resident_id
from app.sql import fetch, insert_rows
from mall import stock_gate
from mall.errors import OutOfStock, PerPersonLimit
from mall.models import Merchant, Redemption, RedemptionStatus, RedemptionTally, Right
from mall.redemptions import Redeemed, Written
from mall.rules import check_quantity, check_redeemable, new_voucher_code
from points.credit import current_grade, grade_at_least, refresh_credit_many

log = logging.getLogger(__name__)

TRANSACTIONS_PER_RIGHT = 2
GROUP_SIZE = 64

_RIGHT_AND_MERCHANT = (
    "SELECT "
    + ", ".join(f"r.{c} AS r_{c}" for c in Right._meta.db_fields)
    + ", "
    + ", ".join(f"m.{c} AS m_{c}" for c in Merchant._meta.db_fields)
    + " FROM mall_right r JOIN mall_merchant m ON m.id = r.merchant_id WHERE r.id = $1"
)
_REDEMPTION_COLUMNS = (
    "right_id", "merchant_id", "participant_id", "quantity", "unit_price", "points_spent",
    "voucher_code", "status", "expires_at", "created_at",
)
_RETURNING_REDEMPTION = f" RETURNING {', '.join(Redemption._meta.db_fields)}"
_TALLY_COLUMNS = ("right_id", "participant_id", "quantity")
_RAISE_TALLY = (
    " ON CONFLICT (right_id, participant_id) DO UPDATE"
    " SET quantity = mall_redemption_tally.quantity + excluded.quantity"
    " WHERE mall_redemption_tally.quantity + excluded.quantity"
    " <= (SELECT per_person_limit FROM mall_right WHERE id = excluded.right_id)"
    " RETURNING participant_id"
)
_TAKE_STOCK = (
    "UPDATE mall_right SET stock_remaining = stock_remaining - $1"
    " WHERE id = $2 AND stock_remaining >= $1 RETURNING stock_remaining"
)


def _scope(subject: str) -> str:
    """The idempotency scope of a resident's redemptions."""
    return f"redeem:{subject}"


@dataclass
class _Ask:
    """One resident's request waiting in a lane, and where its answer goes."""

    subject: str
    participant_id: int
    quantity: int
    key: str
    gate: stock_gate.Gate
    asked_at: datetime
    # A replay of a redemption made after this request was sent: by a request of the same key
    # sent at the same time, which went past the gate without a token, since only one request
    # per key takes one. That redemption used the stock this request's token holds.
    token_used_by_twin: bool = False
    answer: asyncio.Future[Redeemed] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    @property
    def scope(self) -> str:
        """The idempotency scope of the resident's redemptions."""
        return _scope(self.subject)


@dataclass
class _Lane:
    """The requests for one right waiting in this process, and its transactions running."""

    waiting: list[_Ask] = field(default_factory=list)
    running: int = 0

    def next_group(self) -> list[_Ask]:
        """Up to GROUP_SIZE waiting requests, oldest first, at most one per person; a power of
        two of them, so a group's statements come in a few shapes the connections keep prepared."""
        group: list[_Ask] = []
        people: set[int] = set()
        for ask in self.waiting:
            if len(group) == GROUP_SIZE:
                break
            if ask.participant_id not in people:
                group.append(ask)
                people.add(ask.participant_id)
        del group[1 << (len(group).bit_length() - 1):]
        taken = {id(ask) for ask in group}
        self.waiting = [ask for ask in self.waiting if id(ask) not in taken]
        return group


_lanes: dict[int, _Lane] = {}
_running: set[asyncio.Task[None]] = set()


async def redeem(principal: Principal, right_id: int, quantity: int, idempotency_key: str) -> Redeemed:
    """A resident redeems `quantity` of a right with points; a voucher is issued."""
    principal.require("resident")
    check_quantity(quantity)
    key = check_key(idempotency_key)
    asked_at = datetime.now(UTC)
    gate = await stock_gate.take(right_id, quantity, principal.subject, key)
    if gate is stock_gate.Gate.SOLD_OUT_UNSURE:
        # The store lost its data: the database replays a key that redeemed (even one whose
        # first request is still in flight) and refuses the others as sold out.
        gate = stock_gate.Gate.PASS
    elif gate is stock_gate.Gate.SOLD_OUT_RECENT and await claimed(_scope(principal.subject), key):
        # The key redeemed before and the store lost its mark: past the gate, the lane replays
        # the first result.
        gate = stock_gate.Gate.PASS
    elif gate in (stock_gate.Gate.SOLD_OUT, stock_gate.Gate.SOLD_OUT_RECENT):
        raise OutOfStock(
            "This right is sold out." if quantity == 1 else f"Fewer than {quantity} left.", "quantity")
    try:
        participant_id = await resident_id(principal)
    except BaseException:
        if gate is stock_gate.Gate.TOKEN:
            await stock_gate.put_back(right_id, quantity)
        raise
    ask = _Ask(principal.subject, participant_id, quantity, key, gate, asked_at)
    lane = _lanes.setdefault(right_id, _Lane())
    lane.waiting.append(ask)
    if lane.running < TRANSACTIONS_PER_RIGHT:
        lane.running += 1
        task = asyncio.get_running_loop().create_task(_drain(right_id, lane))
        _running.add(task)
        task.add_done_callback(_running.discard)
    # The lane answers even when this request is cancelled (the client went away).
    return await asyncio.shield(ask.answer)


async def finish_lanes() -> None:
    """At shutdown: let the groups under way commit and deliver their answers, so that their
    after-commit work is queued before the queues are flushed."""
    while _running:
        await asyncio.gather(*list(_running), return_exceptions=True)


async def _drain(right_id: int, lane: _Lane) -> None:
    """Run groups of the lane's waiting requests until none is left."""
    try:
        while lane.waiting:
            group = lane.next_group()
            try:
                await _settle(right_id, group)
            except BaseException:  # this task was cancelled (shutdown): no answer is coming
                _cancel(group)
                raise
    finally:
        lane.running -= 1
        if not lane.running:
            _cancel(lane.waiting)  # empty, unless this task was cancelled
            if _lanes.get(right_id) is lane:
                del _lanes[right_id]


def _cancel(asks: list[_Ask]) -> None:
    for ask in asks:
        if not ask.answer.done():
            ask.answer.cancel()


Outcome = tuple[Redeemed, int | None] | Exception


async def _settle(right_id: int, group: list[_Ask]) -> None:
    """Redeem a group together where it can be, the others alone; then deliver the answers in a
    task of their own, so the lane goes on with its next group meanwhile."""
    outcomes: dict[int, Outcome] = {}
    alone = group
    if len(group) > 1:
        try:
            done, alone = await _together(right_id, group)
            outcomes.update({id(ask): (redeemed, pool) for ask, redeemed, pool in done})
        except DomainError:
            pass  # some redemption would be refused: each is done alone, for its own answer
        except Exception:
            log.warning("a group of %d redemptions of right %s failed; each is retried alone",
                        len(group), right_id, exc_info=True)
    for ask in alone:
        try:
            outcomes[id(ask)] = await _alone(right_id, ask)
        except Exception as exc:  # noqa: BLE001 - the request gets it, as it would without the lane
            outcomes[id(ask)] = exc
    task = asyncio.get_running_loop().create_task(_deliver(right_id, group, outcomes))
    _running.add(task)
    task.add_done_callback(_running.discard)


async def _deliver(right_id: int, group: list[_Ask], outcomes: dict[int, Outcome]) -> None:
    """The gate's bookkeeping, then each request's answer, then the queued after-commit work
    (a slow store delays these answers, never the lane)."""
    try:
        await asyncio.gather(*(_tell_gate(right_id, ask, outcomes[id(ask)]) for ask in group))
    finally:
        for ask in group:
            outcome = outcomes[id(ask)]
            if ask.answer.done():
                continue
            if isinstance(outcome, Exception):
                ask.answer.set_exception(outcome)
            else:
                ask.answer.set_result(outcome[0])
    fresh = [(ask.participant_id, outcome[1]) for ask in group
             if not isinstance(outcome := outcomes[id(ask)], Exception) and outcome[1] is not None]
    if fresh:
        await account_changed([pid for pair in fresh for pid in pair])
        await refresh_credit_many(pid for pid, _ in fresh)


async def _tell_gate(right_id: int, ask: _Ask, outcome: Outcome) -> None:
    """Give a refused or replayed request's token back (unless a twin of the same key used its
    stock); mark a fresh redemption made without a token for replay (taking a token marked it)."""
    fresh = not isinstance(outcome, Exception) and outcome[1] is not None
    if fresh and ask.gate is stock_gate.Gate.PASS:
        await stock_gate.mark_redeemed(ask.subject, ask.key)
    elif not fresh and ask.gate is stock_gate.Gate.TOKEN and not ask.token_used_by_twin:
        await stock_gate.put_back(right_id, ask.quantity)


async def _right_and_merchant(conn: BaseDBAsyncClient | None, right_id: int) -> tuple[Right, Merchant]:
    """A right and its merchant, read in one statement (rows built as the ORM builds them)."""
    rows = await fetch(_RIGHT_AND_MERCHANT, [right_id], conn)
    if not rows:
        raise NotFound("No such right.", "rightId")
    row = rows[0]
    right = Right._init_from_db(**{c: row[f"r_{c}"] for c in Right._meta.db_fields})
    merchant = Merchant._init_from_db(**{c: row[f"m_{c}"] for c in Merchant._meta.db_fields})
    return right, merchant


def _check(right: Right, merchant: Merchant, asks: list[_Ask], now: datetime) -> None:
    """Raise the refusal due to any of `asks` (all of the same right) before anything is written;
    the credit grade is checked apart (`_grade_short`)."""
    check_redeemable(merchant.status, right.paused, right.valid_from, right.valid_until, now)
    wanted = sum(ask.quantity for ask in asks)
    if right.stock_remaining < wanted:
        raise OutOfStock(f"Only {right.stock_remaining} left.", "quantity")
    if any(ask.quantity > right.per_person_limit for ask in asks):
        raise PerPersonLimit(f"At most {right.per_person_limit} of this right per person.", "quantity")


async def _grade_short(right: Right, ask: _Ask) -> bool:
    """True when the right asks for a credit grade the resident does not have."""
    return bool(right.min_credit_grade) and not grade_at_least(
        await current_grade(ask.participant_id), right.min_credit_grade
    )


def _not_eligible(right: Right) -> NotEligible:
    return NotEligible(f"This right needs credit grade {right.min_credit_grade} or above.", "rightId")


async def _points_accounts(people: list[int]) -> dict[int, tuple[int, int]]:
    """Each person's points account and the points available in it, in one query."""
    rows = await Account.filter(participant_id__in=people, asset=Asset.POINTS.value).values_list(
        "participant_id", "id", "balance", "pending"
    )
    return {pid: (account, balance - pending) for pid, account, balance, pending in rows}


async def _likely_refused(right: Right, group: list[_Ask], points: dict[int, tuple[int, int]]) -> set[int]:
    """The requests of a group that its checks would refuse as things stand (short of points,
    at the per-person limit, below the credit grade), read outside any transaction: they are
    done alone, for their own answers, so that they do not send the whole group alone."""
    held = dict(await RedemptionTally.filter(
        right_id=right.id, participant_id__in=[ask.participant_id for ask in group]
    ).values_list("participant_id", "quantity"))
    refused = set()
    for ask in group:
        _, available = points.get(ask.participant_id, (0, 0))
        if (available < right.points_price * ask.quantity
                or held.get(ask.participant_id, 0) + ask.quantity > right.per_person_limit
                or await _grade_short(right, ask)):
            refused.add(id(ask))
    return refused


async def _write(
    conn: BaseDBAsyncClient, right: Right, merchant: Merchant, asks: list[_Ask], codes: list[str],
    accounts: dict[int, int], now: datetime,
) -> list[Redemption]:
    """Tallies, redemptions, the points (from each person's points account in `accounts`) and
    the stock of checked `asks`; the redemptions in order."""
    limit = int(right.per_person_limit)
    tallies = await insert_rows(conn, "mall_redemption_tally", _TALLY_COLUMNS,
                                [(right.id, ask.participant_id, ask.quantity) for ask in asks],
                                _RAISE_TALLY)
    if len(tallies) != len(asks):
        raise PerPersonLimit(f"At most {limit} of this right per person.", "quantity")
    rows = [(right.id, merchant.id, ask.participant_id, ask.quantity, right.points_price,
             right.points_price * ask.quantity, code, RedemptionStatus.ISSUED.value, right.valid_until, now)
            for ask, code in zip(asks, codes, strict=True)]
    written = await insert_rows(conn, "mall_redemption", _REDEMPTION_COLUMNS, rows, _RETURNING_REDEMPTION)
    by_code = {row["voucher_code"]: Redemption._init_from_db(**row) for row in written}
    redemptions = [by_code[code] for code in codes]
    # The hot rows come last: the ledger changes the residents' accounts, then the merchant
    # pool in its final statement; then the right's stock, just before the commit.
    pool = await holder_account_id(merchant.participant_id, Asset.POINTS)
    postings = [
        Posting(Asset.POINTS, accounts[ask.participant_id], pool,
                r.points_spent, EntryKind.REDEMPTION, f"redemption:{r.id}",
                f"{ask.quantity} x {right.title}"[:256])
        for ask, r in zip(asks, redemptions, strict=True)
    ]
    try:
        await post(conn, postings, now=now)
    except InsufficientPoints as exc:
        raise InsufficientPoints(exc.message, "quantity") from None
    taken = await fetch(_TAKE_STOCK, [sum(ask.quantity for ask in asks), right.id], conn)
    if not taken:
        raise OutOfStock("This right is sold out.", "quantity")
    right.stock_remaining = int(taken[0]["stock_remaining"])
    return redemptions


async def _together(right_id: int, group: list[_Ask]) -> tuple[list[tuple[_Ask, Redeemed, int]], list[_Ask]]:
    """One transaction redeeming the requests of `group` whose keys are new and that look
    redeemable; what it redeemed and the requests left to do alone. Raises the first refusal of
    any it took. The right and its merchant are read again inside, so a pause, a new price or
    window, or the merchant's suspension committed meanwhile holds for the group as for one
    request alone (a right's credit grade is fixed when it is listed)."""
    seen, _ = await _right_and_merchant(None, right_id)
    points = await _points_accounts([ask.participant_id for ask in group])
    refused = await _likely_refused(seen, group, points)
    candidates = [ask for ask in group if id(ask) not in refused]
    codes = {id(ask): new_voucher_code() for ask in candidates}
    now = datetime.now(UTC)
    fresh: set[tuple[str, str]] = set()
    asks: list[_Ask] = []
    if len(candidates) > 1:
        async with in_transaction() as conn:
            # Rows are taken in key order and then in person order, the same in every group, so
            # two groups (of two processes) that share a person wait for each other, never deadlock.
            fresh = await claim_new(
                sorted(((ask.scope, ask.key, {"rightId": right_id, "quantity": ask.quantity},
                         {"voucher_code": codes[id(ask)]}) for ask in candidates),
                       key=lambda claim: (claim[0], claim[1])),
                conn,
            )
            asks = sorted((ask for ask in candidates if (ask.scope, ask.key) in fresh),
                          key=lambda ask: ask.participant_id)
            if asks:
                right, merchant = await _right_and_merchant(conn, right_id)
                _check(right, merchant, asks, now)
                accounts = {ask.participant_id: points[ask.participant_id][0] for ask in asks}
                redemptions = await _write(conn, right, merchant, asks, [codes[id(a)] for a in asks],
                                           accounts, now)
    alone = [ask for ask in group if (ask.scope, ask.key) not in fresh]
    done = [(ask, Redeemed(r.id, ask.participant_id, Written(r, right, merchant)), merchant.participant_id)
            for ask, r in zip(asks, redemptions, strict=True)] if asks else []
    return done, alone


async def _alone(right_id: int, ask: _Ask) -> tuple[Redeemed, int | None]:
    """One redemption in its own transaction; the merchant's participant id when fresh, None on
    a replay."""
    account = await holder_account_id(ask.participant_id, Asset.POINTS)
    code = new_voucher_code()
    now = datetime.now(UTC)
    async with in_transaction() as conn:
        claimed = await claim(ask.scope, ask.key, {"rightId": right_id, "quantity": ask.quantity}, conn,
                              result={"voucher_code": code})
        if not claimed.replay:
            right, merchant = await _right_and_merchant(conn, right_id)
            _check(right, merchant, [ask], now)
            if await _grade_short(right, ask):
                raise _not_eligible(right)
            [redemption] = await _write(conn, right, merchant, [ask], [code],
                                        {ask.participant_id: account}, now)
            return Redeemed(redemption.id, ask.participant_id, Written(redemption, right, merchant)), \
                merchant.participant_id
    first = claimed.result
    if "redemption_id" in first:  # claimed before voucher codes were drawn in advance
        return Redeemed(int(first["redemption_id"]), ask.participant_id), None
    redemption = await Redemption.get(voucher_code=first["voucher_code"])
    ask.token_used_by_twin = redemption.created_at >= ask.asked_at
    return Redeemed(redemption.id, ask.participant_id), None
