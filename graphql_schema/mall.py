"""The mall: merchants, rights and the listing, redemptions and vouchers, buy-backs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import strawberry
from strawberry.types import Info

from app import audit
from graphql_schema.account import CarbonAccount, load_account
from graphql_schema.errors import UserError, attempt
from graphql_schema.ids import decode_id
from graphql_schema.inputs import ReviewInput
from graphql_schema.mall_types import (
    Buyback,
    BuybackStatus,
    Merchant,
    MerchantStatus,
    Redemption,
    Right,
    fresh_redemption,
    redemption_connection,
    redemption_view,
    rights_of,
)
from graphql_schema.pagination import (
    Connection,
    Edge,
    PageInfo,
    build_connection,
    decode_cursor,
    encode_cursor,
    page_size,
)
from graphql_schema.permissions import Center, CenterOrExchange, Resident, SignedIn, roles
from graphql_schema.scalars import BigInt
from mall import buyback as buyback_service
from mall import catalog, merchants, redeeming, redemptions
from mall import rights as right_service
from mall.models import Buyback as BuybackRow
from mall.models import Merchant as MerchantRow
from mall.models import Right as RightRow

MerchantRole = roles("merchant")


@strawberry.type
class MerchantAccount:
    """The merchant console view of the caller's own merchant."""

    merchant_id: strawberry.Private[int]
    id: strawberry.ID
    name: str
    status: MerchantStatus
    contact: str | None
    pooled_points: BigInt
    points_on_hold: BigInt
    reduction_grams: BigInt

    @strawberry.field(description="The merchant's rights, paused and ended ones too, newest first.")
    async def rights(self, first: int, after: str | None = None) -> Connection[Right]:
        """Page through the merchant's rights."""
        size = page_size(first)
        rows = await right_service.merchant_rights(self.merchant_id, size, decode_cursor("right", after))
        views = dict(zip([r.id for r in rows], await rights_of(rows), strict=True))
        return build_connection("right", rows, size, lambda r: r.id, lambda r: views[r.id])

    @strawberry.field(description="Redemptions of the merchant's rights, newest first (codes hidden).")
    async def redemptions(self, first: int, after: str | None = None) -> Connection[Redemption]:
        """Page through the merchant's redemptions."""
        return await redemption_connection(first, after, merchant_id=self.merchant_id)

    @strawberry.field(description="The merchant's buy-back requests, newest first.")
    async def buybacks(self, first: int, after: str | None = None) -> Connection[Buyback]:
        """Page through the merchant's buy-backs."""
        size = page_size(first)
        rows = await buyback_service.buybacks_page(
            size, decode_cursor("merchant-buyback", after), merchant_id=self.merchant_id)
        return build_connection("merchant-buyback", rows, size, lambda r: r.id, Buyback.from_row)


async def _merchant_account(row: MerchantRow) -> MerchantAccount:
    money = await merchants.merchant_balances(row.participant_id)
    view = Merchant.from_row(row)
    return MerchantAccount(
        merchant_id=row.id,
        id=view.id,
        name=view.name,
        status=view.status,
        contact=view.contact,
        pooled_points=money.pooled_points,
        points_on_hold=money.points_on_hold,
        reduction_grams=money.reduction_grams,
    )


# ---------------------------------------------------------------- inputs and payloads


@strawberry.input
class ApplyMerchantInput:
    """An organisation applies with its unified social credit code (checksum verified)."""

    name: str
    credit_code: str
    contact: str


@strawberry.input
class MerchantStatusInput:
    """A merchant to suspend or reinstate, and why."""

    id: strawberry.ID
    reason: str | None = None


@strawberry.input
class CreateRightInput:
    """A new right; perPersonLimit defaults to 1, validFrom to now; validUntil open when omitted."""

    title: str
    description: str | None = None
    category: str
    points_price: BigInt
    stock: int
    per_person_limit: int | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    min_credit_grade: str | None = None


@strawberry.input
class UpdateRightInput:
    """New price or validity for redemptions from now on; omitted fields stay."""

    id: strawberry.ID
    points_price: BigInt | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None


@strawberry.input
class RestockRightInput:
    """Items to add to a right's stock."""

    id: strawberry.ID
    quantity: int


