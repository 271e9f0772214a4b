"""Redemptions after they are made: residents cancel unused vouchers, unused ones expire, merchants
write them off; the pages of redemptions. Making one (RedeemRight) is mall.redeeming.

Every path that touches these rows takes them in one order: redemption row, tally row, the
resident account, the merchant pool, the right. A refund (cancel, expiry) moves points the
other way, so it locks the resident account itself before the ledger locks the pool: no two
paths ever wait on each other in opposite orders.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import F, Q
from tortoise.transactions import in_transaction

from app.auth import Principal
from app.errors import InsufficientPoints, InvalidInput, InvalidState, NotFound
from app.events import account_changed
from app.idempotency import claim
from app.keyset import owners_newest
from app.ledger.accounts import holder_account_id
from app.ledger.models import Asset, EntryKind
from app.ledger.posting import Posting, lock_accounts, post
from app.participants import resident_id
from app.redis import get_store
from mall import stock_gate
from mall.errors import RateLimited
from mall.keys import store_key
from mall.merchants import own_merchant
from mall.models import Merchant, Redemption, RedemptionStatus, RedemptionTally, Right
from mall.rules import parse_voucher
from points.credit import note_voucher_cancellation, refresh_credit

log = logging.getLogger(__name__)

# Voucher lookups (write-offs) per merchant per minute; more answer RATE_LIMITED.
LOOKUPS_PER_MINUTE = 120
EXPIRY_BATCH = 200


@dataclass(frozen=True)
class Written:
    """The rows a fresh redemption wrote and read: enough to answer without reading them again."""

    redemption: Redemption
    right: Right
    merchant: Merchant


@dataclass(frozen=True)
class Redeemed:
    """A redemption made (or replayed) for a resident; a fresh one carries the rows it wrote."""

    redemption_id: int
    participant_id: int
    written: Written | None = None


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
    """Up to `first + 1` redemptions of a resident or of a merchant, newest first (a merchant
    may hold a good share of all redemptions: `owners_newest`)."""
    if participant_id is not None:
        return await owners_newest(Redemption.all(), "participant_id", participant_id, before_id, first + 1)
    if merchant_id is not None:
        return await owners_newest(Redemption.all(), "merchant_id", merchant_id, before_id, first + 1)
    raise ValueError("a resident's or a merchant's redemptions")


async def get_redemption(redemption_id: int) -> Redemption:
    """A redemption by id."""
    return await Redemption.get(id=redemption_id)
