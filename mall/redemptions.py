"""Redemptions: residents spend points on rights, cancel unused vouchers, merchants write them off.

RedeemRight is the flash-sale path. In order:
1. The stock gate (`mall.stock_gate`) takes the quantity in the store: a sold-out right is
   refused there, so losers never reach the database.
2. One transaction: the idempotency claim; the right and its merchant read and checked (on sale
   now, stock, per-person limit, credit grade, points); the per-person tally raised with one
   conditional upsert (row of this person and right only); the redemption and voucher written.
   Then the hot rows, last, so their locks are held for the shortest time: the ledger posting
   (locks the resident account, adds to the merchant pool in its final statement) and the
   conditional stock UPDATE (`stock_remaining >= quantity`) just before the commit.
3. After commit: the replay mark; the account-change notices and the credit refresh are queued
   (app.coalesce: done in batches, without holding up the answer). Any refusal or failure gives
   the gate its quantity back.

Every path that touches these rows takes them in one order: redemption row, tally row, the
resident account, the merchant pool, the right. A refund (cancel, expiry) moves points the
other way, so it locks the resident account itself before the ledger locks the pool: no two
paths ever wait on each other in opposite orders.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import F, Q
from tortoise.transactions import in_transaction

from app.auth import Principal
from app.errors import InsufficientPoints, InvalidInput, InvalidState, NotEligible, NotFound
from app.events import account_changed
from app.idempotency import check_key, claim
from app.ledger.accounts import holder_account_id
from app.ledger.models import Asset, EntryKind
from app.ledger.posting import Posting, lock_accounts, post
from app.participants import resident_id
from app.redis import get_store
from app.sql import fetch
from mall import stock_gate
from mall.errors import OutOfStock, PerPersonLimit, RateLimited
from mall.keys import store_key
from mall.merchants import own_merchant
from mall.models import Merchant, Redemption, RedemptionStatus, RedemptionTally, Right
from mall.rules import check_quantity, check_redeemable, new_voucher_code, parse_voucher
from points.credit import current_grade, grade_at_least, note_voucher_cancellation, refresh_credit

log = logging.getLogger(__name__)

# Voucher lookups (write-offs) per merchant per minute; more answer RATE_LIMITED.
LOOKUPS_PER_MINUTE = 120
EXPIRY_BATCH = 200
# Redemption transactions of one right in flight per process: they all wait on the same rows,
# so more connections only lengthen the lock queue (STACK-NOTES: few connections per hot item).
TRANSACTIONS_PER_RIGHT = 2
_queues: dict[int, asyncio.Semaphore] = {}

_TALLY_SQL = """
INSERT INTO mall_redemption_tally (right_id, participant_id, quantity) VALUES ($1, $2, $3)
ON CONFLICT (right_id, participant_id) DO UPDATE
SET quantity = mall_redemption_tally.quantity + excluded.quantity
WHERE mall_redemption_tally.quantity + excluded.quantity <= $4
RETURNING quantity
"""


@dataclass(frozen=True)
class Redeemed:
    """A redemption made (or replayed) for a resident; a fresh one carries the rows it wrote."""

    redemption_id: int
    participant_id: int
    redemption: Redemption | None = None
    right: Right | None = None
    merchant: Merchant | None = None


async def _raise_tally(
    conn: BaseDBAsyncClient, right_id: int, participant_id: int, quantity: int, limit: int
) -> None:
    """Count `quantity` more of this right for this person, within the limit, atomically."""
    rows = await fetch(_TALLY_SQL, [right_id, participant_id, quantity, limit], conn)
    if not rows:
        raise PerPersonLimit(f"At most {limit} of this right per person.", "quantity")


async def _notify(participant_id: int, pool_holder: int) -> None:
    """After a redemption commits: queue both accounts' notices and the credit refresh (done in
    batches by the after-commit queues, without holding up the answer)."""
    await account_changed([participant_id, pool_holder])
    await refresh_credit(participant_id)


def _queue(right_id: int) -> asyncio.Semaphore:
    """The per-process queue in front of one right's transactions (few connections per hot row)."""
    queue = _queues.get(right_id)
    if queue is None:
        queue = _queues[right_id] = asyncio.Semaphore(TRANSACTIONS_PER_RIGHT)
    return queue


