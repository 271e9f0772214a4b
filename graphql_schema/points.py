"""Conversion, behavior scenarios, growth levels, credit standing and live account updates."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from datetime import datetime

import strawberry
from strawberry.types import Info

from app.errors import Unauthenticated
from app.events import account_channel
from app.redis import get_store
from graphql_schema.account import CarbonAccount, load_account
from graphql_schema.errors import UserError, attempt
from graphql_schema.ids import decode_id, encode_id
from graphql_schema.permissions import (
    Center,
    CenterOrRegulator,
    Resident,
    ScenarioOperator,
    SignedIn,
)
from graphql_schema.points_types import CreditStanding, GrowthLevel
from graphql_schema.scalars import BigInt
from points import behaviors, conversion, growth, misconduct
from points.models import MisconductFlag as FlagRow
from points.models import MisconductKind as Kind
from points.rules import Level, Rule

MisconductKind = strawberry.enum(Kind, name="MisconductKind")


# ---------------------------------------------------------------- conversion


@strawberry.type
class ConversionRule:
    """The rate residents convert at: grams per point, from effectiveFrom on."""

    grams_per_point: BigInt
    effective_from: datetime

    @classmethod
    def of(cls, rule: conversion.Rule) -> ConversionRule:
        """The GraphQL view of a rule."""
        return cls(grams_per_point=rule.grams_per_point, effective_from=rule.effective_from)


@strawberry.type
class Conversion:
    """Grams turned into points: the grams taken (whole points only) and the points given."""

    id: strawberry.ID
    grams: BigInt
    points: BigInt
    created_at: datetime


@strawberry.input
class SetConversionRuleInput:
    """gramsPerPoint > 0; applies to conversions and buy-backs from now on."""

    grams_per_point: BigInt


@strawberry.type
class SetConversionRulePayload:
    """The new rule version, or why not."""

    rule: ConversionRule | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class ConvertReductionsInput:
    """Grams to convert; only whole points are taken, the remainder stays."""

    grams: BigInt
    idempotency_key: str


@strawberry.type
class ConvertReductionsPayload:
    """The conversion and the account after it, or why not."""

    conversion: Conversion | None = None
    account: CarbonAccount | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


# ---------------------------------------------------------------- behavior scenarios


@strawberry.type
class BehaviorRule:
    """Experience per event of a behavior, and the most one person earns from it a day."""

    behavior: str
    experience: int
    daily_cap: int


@strawberry.type
class BehaviorScenario:
    """A behavior scenario (Art. 10): its operator organisation and rules."""

    code: str
    name: str
    operator_credit_code: str
    rules: list[BehaviorRule]

    @classmethod
    def of(cls, view: behaviors.ScenarioView) -> BehaviorScenario:
        """The GraphQL view of a behavior scenario."""
        return cls(
            code=view.code,
            name=view.name,
            operator_credit_code=view.operator_org,
            rules=[BehaviorRule(behavior=r.behavior, experience=r.experience,
                                daily_cap=r.daily_cap) for r in view.rules],
        )


@strawberry.input
class BehaviorRuleInput:
    """dailyCap: most experience one person can earn from the behavior in one calendar day."""

    behavior: str
    experience: int
    daily_cap: int


@strawberry.input
class DefineBehaviorScenarioInput:
    """A new behavior scenario and its operator organisation."""

    code: str
    name: str
    operator_credit_code: str
    rules: list[BehaviorRuleInput]


@strawberry.type
class DefineBehaviorScenarioPayload:
    """The scenario defined, or why not."""

    scenario: BehaviorScenario | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class BehaviorEventInput:
    """One behavior of a person, once per externalRef in the scenario."""

    subject: str
    behavior: str
    occurred_at: datetime
    external_ref: str


@strawberry.input
class RecordBehaviorsInput:
    """Up to 1,000 events of one behavior scenario."""

    scenario_code: str
    events: list[BehaviorEventInput]


@strawberry.type
class BehaviorRejection:
    """An event that was not counted: its index in the batch, a code and a message."""

    index: int
    code: str
    message: str


@strawberry.type
class RecordBehaviorsPayload:
    """Per-item answer: accepted (caps clip, never reject), duplicates, rejected."""

    accepted: int = 0
    duplicates: int = 0
    rejected: list[BehaviorRejection] = strawberry.field(default_factory=list)
    user_errors: list[UserError] = strawberry.field(default_factory=list)


# ---------------------------------------------------------------- growth levels


@strawberry.input
class GrowthLevelInput:
    """One step of the growth table."""

    code: str
    name: str
    min_experience: int


@strawberry.input
class SetGrowthLevelsInput:
    """The whole table, lowest first: minExperience starts at 0 and rises strictly."""

    levels: list[GrowthLevelInput]


@strawberry.type
class SetGrowthLevelsPayload:
    """The table now in force, or why not."""

    levels: list[GrowthLevel] | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


# ---------------------------------------------------------------- credit standing


@strawberry.type
class MisconductFlag:
    """A misconduct finding by operations; active until lifted."""

    id: strawberry.ID
    kind: MisconductKind
    reason: str
    recorded_at: datetime
    lift_reason: str | None
    lifted_at: datetime | None

    @classmethod
    def of(cls, row: FlagRow) -> MisconductFlag:
        """The GraphQL view of a flag row."""
        return cls(
            id=strawberry.ID(encode_id("MisconductFlag", row.id)),
            kind=Kind(row.kind),
            reason=row.reason,
            recorded_at=row.recorded_at,
            lift_reason=row.lift_reason,
            lifted_at=row.lifted_at,
        )


@strawberry.type
class ParticipantStanding:
    """Another participant's standing and flags, as staff see it (every read is audited)."""

    participant_id: strawberry.Private[int]
    credit_standing: CreditStanding

    @strawberry.field
    async def misconduct_flags(self) -> list[MisconductFlag]:
        """Every flag, newest first, lifted ones included."""
        return [MisconductFlag.of(r) for r in await misconduct.flags_of(self.participant_id)]


