"""Buy-back (Art. 21): a merchant's pooled points turn back into reductions from the reserve.

Request: the points are held (pending) on the merchant pool at once, and the grams are fixed at
points x gramsPerPoint of the rule in force. Points that back unused vouchers stay free for
their refunds and cannot be bought back. Settle (center): approve burns the held points into
POINTS_BOUGHT_BACK and moves the grams out of the conversion reserve (its lots, oldest first)
into the merchant's holding, both in one transaction; reject releases the hold. The reserve
never pays out more grams than it holds: then nothing moves and the answer is INVALID_STATE.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from tortoise.functions import Sum
from tortoise.transactions import in_transaction

from app import audit
from app.auth import Principal
from app.errors import InsufficientPoints, InsufficientReductions, InvalidInput, InvalidState, NotFound
from app.events import account_changed
from app.idempotency import claim
from app.ledger.accounts import SystemAccount, holder_account_id, system_account_id
from app.ledger.models import Asset, EntryKind
from app.ledger.posting import Posting, hold, lock_accounts, post, release
from app.units import BIGINT_MAX
from mall.merchants import MAX_COMMENT, own_merchant
from mall.models import Buyback, BuybackStatus, MerchantStatus, Redemption, RedemptionStatus
from points.conversion import rule_in_force

log = logging.getLogger(__name__)


async def request_buyback(principal: Principal, points: int, idempotency_key: str) -> Buyback:
    """A merchant asks to turn `points` of its pool back into reductions; the points are held."""
    merchant = await own_merchant(principal)
    if merchant.status not in (MerchantStatus.APPROVED, MerchantStatus.SUSPENDED):
        raise InvalidState(f"Your merchant application is {merchant.status}.")
    if not 0 < points <= BIGINT_MAX:
        raise InvalidInput("points must be a whole number above 0.", "points")
    rule_id, grams_per_point = await rule_in_force()
    grams = points * grams_per_point
    pool = await holder_account_id(merchant.participant_id, Asset.POINTS)
    async with in_transaction() as conn:
        claimed = await claim(f"buyback:{merchant.id}", idempotency_key, {"points": points}, conn)
        if claimed.replay:  # the first buy-back, whatever the rule in force now
            return await Buyback.get(id=int(claimed.result["buyback_id"])).using_db(conn)
        if grams > BIGINT_MAX:
            raise InvalidInput("points are too many to buy back at once.", "points")
        account = (await lock_accounts(conn, [pool]))[pool]
        backing = await (
            Redemption.filter(merchant_id=merchant.id, status=RedemptionStatus.ISSUED.value)
            .using_db(conn)
            .annotate(total=Sum("points_spent"))
            .values_list("total", flat=True)
        )
        outstanding = int(backing[0] or 0) if backing else 0
        free = account.balance - account.pending - outstanding
        if free < points:
            raise InsufficientPoints(
                f"Only {max(free, 0)} pooled points can be bought back now "
                f"({outstanding} back unused vouchers).",
                "points",
            )
        await hold(conn, pool, points)
        buyback = await Buyback.create(
            merchant_id=merchant.id,
            participant_id=merchant.participant_id,
            points=points,
            grams=grams,
            grams_per_point=grams_per_point,
            rule_id=rule_id,
            requested_by=principal.subject,
            using_db=conn,
        )
        await claimed.complete({"buyback_id": buyback.id}, conn)
    await account_changed([merchant.participant_id])
    return buyback


async def settle_buyback(
    principal: Principal, buyback_id: int, approve: bool, comment: str | None
) -> Buyback:
    """Center approves (points burned, grams from the reserve) or rejects (hold released).

    The input carries no idempotency key (the contract's ReviewInput), so the decision itself
    is the key: the same decision again answers the buy-back as settled and moves nothing; the
    other decision is INVALID_STATE."""
    principal.require("center")
    text = (comment or "").strip() or None
    if text is not None and len(text) > MAX_COMMENT:
        raise InvalidInput(f"comment must be at most {MAX_COMMENT} characters.", "comment")
    reserve = await system_account_id(SystemAccount.CONVERSION_RESERVE)
    burned = await system_account_id(SystemAccount.POINTS_BOUGHT_BACK)
    now = datetime.now(UTC)
    async with in_transaction() as conn:
        buyback = await Buyback.filter(id=buyback_id).select_for_update().using_db(conn).first()
        if buyback is None:
            raise NotFound("No such buy-back.", "id")
        if buyback.status != BuybackStatus.PENDING:
            decided = BuybackStatus.SETTLED if approve else BuybackStatus.REJECTED
            if buyback.status == decided:
                return buyback  # a retry of the decision taken: its result, nothing moved
            raise InvalidState(f"The buy-back is {buyback.status}, not PENDING.", "id")
        pool = await holder_account_id(buyback.participant_id, Asset.POINTS)
        if approve:
            grams_account = await holder_account_id(buyback.participant_id, Asset.REDUCTION_GRAMS)
            reference = f"buyback:{buyback.id}"
            try:
                await post(
                    conn,
                    [
                        Posting(
                            Asset.POINTS, pool, burned, buyback.points, EntryKind.BUYBACK, reference,
                            f"{buyback.points} points bought back", release_pending=buyback.points,
                        ),
                        Posting(
                            Asset.REDUCTION_GRAMS, reserve, grams_account, buyback.grams,
                            EntryKind.BUYBACK, reference,
                            f"{buyback.points} points at {buyback.grams_per_point} g/point",
                        ),
                    ],
                    now=now,
                )
            except InsufficientReductions as exc:
                raise InvalidState(
                    f"The conversion reserve cannot pay {buyback.grams} g: {exc.message}", "id"
                ) from None
            buyback.status = BuybackStatus.SETTLED.value
        else:
            await release(conn, pool, buyback.points)
            buyback.status = BuybackStatus.REJECTED.value
        buyback.settled_by = principal.subject
        buyback.comment = text
        buyback.settled_at = now
        await buyback.save(using_db=conn, update_fields=["status", "settled_by", "comment", "settled_at"])
    await audit.record(principal, "buyback.settle", "buyback", buyback.id, buyback.status)
    await account_changed([buyback.participant_id])
    return buyback


async def buybacks_page(
    first: int, before_id: int | None, *, merchant_id: int | None = None, status: str | None = None
) -> list[Buyback]:
    """Up to `first + 1` buy-backs, newest first, of one merchant or in one status."""
    query = Buyback.all()
    if merchant_id is not None:
        query = query.filter(merchant_id=merchant_id)
    if status is not None:
        query = query.filter(status=status)
    if before_id is not None:
        query = query.filter(id__lt=before_id)
    return await query.order_by("-id").limit(first + 1)