async def redeem(principal: Principal, right_id: int, quantity: int, idempotency_key: str) -> Redeemed:
    """A resident redeems `quantity` of a right with points; a voucher is issued."""
    principal.require("resident")
    check_quantity(quantity)
    key = check_key(idempotency_key)
    gate = await stock_gate.take(right_id, quantity, principal.subject, key)
    if gate is stock_gate.Gate.SOLD_OUT:
        raise OutOfStock("This right is sold out.", "quantity")
    pool_holder: int | None = None
    try:
        participant_id = await resident_id(principal)
        async with _queue(right_id):
            result, pool_holder = await _redeem_in_db(
                principal.subject, participant_id, right_id, quantity, key
            )
    finally:
        if gate is stock_gate.Gate.TOKEN and pool_holder is None:
            await stock_gate.put_back(right_id, quantity)
    if pool_holder is not None:
        await stock_gate.mark_redeemed(principal.subject, key)
        await _notify(participant_id, pool_holder)
    return result


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
_INSERT_REDEMPTION = (
    f"INSERT INTO mall_redemption ({', '.join(_REDEMPTION_COLUMNS)})"
    f" VALUES ({', '.join(f'${n}' for n in range(1, len(_REDEMPTION_COLUMNS) + 1))})"
    f" RETURNING {', '.join(Redemption._meta.db_fields)}"
)
_TAKE_STOCK = (
    "UPDATE mall_right SET stock_remaining = stock_remaining - $1"
    " WHERE id = $2 AND stock_remaining >= $1 RETURNING stock_remaining"
)


async def _right_and_merchant(conn: BaseDBAsyncClient, right_id: int) -> tuple[Right, Merchant]:
    """A right and its merchant, read in one statement (rows built as the ORM builds them)."""
    rows = await fetch(_RIGHT_AND_MERCHANT, [right_id], conn)
    if not rows:
        raise NotFound("No such right.", "rightId")
    row = rows[0]
    right = Right._init_from_db(**{c: row[f"r_{c}"] for c in Right._meta.db_fields})
    merchant = Merchant._init_from_db(**{c: row[f"m_{c}"] for c in Merchant._meta.db_fields})
    return right, merchant


async def _redeem_in_db(
    subject: str, participant_id: int, right_id: int, quantity: int, key: str
) -> tuple[Redeemed, int | None]:
    """The redemption transaction; the merchant's participant id when fresh, None on a replay."""
    points_account = await holder_account_id(participant_id, Asset.POINTS)
    now = datetime.now(UTC)
    async with in_transaction() as conn:
        claimed = await claim(
            f"redeem:{subject}", key, {"rightId": right_id, "quantity": quantity}, conn
        )
        if claimed.replay:
            return Redeemed(int(claimed.result["redemption_id"]), participant_id), None
        right, merchant = await _right_and_merchant(conn, right_id)
        check_redeemable(merchant.status, right.paused, right.valid_from, right.valid_until, now)
        if right.stock_remaining < quantity:
            raise OutOfStock(f"Only {right.stock_remaining} left.", "quantity")
        if quantity > right.per_person_limit:
            raise PerPersonLimit(f"At most {right.per_person_limit} of this right per person.", "quantity")
        if right.min_credit_grade and not grade_at_least(
            await current_grade(participant_id), right.min_credit_grade
        ):
            raise NotEligible(f"This right needs credit grade {right.min_credit_grade} or above.", "rightId")
        cost = right.points_price * quantity
        await _raise_tally(conn, right_id, participant_id, quantity, right.per_person_limit)
        values = [right_id, merchant.id, participant_id, quantity, right.points_price, cost,
                  new_voucher_code(), RedemptionStatus.ISSUED.value, right.valid_until, now]
        [row] = await fetch(_INSERT_REDEMPTION, values, conn)
        redemption = Redemption._init_from_db(**row)
        await claimed.complete({"redemption_id": redemption.id}, conn)
        # The hot rows come last: the ledger changes the resident's account, then the merchant
        # pool in its final statement; then the right's stock, just before the commit.
        pool = await holder_account_id(merchant.participant_id, Asset.POINTS)
        try:
            await post(
                conn,
                [
                    Posting(
                        Asset.POINTS, points_account, pool, cost, EntryKind.REDEMPTION,
                        f"redemption:{redemption.id}", f"{quantity} x {right.title}"[:256],
                    )
                ],
                now=now,
            )
        except InsufficientPoints as exc:
            raise InsufficientPoints(exc.message, "quantity") from None
        taken = await fetch(_TAKE_STOCK, [quantity, right_id], conn)
        if not taken:
            raise OutOfStock("This right is sold out.", "quantity")
        right.stock_remaining = int(taken[0]["stock_remaining"])
    return Redeemed(redemption.id, participant_id, redemption, right, merchant), merchant.participant_id