@strawberry.input
class RecordMisconductInput:
    """The participant (a resident subject or an organisation code), what and why."""

    kind: MisconductKind
    reason: str
    subject: str | None = None
    org_code: str | None = None


@strawberry.input
class LiftMisconductInput:
    """The flag to lift and why."""

    flag_id: strawberry.ID
    reason: str


@strawberry.type
class MisconductPayload:
    """The flag recorded or lifted, or why not."""

    flag: MisconductFlag | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


# ---------------------------------------------------------------- root fields


@strawberry.type
class Query:
    """Conversion rate, growth table, behavior scenarios and staff credit reads."""

    @strawberry.field(permission_classes=[SignedIn], description="The rate residents convert at.")
    async def conversion_rule(self) -> ConversionRule:
        """The rule in force."""
        return ConversionRule.of(await conversion.current_rule())

    @strawberry.field(permission_classes=[SignedIn], description="The growth table, lowest first.")
    async def growth_levels(self) -> list[GrowthLevel]:
        """Every level and the experience it needs."""
        return [GrowthLevel(code=lv.code, name=lv.name, min_experience=lv.min_experience)
                for lv in await growth.levels()]

    @strawberry.field(
        permission_classes=[SignedIn],
        description="Every behavior scenario, by code: residents authorize them like reduction ones.",
    )
    async def behavior_scenarios(self) -> list[BehaviorScenario]:
        """All behavior scenarios and their rules."""
        return [BehaviorScenario.of(view) for view in await behaviors.scenario_views()]

    @strawberry.field(permission_classes=[SignedIn])
    async def behavior_scenario(self, code: str) -> BehaviorScenario | None:
        """A behavior scenario and its rules, by code."""
        view = await behaviors.scenario_view(code.strip())
        return None if view is None else BehaviorScenario.of(view)

    @strawberry.field(
        permission_classes=[CenterOrRegulator],
        description="Staff: a participant's credit standing (audited). Name subject or orgCode.",
    )
    async def participant_standing(
        self, info: Info, subject: str | None = None, org_code: str | None = None
    ) -> ParticipantStanding:
        """Read another participant's standing; the read is recorded in the audit trail."""
        participant_id, standing = await misconduct.staff_standing(
            info.context.caller(), subject, org_code
        )
        return ParticipantStanding(
            participant_id=participant_id, credit_standing=CreditStanding.of(standing)
        )


