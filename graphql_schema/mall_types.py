"""GraphQL types of the mall (no root fields): merchants, rights, redemptions, buy-backs.

Kept apart from `graphql_schema.mall` so `account.py` can page a resident's redemptions without
an import cycle. Lists are built in one go: rights and merchants of a page are read in one query
each, and per-item fields stay plain attributes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import strawberry

from graphql_schema.ids import encode_id
from graphql_schema.pagination import Connection, build_connection, decode_cursor, page_size
from graphql_schema.scalars import BigInt
from mall import redemptions as redemption_service
from mall import rights as right_service
from mall.catalog import ListedRight
from mall.models import Buyback as BuybackRow
from mall.models import BuybackStatus as BuybackStatusEnum
from mall.models import Merchant as MerchantRow
from mall.models import MerchantStatus as MerchantStatusEnum
from mall.models import Redemption as RedemptionRow
from mall.models import RedemptionStatus as RedemptionStatusEnum
from mall.models import Right as RightRow
from mall.rules import format_voucher, mask_phone

MerchantStatus = strawberry.enum(MerchantStatusEnum, name="MerchantStatus")
RedemptionStatus = strawberry.enum(RedemptionStatusEnum, name="RedemptionStatus")
BuybackStatus = strawberry.enum(BuybackStatusEnum, name="BuybackStatus")


@strawberry.type
class Merchant:
    """A merchant as others see it; `contact` (masked) only for the merchant itself and staff."""

    id: strawberry.ID
    name: str
    status: MerchantStatus
    contact: str | None = None

    @classmethod
    def from_row(cls, row: MerchantRow, with_contact: bool = True) -> Merchant:
        """The GraphQL view of a merchant row."""
        return cls(
            id=strawberry.ID(encode_id("Merchant", row.id)),
            name=row.name,
            status=MerchantStatusEnum(row.status),
            contact=mask_phone(row.contact) if with_contact else None,
        )


@strawberry.type
class Right:
    """A good or service offered for points."""

    id: strawberry.ID
    title: str
    description: str
    category: str
    points_price: BigInt
    stock_remaining: int
    per_person_limit: int
    valid_from: datetime
    valid_until: datetime | None
    min_credit_grade: str | None
    paused: bool
    merchant: Merchant

    @classmethod
    def from_listed(cls, item: ListedRight) -> Right:
        """A right as the mall listing serves it (stock read live)."""
        return cls(
            id=strawberry.ID(encode_id("Right", item.id)),
            title=item.title,
            description=item.description,
            category=item.category,
            points_price=item.points_price,
            stock_remaining=item.stock_remaining,
            per_person_limit=item.per_person_limit,
            valid_from=item.valid_from,
            valid_until=item.valid_until,
            min_credit_grade=item.min_credit_grade,
            paused=False,
            merchant=Merchant(
                id=strawberry.ID(encode_id("Merchant", item.merchant_id)),
                name=item.merchant_name,
                status=MerchantStatusEnum.APPROVED,
            ),
        )

    @classmethod
    def from_row(cls, row: RightRow, merchant: MerchantRow) -> Right:
        """A right as the database holds it."""
        return cls(
            id=strawberry.ID(encode_id("Right", row.id)),
            title=row.title,
            description=row.description,
            category=row.category,
            points_price=row.points_price,
            stock_remaining=row.stock_remaining,
            per_person_limit=row.per_person_limit,
            valid_from=row.valid_from,
            valid_until=row.valid_until,
            min_credit_grade=row.min_credit_grade,
            paused=row.paused,
            merchant=Merchant.from_row(merchant, with_contact=False),
        )


async def rights_of(rows: Sequence[RightRow]) -> list[Right]:
    """GraphQL rights for rows, their merchants read in one query."""
    merchants = await right_service.merchants_by_id([r.merchant_id for r in rows])
    return [Right.from_row(r, merchants[r.merchant_id]) for r in rows]


@strawberry.type
class Redemption:
    """Points spent on a right and its voucher (the code only for the resident who holds it)."""

    id: strawberry.ID
    status: RedemptionStatus
    quantity: int
    points_spent: BigInt
    voucher_code: str | None
    created_at: datetime
    expires_at: datetime | None
    used_at: datetime | None
    right: Right


def _redemption(row: RedemptionRow, right: Right, show_code: bool) -> Redemption:
    return Redemption(
        id=strawberry.ID(encode_id("Redemption", row.id)),
        status=RedemptionStatusEnum(row.status),
        quantity=row.quantity,
        points_spent=row.points_spent,
        voucher_code=format_voucher(row.voucher_code) if show_code else None,
        created_at=row.created_at,
        expires_at=row.expires_at,
        used_at=row.used_at,
        right=right,
    )


async def redemptions_of(rows: Sequence[RedemptionRow], show_codes: bool) -> list[Redemption]:
    """GraphQL redemptions for rows, their rights and merchants read in one query each."""
    rights = list((await right_service.rights_by_id([r.right_id for r in rows])).values())
    views = dict(zip([r.id for r in rights], await rights_of(rights), strict=True))
    return [_redemption(row, views[row.right_id], show_codes) for row in rows]


def fresh_redemption(row: RedemptionRow, right: RightRow, merchant: MerchantRow) -> Redemption:
    """The GraphQL view of a redemption just made, from the rows its transaction read."""
    return _redemption(row, Right.from_row(right, merchant), show_code=True)


async def redemption_view(row: RedemptionRow, show_code: bool) -> Redemption:
    """One GraphQL redemption."""
    return (await redemptions_of([row], show_code))[0]


async def redemption_connection(
    first: int, after: str | None, *, participant_id: int | None = None, merchant_id: int | None = None
) -> Connection[Redemption]:
    """A page of a resident's (codes shown) or a merchant's (codes hidden) redemptions."""
    size = page_size(first)
    kind = "my-redemption" if participant_id is not None else "merchant-redemption"
    rows = await redemption_service.redemptions_page(
        size, decode_cursor(kind, after), participant_id=participant_id, merchant_id=merchant_id
    )
    views = await redemptions_of(rows[:size], show_codes=participant_id is not None)
    by_id = dict(zip([r.id for r in rows[:size]], views, strict=True))
    return build_connection(kind, rows, size, lambda r: r.id, lambda r: by_id[r.id])


@strawberry.type
class Buyback:
    """A merchant's request to turn pooled points back into reductions."""

    id: strawberry.ID
    status: BuybackStatus
    points: BigInt
    grams: BigInt
    grams_per_point: BigInt
    comment: str | None
    created_at: datetime
    settled_at: datetime | None

    @classmethod
    def from_row(cls, row: BuybackRow) -> Buyback:
        """The GraphQL view of a buy-back row."""
        return cls(
            id=strawberry.ID(encode_id("Buyback", row.id)),
            status=BuybackStatusEnum(row.status),
            points=row.points,
            grams=row.grams,
            grams_per_point=row.grams_per_point,
            comment=row.comment,
            created_at=row.created_at,
            settled_at=row.settled_at,
        )
