"""The caller (`me`), their carbon account and its ledger entries; the system totals."""

from __future__ import annotations

import asyncio
from datetime import datetime

import strawberry
from strawberry.types import Info

from app.ledger import queries as ledger_queries
from app.ledger.accounts import holder_account_id
from app.ledger.models import Asset, Entry, EntryKind
from app.ledger.verify import system_totals
from graphql_schema.ids import encode_id
from graphql_schema.mall_types import Redemption, redemption_connection
from graphql_schema.pagination import Connection, build_connection, decode_cursor, page_size
from graphql_schema.permissions import CenterOrRegulator, Resident
from graphql_schema.points_types import CreditStanding, Growth, GrowthLevel
from graphql_schema.registry import ScenarioAuthorization, scenario_authorizations
from graphql_schema.scalars import BigInt
from points import growth as growth_service
from points.account_view import AccountView, account_view

LedgerEntryKind = strawberry.enum(EntryKind, name="LedgerEntryKind")
LedgerAsset = strawberry.enum(Asset, name="LedgerAsset")


@strawberry.type
class LedgerEntry:
    """One movement on the holder's account, signed from the holder's point of view."""

    id: strawberry.ID
    kind: LedgerEntryKind
    asset: LedgerAsset
    amount: BigInt
    balance_after: BigInt
    created_at: datetime
    memo: str | None

    @classmethod
    def from_row(cls, row: Entry) -> LedgerEntry:
        """The GraphQL view of an entry row."""
        return cls(
            id=strawberry.ID(encode_id("LedgerEntry", row.id)),
            kind=EntryKind(row.kind),
            asset=Asset(row.asset),
            amount=row.amount,
            balance_after=row.balance_after,
            created_at=row.created_at,
            memo=row.memo or None,
        )


@strawberry.type
class CarbonAccount:
    """A participant's holdings: reductions and points; experience, level and credit standing."""

    participant_id: strawberry.Private[int]
    view: strawberry.Private[AccountView]
    reduction_grams: BigInt
    points: BigInt

    @strawberry.field(description="Lifetime experience from behavior scenarios (not spendable).")
    def experience(self) -> int:
        """Lifetime experience."""
        return self.view.growth.experience

    @strawberry.field(description="The growth level reached by lifetime experience.")
    def level(self) -> GrowthLevel | None:
        """The current level."""
        return GrowthLevel.of(self.view.growth.level)

    @strawberry.field(description="The next growth level; null at the top.")
    def next_level(self) -> GrowthLevel | None:
        """The next level."""
        return GrowthLevel.of(self.view.growth.next_level)

    @strawberry.field(description="Credit standing (Art. 24): score, grade and why.")
    async def credit_standing(self) -> CreditStanding:
        """The participant's own credit standing, current."""
        return CreditStanding.of(await self.view.credit())

    @strawberry.field(description="Ledger entries on both assets, newest first.")
    async def entries(self, first: int, after: str | None = None) -> Connection[LedgerEntry]:
        """Page through the account's ledger entries."""
        size = page_size(first)
        before = decode_cursor(after)
        ids = [await holder_account_id(self.participant_id, asset) for asset in Asset]
        rows = await ledger_queries.entries_page(ids, size, before)
        return build_connection(rows, size, lambda r: r.id, LedgerEntry.from_row)


async def load_account(participant_id: int) -> CarbonAccount:
    """The carbon account of a participant, its available balances and growth in one query."""
    return account_of(await account_view(participant_id))


def account_of(view: AccountView) -> CarbonAccount:
    """The CarbonAccount of an account view."""
    return CarbonAccount(
        participant_id=view.participant_id,
        view=view,
        reduction_grams=view.reduction_grams,
        points=view.points,
    )


@strawberry.type
class Me:
    """The signed-in resident."""

    participant_id: strawberry.Private[int]
    # displayName and account come from one statement, read once per `me` (MyAccount's cost).
    pending_view: strawberry.Private[asyncio.Future[AccountView] | None] = None

    def _view(self) -> asyncio.Future[AccountView]:
        if self.pending_view is None:
            self.pending_view = asyncio.ensure_future(account_view(self.participant_id))
        return self.pending_view

    @strawberry.field
    def id(self) -> strawberry.ID:
        """The resident's global ID."""
        return strawberry.ID(encode_id("Participant", self.participant_id))

    @strawberry.field
    async def display_name(self) -> str:
        """A display name that never reveals the identity-provider subject."""
        return (await self._view()).display_name

    @strawberry.field
    async def account(self) -> CarbonAccount:
        """The resident's carbon account."""
        return account_of(await self._view())

    @strawberry.field(description="Experience, level, next level and the growth history.")
    async def growth(self) -> Growth:
        """The resident's growth."""
        return Growth.of(self.participant_id, await growth_service.growth(self.participant_id))

    @strawberry.field(description="Every scenario consent of the resident, newest first.")
    async def scenario_authorizations(self) -> list[ScenarioAuthorization]:
        """The resident's grants, active and revoked (history kept as rows)."""
        return await scenario_authorizations(self.participant_id)

    @strawberry.field(description="The resident's redemptions and vouchers, newest first.")
    async def redemptions(self, first: int, after: str | None = None) -> Connection[Redemption]:
        """Page through the resident's redemptions (voucher codes shown)."""
        return await redemption_connection(first, after, participant_id=self.participant_id)


@strawberry.type
class SystemTotals:
    """Conservation: issued = held + reserve + retired; points issued = held + pooled + bought back."""

    issued_grams: BigInt
    held_grams: BigInt
    reserve_grams: BigInt
    retired_grams: BigInt
    points_issued: BigInt
    points_held: BigInt
    points_pooled: BigInt
    points_bought_back: BigInt


@strawberry.type
class Query:
    """Root fields of the account and the ledger."""

    @strawberry.field(permission_classes=[Resident], description="The signed-in resident.")
    async def me(self, info: Info) -> Me:
        """The calling resident, their account opened on first sight."""
        return Me(participant_id=await info.context.resident_id())

    @strawberry.field(permission_classes=[CenterOrRegulator])
    async def system_totals(self) -> SystemTotals:
        """Where every issued gram and point is now."""
        t = await system_totals()
        return SystemTotals(**t.__dict__)
