"""The caller (`me`), their carbon account and its ledger entries; the system totals."""

from __future__ import annotations

from datetime import datetime
from typing import cast

import strawberry
from graphql import FieldNode
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
from points.credit import recompute_credit

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

    # Plain values, filled from one account view: a resolver per field costs several times a
    # plain attribute, and MyAccount is the hottest read.
    participant_id: strawberry.Private[int]
    view: strawberry.Private[AccountView]
    reduction_grams: BigInt
    points: BigInt
    experience: int = strawberry.field(
        description="Lifetime experience from behavior scenarios (not spendable); it stops at"
        " 2147483647, the largest Int, as a daily cap stops a day's."
    )
    level: GrowthLevel | None = strawberry.field(
        description="The growth level reached by lifetime experience."
    )
    next_level: GrowthLevel | None = strawberry.field(
        description="The next growth level; null at the top."
    )

    @strawberry.field(description="Credit standing (Art. 24): score, grade and why.")
    def credit_standing(self) -> CreditStanding:
        """The participant's own credit standing, current.

        The stored standing when it is current (no await); otherwise an awaitable that
        recomputes it, which the executor awaits like an async resolver's result."""
        stored = self.view.stored_credit()
        if stored is not None:
            return CreditStanding.of(stored)
        return cast(CreditStanding, self._recomputed_credit())

    async def _recomputed_credit(self) -> CreditStanding:
        return CreditStanding.of(await recompute_credit(self.participant_id))

    @strawberry.field(description="Ledger entries on both assets, newest first.")
    async def entries(self, first: int, after: str | None = None) -> Connection[LedgerEntry]:
        """Page through the account's ledger entries."""
        size = page_size(first)
        before = decode_cursor("entry", after)
        ids = [await holder_account_id(self.participant_id, asset) for asset in Asset]
        rows = await ledger_queries.entries_page(ids, size, before)
        return build_connection("entry", rows, size, lambda r: r.id, LedgerEntry.from_row)


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
        experience=view.growth.experience,
        level=GrowthLevel.of(view.growth.level),
        next_level=GrowthLevel.of(view.growth.next_level),
    )


# Fields of `me` that never need the account view; any other selection (displayName, account,
# a fragment) makes `me` read the view before its fields resolve.
_WITHOUT_VIEW = frozenset({"id", "__typename", "growth", "scenarioAuthorizations", "redemptions"})


def _needs_view(info: Info) -> bool:
    """True unless every selection under this field is a plain field named in _WITHOUT_VIEW."""
    for node in info._raw_info.field_nodes:
        if node.selection_set is None:
            continue
        for selection in node.selection_set.selections:
            if not isinstance(selection, FieldNode) or selection.name.value not in _WITHOUT_VIEW:
                return True
    return False


@strawberry.type
class Me:
    """The signed-in resident."""

    participant_id: strawberry.Private[int]
    # Read by the `me` resolver when displayName or account is selected: one statement, and the
    # fields below then resolve without awaiting (MyAccount's cost).
    view: strawberry.Private[AccountView | None] = None

    @strawberry.field
    def id(self) -> strawberry.ID:
        """The resident's global ID."""
        return strawberry.ID(encode_id("Participant", self.participant_id))

    @strawberry.field
    def display_name(self) -> str:
        """A display name that never reveals the identity-provider subject."""
        assert self.view is not None  # `me` reads the view whenever this field is selected
        return self.view.display_name

    @strawberry.field
    def account(self) -> CarbonAccount:
        """The resident's carbon account."""
        assert self.view is not None  # `me` reads the view whenever this field is selected
        return account_of(self.view)

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
        participant_id = await info.context.resident_id()
        if _needs_view(info):
            return Me(participant_id=participant_id, view=await account_view(participant_id))
        return Me(participant_id=participant_id)

    @strawberry.field(permission_classes=[CenterOrRegulator])
    async def system_totals(self) -> SystemTotals:
        """Where every issued gram and point is now."""
        t = await system_totals()
        return SystemTotals(**t.__dict__)