@strawberry.type
class Mutation:
    """Conversion, behavior scenarios and events, growth table, misconduct flags."""

    @strawberry.mutation(permission_classes=[Center])
    async def set_conversion_rule(
        self, info: Info, input: SetConversionRuleInput
    ) -> SetConversionRulePayload:
        """Center: a new rule version, in force from now on."""
        principal = info.context.caller()

        async def run() -> SetConversionRulePayload:
            rule = await conversion.set_rule(principal, int(input.grams_per_point))
            return SetConversionRulePayload(rule=ConversionRule.of(rule))

        return await attempt(run, lambda e: SetConversionRulePayload(user_errors=[e]))

    @strawberry.mutation(permission_classes=[Resident])
    async def convert_reductions(
        self, info: Info, input: ConvertReductionsInput
    ) -> ConvertReductionsPayload:
        """Resident: turn grams into whole points at the rule in force (Art. 16)."""
        principal = info.context.caller()

        async def run() -> ConvertReductionsPayload:
            done = await conversion.convert(principal, int(input.grams), input.idempotency_key)
            return ConvertReductionsPayload(
                conversion=Conversion(
                    id=strawberry.ID(encode_id("Conversion", done.id)),
                    grams=done.grams,
                    points=done.points,
                    created_at=done.created_at,
                ),
                account=await load_account(done.participant_id),
            )

        return await attempt(run, lambda e: ConvertReductionsPayload(user_errors=[e]))

    @strawberry.mutation(permission_classes=[Center])
    async def define_behavior_scenario(
        self, info: Info, input: DefineBehaviorScenarioInput
    ) -> DefineBehaviorScenarioPayload:
        """Center: a behavior scenario, its operator and rules."""
        principal = info.context.caller()

        async def run() -> DefineBehaviorScenarioPayload:
            view = await behaviors.define_scenario(
                principal, input.code, input.name, input.operator_credit_code,
                [Rule(r.behavior, r.experience, r.daily_cap) for r in input.rules],
            )
            return DefineBehaviorScenarioPayload(scenario=BehaviorScenario.of(view))

        return await attempt(run, lambda e: DefineBehaviorScenarioPayload(user_errors=[e]))

    @strawberry.mutation(permission_classes=[ScenarioOperator])
    async def record_behaviors(
        self, info: Info, input: RecordBehaviorsInput
    ) -> RecordBehaviorsPayload:
        """The scenario's operator reports behaviors; experience is earned under daily caps."""
        principal = info.context.caller()

        async def run() -> RecordBehaviorsPayload:
            result = await behaviors.record_behaviors(
                principal, input.scenario_code,
                [behaviors.EventInput(e.subject, e.behavior, e.occurred_at, e.external_ref)
                 for e in input.events],
            )
            return RecordBehaviorsPayload(
                accepted=result.accepted,
                duplicates=result.duplicates,
                rejected=[BehaviorRejection(index=i, code=c, message=m)
                          for i, c, m in result.rejected],
            )

        return await attempt(run, lambda e: RecordBehaviorsPayload(user_errors=[e]))

    @strawberry.mutation(permission_classes=[Center])
    async def set_growth_levels(
        self, info: Info, input: SetGrowthLevelsInput
    ) -> SetGrowthLevelsPayload:
        """Center: replace the growth table; levels follow from lifetime experience."""
        principal = info.context.caller()

        async def run() -> SetGrowthLevelsPayload:
            table = await growth.set_levels(
                principal, [Level(lv.code, lv.name, lv.min_experience) for lv in input.levels]
            )
            return SetGrowthLevelsPayload(levels=[GrowthLevel.of(lv) for lv in table])

        return await attempt(run, lambda e: SetGrowthLevelsPayload(user_errors=[e]))

    @strawberry.mutation(permission_classes=[Center])
    async def record_misconduct(self, info: Info, input: RecordMisconductInput) -> MisconductPayload:
        """Center: record a misconduct finding with its reason (audited)."""
        principal = info.context.caller()

        async def run() -> MisconductPayload:
            row = await misconduct.record_flag(
                principal, input.subject, input.org_code, input.kind.value, input.reason
            )
            return MisconductPayload(flag=MisconductFlag.of(row))

        return await attempt(run, lambda e: MisconductPayload(user_errors=[e]))

    @strawberry.mutation(permission_classes=[Center])
    async def lift_misconduct(self, info: Info, input: LiftMisconductInput) -> MisconductPayload:
        """Center: lift a misconduct flag with the reason (audited)."""
        principal = info.context.caller()

        async def run() -> MisconductPayload:
            row = await misconduct.lift_flag(
                principal, decode_id("MisconductFlag", input.flag_id, "flagId"), input.reason
            )
            return MisconductPayload(flag=MisconductFlag.of(row))

        return await attempt(run, lambda e: MisconductPayload(user_errors=[e]))


@strawberry.type
class Subscription:
    """Live updates for the mobile app."""

    @strawberry.subscription(
        permission_classes=[Resident],
        description="The caller's own account: first as it is, then after every change.",
    )
    async def account_changed(self, info: Info) -> AsyncGenerator[CarbonAccount, None]:
        """Yield the resident's account once listening, then after each change (notices that
        arrive while an update is being read are folded into it); UNAUTHENTICATED, ending the
        subscription, when the connection's token expires."""
        participant_id = await info.context.resident_id()
        expires = info.context.caller().expires
        async with get_store().listen(account_channel(participant_id)) as notices:
            yield await load_account(participant_id)
            while True:
                left = None if expires is None else expires - time.time()
                try:
                    await asyncio.wait_for(notices.next(), left)
                except TimeoutError:
                    raise Unauthenticated("The token has expired.") from None
                notices.drain()
                yield await load_account(participant_id)