@strawberry.input
class RightInput:
    """The right to act on."""

    id: strawberry.ID


@strawberry.input
class RedeemRightInput:
    """What to redeem, how many, and the key that makes a retry safe."""

    right_id: strawberry.ID
    quantity: int
    idempotency_key: str


@strawberry.input
class CancelRedemptionInput:
    """The unused voucher to cancel."""

    redemption_id: strawberry.ID
    idempotency_key: str


@strawberry.input
class WriteOffVoucherInput:
    """The code the customer shows (dashes and case do not matter)."""

    voucher_code: str


@strawberry.input
class RequestBuybackInput:
    """Pooled points to turn back into reductions."""

    points: BigInt
    idempotency_key: str


@strawberry.type
class MerchantPayload:
    """The merchant after the mutation, or why not."""

    merchant: Merchant | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class RightPayload:
    """The right after the mutation, or why not."""

    right: Right | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class RedemptionPayload:
    """The redemption and the resident's account after the mutation, or why not."""

    redemption: Redemption | None = None
    account: CarbonAccount | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class WriteOffVoucherPayload:
    """The redemption written off, or why not."""

    redemption: Redemption | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class BuybackPayload:
    """The buy-back after the mutation, or why not."""

    buyback: Buyback | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


async def _right_view(row: RightRow) -> Right:
    return (await rights_of([row]))[0]


# ---------------------------------------------------------------- root fields


@strawberry.type
class Query:
    """The mall listing, the merchant console and the operations queues."""

    @strawberry.field(
        permission_classes=[SignedIn],
        description="Rights a resident can redeem now, newest first; sold-out ones at stock 0.",
    )
    async def rights(
        self, first: int, after: str | None = None, category: str | None = None
    ) -> Connection[Right]:
        """The mall listing, served from a cache with live stock."""
        size = page_size(first)
        page = await catalog.rights_page(size, decode_cursor("mall", after), category)
        edges = [Edge(cursor=encode_cursor("mall", r.id), node=Right.from_listed(r)) for r in page.rights]
        return Connection(
            edges=edges,
            page_info=PageInfo(
                has_next_page=page.has_next, end_cursor=edges[-1].cursor if edges else None
            ),
        )

    @strawberry.field(permission_classes=[MerchantRole], description="The caller's own merchant.")
    async def my_merchant(self, info: Info) -> MerchantAccount | None:
        """The merchant of the organisation the caller acts for; null before it applies."""
        row = await merchants.merchant_of(info.context.caller())
        return None if row is None else await _merchant_account(row)

    @strawberry.field(permission_classes=[CenterOrExchange], description="Merchant applications by status.")
    async def merchants(
        self, info: Info, status: MerchantStatus | None = None, first: int = 50,
        after: str | None = None,
    ) -> Connection[Merchant]:
        """Center and exchange: merchants, newest first (the read is audited: contacts are people)."""
        size = page_size(first)
        query = MerchantRow.all() if status is None else MerchantRow.filter(status=status.value)
        before = decode_cursor("merchant", after)
        if before is not None:
            query = query.filter(id__lt=before)
        rows = await query.order_by("-id").limit(size + 1)
        await _audit_list(info, "merchant.list", "Merchant", status, rows[:size])
        return build_connection("merchant", rows, size, lambda r: r.id, Merchant.from_row)

    @strawberry.field(permission_classes=[Center], description="Buy-back requests by status.")
    async def buybacks(
        self, info: Info, status: BuybackStatus | None = None, first: int = 50,
        after: str | None = None,
    ) -> Connection[Buyback]:
        """Center: buy-backs to settle, newest first (the read is audited)."""
        size = page_size(first)
        rows = await buyback_service.buybacks_page(
            size, decode_cursor("buyback", after), status=status.value if status else None
        )
        await _audit_list(info, "buyback.list", "Buyback", status, rows[:size])
        return build_connection("buyback", rows, size, lambda r: r.id, Buyback.from_row)


async def _audit_list(
    info: Info, action: str, kind: str, status: MerchantStatus | BuybackStatus | None,
    rows: Sequence[MerchantRow | BuybackRow],
) -> None:
    """Audit a staff member's read of a page of other parties' rows: which status, which ids."""
    shown = ",".join(str(r.id) for r in rows)
    await audit.record(info.context.caller(), action, kind, status.value if status else "any",
                       f"ids={shown}")