async def _give_back(
    conn: BaseDBAsyncClient, redemption: Redemption, to: RedemptionStatus, now: datetime
) -> int | None:
    """Close an ISSUED redemption as `to`, restoring stock and limit and refunding the points;
    the merchant's participant id, or None when it was not ISSUED any more."""
    closed = await Redemption.filter(id=redemption.id, status=RedemptionStatus.ISSUED.value).using_db(
        conn
    ).update(status=to.value, closed_at=now)
    if not closed:
        return None
    await RedemptionTally.filter(
        right_id=redemption.right_id, participant_id=redemption.participant_id
    ).using_db(conn).update(quantity=F("quantity") - redemption.quantity)
    merchant_participant = (await Merchant.get(id=redemption.merchant_id).using_db(conn)).participant_id
    pool = await holder_account_id(merchant_participant, Asset.POINTS)
    points_account = await holder_account_id(redemption.participant_id, Asset.POINTS)
    # Same order as a redemption: the resident's account, then the pool, then the stock.
    await lock_accounts(conn, [points_account])
    try:
        await post(
            conn,
            [
                Posting(
                    Asset.POINTS, pool, points_account, redemption.points_spent, EntryKind.REFUND,
                    f"redemption:{redemption.id}", f"voucher {to.value.lower()}",
                )
            ],
            now=now,
        )
    except InsufficientPoints:
        raise InvalidState("The merchant pool cannot refund this voucher now; try again later.") from None
    await Right.filter(id=redemption.right_id).using_db(conn).update(
        stock_remaining=F("stock_remaining") + redemption.quantity
    )
    return merchant_participant


async def _after_give_back(redemption: Redemption, pool_holder: int | None) -> None:
    await stock_gate.put_back(redemption.right_id, redemption.quantity)
    await account_changed([redemption.participant_id, *([pool_holder] if pool_holder else [])])


async def cancel(principal: Principal, redemption_id: int, idempotency_key: str) -> Redeemed:
    """A resident cancels an unused voucher: points back, stock and limit restored."""
    principal.require("resident")
    participant_id = await resident_id(principal)
    await holder_account_id(participant_id, Asset.POINTS)
    now = datetime.now(UTC)
    async with in_transaction() as conn:
        claimed = await claim(
            f"cancel-redemption:{participant_id}", idempotency_key, {"redemptionId": redemption_id}, conn
        )
        if claimed.replay:
            return Redeemed(redemption_id, participant_id)
        redemption = await Redemption.filter(id=redemption_id).select_for_update().using_db(conn).first()
        if redemption is None or redemption.participant_id != participant_id:
            raise NotFound("No such redemption.", "redemptionId")
        if redemption.status != RedemptionStatus.ISSUED:
            raise InvalidState(
                f"Only an unused voucher can be cancelled; this one is {redemption.status}.",
                "redemptionId",
            )
        pool_holder = await _give_back(conn, redemption, RedemptionStatus.CANCELLED, now)
        await note_voucher_cancellation(participant_id, conn)
        await claimed.complete({"redemption_id": redemption_id}, conn)
    await _after_give_back(redemption, pool_holder)
    await refresh_credit(participant_id)
    return Redeemed(redemption_id, participant_id)


