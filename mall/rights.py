"""Rights a merchant offers: create, change price and validity, restock, pause and resume."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import F
from tortoise.transactions import in_transaction

from app.auth import Principal
from app.errors import InvalidInput, InvalidState, NotFound
from mall import catalog, stock_gate
from mall.merchants import own_merchant
from mall.models import Merchant, MerchantStatus, Right
from mall.rules import STOCK_LIMIT, check_price, check_restock, check_right_terms, check_window
from points.credit import GRADES

log = logging.getLogger(__name__)


async def create_right(
    principal: Principal,
    *,
    title: str,
    description: str | None,
    category: str,
    points_price: int,
    stock: int,
    per_person_limit: int | None,
    valid_from: datetime | None,
    valid_until: datetime | None,
    min_credit_grade: str | None,
) -> Right:
    """An approved merchant lists a new right."""
    merchant = await own_merchant(principal)
    terms = check_right_terms(
        title=title,
        description=description,
        category=category,
        points_price=points_price,
        stock=stock,
        per_person_limit=per_person_limit,
        valid_from=valid_from,
        valid_until=valid_until,
        min_credit_grade=min_credit_grade,
        grades=GRADES,
        now=datetime.now(UTC),
    )
    if merchant.status != MerchantStatus.APPROVED:
        raise InvalidState(f"Only an approved merchant lists rights; yours is {merchant.status}.")
    right = await Right.create(
        merchant_id=merchant.id,
        title=terms.title,
        description=terms.description,
        category=terms.category,
        points_price=terms.points_price,
        stock_total=terms.stock,
        stock_remaining=terms.stock,
        per_person_limit=terms.per_person_limit,
        valid_from=terms.valid_from,
        valid_until=terms.valid_until,
        min_credit_grade=terms.min_credit_grade,
    )
    log.info("right %s listed by merchant %s", right.id, merchant.id)
    await catalog.invalidate()
    return right


async def _own_right(merchant: Merchant, right_id: int, conn: BaseDBAsyncClient) -> Right:
    right = await Right.filter(id=right_id).select_for_update().using_db(conn).first()
    if right is None or right.merchant_id != merchant.id:
        raise NotFound("No such right.", "id")
    return right


async def update_right(
    principal: Principal,
    right_id: int,
    *,
    points_price: int | None = None,
    valid_from: datetime | None = None,
    valid_until: datetime | None = None,
) -> Right:
    """Change the price or validity window for redemptions from now on (vouchers keep theirs)."""
    merchant = await own_merchant(principal)
    if points_price is not None:
        check_price(points_price)
    now = datetime.now(UTC)
    async with in_transaction() as conn:
        right = await _own_right(merchant, right_id, conn)
        start = valid_from or right.valid_from
        until = valid_until or right.valid_until
        if valid_from is not None or valid_until is not None:
            check_window(start, until, now)
        right.points_price = points_price or right.points_price
        right.valid_from = start
        right.valid_until = until
        await right.save(
            using_db=conn, update_fields=["points_price", "valid_from", "valid_until", "updated_at"]
        )
    await catalog.invalidate()
    return right


async def restock_right(principal: Principal, right_id: int, quantity: int) -> Right:
    """Add `quantity` items to a right's stock."""
    merchant = await own_merchant(principal)
    check_restock(quantity)
    async with in_transaction() as conn:
        held = await _own_right(merchant, right_id, conn)  # its row locked until the commit
        if held.stock_total > STOCK_LIMIT - quantity:
            raise InvalidInput(
                f"A right can be stocked with at most {STOCK_LIMIT} items over its life; this one"
                f" has had {held.stock_total}.", "quantity",
            )
        await Right.filter(id=right_id).using_db(conn).update(
            stock_total=F("stock_total") + quantity, stock_remaining=F("stock_remaining") + quantity
        )
        right = await Right.get(id=right_id).using_db(conn)
    await stock_gate.put_back(right_id, quantity)
    await catalog.invalidate()
    return right


async def set_paused(principal: Principal, right_id: int, paused: bool) -> Right:
    """Pause a right (it leaves the mall; vouchers stay valid) or resume it."""
    merchant = await own_merchant(principal)
    async with in_transaction() as conn:
        right = await _own_right(merchant, right_id, conn)
        if right.paused == paused:
            state = "already paused" if paused else "not paused"
            raise InvalidState(f"The right is {state}.", "id")
        right.paused = paused
        await right.save(using_db=conn, update_fields=["paused", "updated_at"])
    await catalog.invalidate()
    return right


async def merchant_rights(merchant_id: int, first: int, before_id: int | None) -> list[Right]:
    """Up to `first + 1` of a merchant's rights (paused and ended ones too), newest first."""
    query = Right.filter(merchant_id=merchant_id)
    if before_id is not None:
        query = query.filter(id__lt=before_id)
    return await query.order_by("-id").limit(first + 1)


async def rights_by_id(right_ids: list[int]) -> dict[int, Right]:
    """Rights by id (for redemptions showing what they were for)."""
    return {r.id: r for r in await Right.filter(id__in=set(right_ids))}


async def merchants_by_id(merchant_ids: list[int]) -> dict[int, Merchant]:
    """Merchants by id."""
    return {m.id: m for m in await Merchant.filter(id__in=set(merchant_ids))}