def _merchant_refused(error: UserError) -> MerchantPayload:
    return MerchantPayload(user_errors=[error])


def _right_refused(error: UserError) -> RightPayload:
    return RightPayload(user_errors=[error])


def _redemption_refused(error: UserError) -> RedemptionPayload:
    return RedemptionPayload(user_errors=[error])


def _buyback_refused(error: UserError) -> BuybackPayload:
    return BuybackPayload(user_errors=[error])


@strawberry.type
class Mutation:
    """Merchants, rights, redemptions and buy-backs."""

    @strawberry.mutation(permission_classes=[MerchantRole])
    async def apply_merchant(self, info: Info, input: ApplyMerchantInput) -> MerchantPayload:
        """An organisation with the merchant role applies to join the mall."""
        principal = info.context.caller()

        async def run() -> MerchantPayload:
            row = await merchants.apply_merchant(principal, input.name, input.credit_code, input.contact)
            return MerchantPayload(merchant=Merchant.from_row(row))

        return await attempt(run, _merchant_refused)

    @strawberry.mutation(permission_classes=[CenterOrExchange])
    async def review_merchant(self, info: Info, input: ReviewInput) -> MerchantPayload:
        """Center or exchange approves or rejects a PENDING application."""
        principal = info.context.caller()

        async def run() -> MerchantPayload:
            row = await merchants.review_merchant(
                principal, decode_id("Merchant", input.id), input.approve, input.comment
            )
            return MerchantPayload(merchant=Merchant.from_row(row))

        return await attempt(run, _merchant_refused)

    @strawberry.mutation(permission_classes=[CenterOrExchange])
    async def suspend_merchant(self, info: Info, input: MerchantStatusInput) -> MerchantPayload:
        """Suspend an approved merchant: its rights leave the mall, issued vouchers stay valid."""
        principal = info.context.caller()

        async def run() -> MerchantPayload:
            row = await merchants.suspend_merchant(principal, decode_id("Merchant", input.id), input.reason)
            return MerchantPayload(merchant=Merchant.from_row(row))

        return await attempt(run, _merchant_refused)

    @strawberry.mutation(permission_classes=[CenterOrExchange])
    async def reinstate_merchant(self, info: Info, input: MerchantStatusInput) -> MerchantPayload:
        """Lift a suspension."""
        principal = info.context.caller()

        async def run() -> MerchantPayload:
            row = await merchants.reinstate_merchant(principal, decode_id("Merchant", input.id), input.reason)
            return MerchantPayload(merchant=Merchant.from_row(row))

        return await attempt(run, _merchant_refused)

    @strawberry.mutation(permission_classes=[MerchantRole])
    async def create_right(self, info: Info, input: CreateRightInput) -> RightPayload:
        """An approved merchant lists a right."""
        principal = info.context.caller()

        async def run() -> RightPayload:
            row = await right_service.create_right(
                principal,
                title=input.title,
                description=input.description,
                category=input.category,
                points_price=input.points_price,
                stock=input.stock,
                per_person_limit=input.per_person_limit,
                valid_from=input.valid_from,
                valid_until=input.valid_until,
                min_credit_grade=input.min_credit_grade,
            )
            return RightPayload(right=await _right_view(row))

        return await attempt(run, _right_refused)

    @strawberry.mutation(permission_classes=[MerchantRole])
    async def update_right(self, info: Info, input: UpdateRightInput) -> RightPayload:
        """Change price or validity for redemptions from now on."""
        principal = info.context.caller()

        async def run() -> RightPayload:
            row = await right_service.update_right(
                principal,
                decode_id("Right", input.id),
                points_price=input.points_price,
                valid_from=input.valid_from,
                valid_until=input.valid_until,
            )
            return RightPayload(right=await _right_view(row))

        return await attempt(run, _right_refused)

    @strawberry.mutation(permission_classes=[MerchantRole])
    async def restock_right(self, info: Info, input: RestockRightInput) -> RightPayload:
        """Add items to a right's stock."""
        principal = info.context.caller()

        async def run() -> RightPayload:
            row = await right_service.restock_right(principal, decode_id("Right", input.id), input.quantity)
            return RightPayload(right=await _right_view(row))

        return await attempt(run, _right_refused)

    @strawberry.mutation(permission_classes=[MerchantRole])
    async def pause_right(self, info: Info, input: RightInput) -> RightPayload:
        """Take a right out of the mall for now (vouchers stay valid)."""
        principal = info.context.caller()

        async def run() -> RightPayload:
            row = await right_service.set_paused(principal, decode_id("Right", input.id), True)
            return RightPayload(right=await _right_view(row))

        return await attempt(run, _right_refused)

    @strawberry.mutation(permission_classes=[MerchantRole])
    async def resume_right(self, info: Info, input: RightInput) -> RightPayload:
        """Put a paused right back in the mall."""
        principal = info.context.caller()

        async def run() -> RightPayload:
            row = await right_service.set_paused(principal, decode_id("Right", input.id), False)
            return RightPayload(right=await _right_view(row))

        return await attempt(run, _right_refused)

    @strawberry.mutation(permission_classes=[Resident])
    async def redeem_right(self, info: Info, input: RedeemRightInput) -> RedemptionPayload:
        """Spend points on a right; a voucher is issued. Idempotent by key."""
        principal = info.context.caller()

        async def run() -> RedemptionPayload:
            done = await redeeming.redeem(
                principal, decode_id("Right", input.right_id, "rightId"), input.quantity,
                input.idempotency_key,
            )
            if done.written is not None:
                view = fresh_redemption(done.written.redemption, done.written.right, done.written.merchant)
            else:
                view = await redemption_view(await redemptions.get_redemption(done.redemption_id), True)
            return RedemptionPayload(redemption=view, account=await load_account(done.participant_id))

        return await attempt(run, _redemption_refused)

    @strawberry.mutation(permission_classes=[Resident])
    async def cancel_redemption(self, info: Info, input: CancelRedemptionInput) -> RedemptionPayload:
        """Cancel an unused voucher: points back, stock and limit restored."""
        principal = info.context.caller()

        async def run() -> RedemptionPayload:
            done = await redemptions.cancel(
                principal, decode_id("Redemption", input.redemption_id, "redemptionId"),
                input.idempotency_key,
            )
            row = await redemptions.get_redemption(done.redemption_id)
            return RedemptionPayload(
                redemption=await redemption_view(row, show_code=True),
                account=await load_account(done.participant_id),
            )

        return await attempt(run, _redemption_refused)

    @strawberry.mutation(permission_classes=[MerchantRole])
    async def write_off_voucher(self, info: Info, input: WriteOffVoucherInput) -> WriteOffVoucherPayload:
        """The merchant owning the right confirms a voucher was used (once)."""
        principal = info.context.caller()

        async def run() -> WriteOffVoucherPayload:
            row = await redemptions.write_off(principal, input.voucher_code)
            return WriteOffVoucherPayload(redemption=await redemption_view(row, show_code=False))

        return await attempt(run, lambda e: WriteOffVoucherPayload(user_errors=[e]))

    @strawberry.mutation(permission_classes=[MerchantRole])
    async def request_buyback(self, info: Info, input: RequestBuybackInput) -> BuybackPayload:
        """Hold pooled points for a buy-back into reductions at the rule in force."""
        principal = info.context.caller()

        async def run() -> BuybackPayload:
            row = await buyback_service.request_buyback(principal, input.points, input.idempotency_key)
            return BuybackPayload(buyback=Buyback.from_row(row))

        return await attempt(run, _buyback_refused)

    @strawberry.mutation(permission_classes=[Center])
    async def settle_buyback(self, info: Info, input: ReviewInput) -> BuybackPayload:
        """Center: approve (points burned, grams from the reserve) or reject (hold released)."""
        principal = info.context.caller()

        async def run() -> BuybackPayload:
            row = await buyback_service.settle_buyback(
                principal, decode_id("Buyback", input.id), input.approve, input.comment
            )
            return BuybackPayload(buyback=Buyback.from_row(row))

        return await attempt(run, _buyback_refused)