async def expire_due(now: datetime | None = None) -> int:
    """Expire and refund every unused voucher whose right's validity has ended; how many."""
    now = now or datetime.now(UTC)
    done = 0
    while True:
        due = await Redemption.filter(
            status=RedemptionStatus.ISSUED.value, expires_at__lte=now
        ).order_by("id").limit(EXPIRY_BATCH).values_list("id", flat=True)
        if not due:
            return done
        progressed = 0
        for redemption_id in due:
            try:
                async with in_transaction() as conn:
                    redemption = await Redemption.filter(id=redemption_id).select_for_update().using_db(
                        conn
                    ).first()
                    if redemption is None:
                        continue
                    pool_holder = await _give_back(conn, redemption, RedemptionStatus.EXPIRED, now)
                    if pool_holder is None:
                        continue
            except InvalidState:
                log.warning("voucher %s could not be refunded on expiry; will retry", redemption_id)
                continue
            progressed += 1
            await _after_give_back(redemption, pool_holder)
        done += progressed
        if not progressed:
            return done


async def _count_lookup(merchant_id: int) -> None:
    try:
        count = await get_store().incr(store_key("lookups", merchant_id), 1, ttl=60)
    except Exception:  # noqa: BLE001 - without the store, lookups are not limited
        log.warning("voucher lookup limiter unavailable")
        return
    if count > LOOKUPS_PER_MINUTE:
        raise RateLimited("Too many voucher lookups; wait a minute and try again.", "voucherCode")


async def write_off(principal: Principal, voucher_code: str) -> Redemption:
    """The merchant owning the right confirms a voucher was used (once)."""
    merchant = await own_merchant(principal)
    await _count_lookup(merchant.id)
    code = parse_voucher(voucher_code)
    if code is None:
        raise InvalidInput("This is not a voucher code (its check character does not match).", "voucherCode")
    redemption = await Redemption.filter(voucher_code=code).first()
    if redemption is None or redemption.merchant_id != merchant.id:
        raise NotFound("No such voucher.", "voucherCode")
    now = datetime.now(UTC)
    used = await Redemption.filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=now),
        id=redemption.id,
        status=RedemptionStatus.ISSUED.value,
    ).update(status=RedemptionStatus.USED.value, used_at=now)
    current = await Redemption.get(id=redemption.id)
    if not used:
        if current.status == RedemptionStatus.ISSUED:
            raise InvalidState("This voucher has expired.", "voucherCode")
        raise InvalidState(f"This voucher is {current.status}, not unused.", "voucherCode")
    return current


async def redemptions_page(
    first: int,
    before_id: int | None,
    *,
    participant_id: int | None = None,
    merchant_id: int | None = None,
) -> list[Redemption]:
    """Up to `first + 1` redemptions of a resident or of a merchant, newest first."""
    query = Redemption.all()
    if participant_id is not None:
        query = query.filter(participant_id=participant_id)
    if merchant_id is not None:
        query = query.filter(merchant_id=merchant_id)
    if before_id is not None:
        query = query.filter(id__lt=before_id)
    return await query.order_by("-id").limit(first + 1)


async def get_redemption(redemption_id: int) -> Redemption:
    """A redemption by id."""
    return await Redemption.get(id=redemption_id)
