"""The registry's approval path: methodologies, scenarios, holiday calendars, resident consent.

The registry enums (MethodologyKind, MethodologyClass, MethodologyStatus, ScenarioStatus) are
wrapped here once; other GraphQL modules import them from this module instead of re-wrapping.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date, datetime
from enum import Enum
from typing import TypeVar

import strawberry
from strawberry.types import Info

from app.auth import Principal
from app.calendar import YearCalendar, load_holiday_calendar
from graphql_schema.errors import UserError, attempt
from graphql_schema.ids import decode_id, encode_id
from graphql_schema.inputs import ReviewInput
from graphql_schema.permissions import (
    Center,
    CenterOrExchange,
    MethodologySubmitter,
    Regulator,
    Resident,
    ScenarioOperator,
    SignedIn,
)
from graphql_schema.scalars import BigInt
from registry import authorizations, methodologies, scenarios, suspension
from registry import models as m
from registry.authorizations import ScenarioRef
from registry.scenarios import ScenarioView

Row = TypeVar("Row", m.Scenario, m.Methodology)
Payload = TypeVar("Payload")

MethodologyKind = strawberry.enum(m.MethodologyKind, name="MethodologyKind")
MethodologyClass = strawberry.enum(m.MethodologyClass, name="MethodologyClass")
MethodologyStatus = strawberry.enum(m.MethodologyStatus, name="MethodologyStatus")
ScenarioStatus = strawberry.enum(m.ScenarioStatus, name="ScenarioStatus")


@strawberry.enum(description="A reduction scenario earns grams; a behavior scenario experience.")
class ScenarioKind(Enum):
    """What kind of scenario a resident authorized."""

    REDUCTION = "REDUCTION"
    BEHAVIOR = "BEHAVIOR"


@strawberry.type
class Methodology:
    """A versioned quantification method; scenario ones carry a factor per unit and a daily cap."""

    id: strawberry.ID
    code: str
    name: str
    kind: MethodologyKind
    methodology_class: MethodologyClass
    version: str
    status: MethodologyStatus
    activity_unit: str | None
    grams_per_unit: BigInt | None
    daily_cap_grams: BigInt | None
    published_at: datetime | None

    @classmethod
    def from_row(cls, row: m.Methodology) -> Methodology:
        """The GraphQL view of a methodology row."""
        return cls(
            id=strawberry.ID(encode_id("Methodology", row.id)),
            code=row.code,
            name=row.name,
            kind=m.MethodologyKind(row.kind),
            methodology_class=m.MethodologyClass(row.methodology_class),
            version=row.version,
            status=m.MethodologyStatus(row.status),
            activity_unit=row.activity_unit,
            grams_per_unit=row.grams_per_unit,
            daily_cap_grams=row.daily_cap_grams,
            published_at=row.published_at,
        )


@strawberry.type
class Scenario:
    """A reduction scenario; residents authorize published ones, its operator sends records."""

    id: strawberry.ID
    code: str
    name: str
    status: ScenarioStatus
    publicity_starts_on: date | None
    publicity_ends_on: date | None
    methodology: Methodology

    @classmethod
    def from_view(cls, view: ScenarioView) -> Scenario:
        """The GraphQL view of a scenario with its methodology."""
        row = view.scenario
        return cls(
            id=strawberry.ID(encode_id("Scenario", row.id)),
            code=row.code,
            name=row.name,
            status=m.ScenarioStatus(row.status),
            publicity_starts_on=row.publicity_starts_on,
            publicity_ends_on=row.publicity_ends_on,
            methodology=Methodology.from_row(view.methodology),
        )


@strawberry.type
class ScenarioSummary:
    """The scenario an authorization is about."""

    code: str
    name: str
    kind: ScenarioKind


@strawberry.type
class ScenarioAuthorization:
    """One grant of consent: records count from grantedAt until revokedAt (if any)."""

    scenario: ScenarioSummary
    granted_at: datetime
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, row: m.ScenarioAuthorization, ref: ScenarioRef) -> ScenarioAuthorization:
        """The GraphQL view of an authorization row and its scenario."""
        return cls(
            scenario=ScenarioSummary(code=ref.code, name=ref.name, kind=ScenarioKind(ref.kind)),
            granted_at=row.granted_at,
            revoked_at=row.revoked_at,
        )


async def scenario_authorizations(participant_id: int) -> list[ScenarioAuthorization]:
    """Every grant of one resident, newest first (for `me.scenarioAuthorizations`)."""
    rows = await authorizations.authorization_history(participant_id)
    return [ScenarioAuthorization.from_row(row, ref) for row, ref in rows]


@strawberry.type
class HolidayCalendar:
    """A year's public holidays and make-up working days as the regulator loaded them."""

    year: int
    holidays: list[date]
    workdays: list[date]

    @classmethod
    def from_year(cls, year: YearCalendar) -> HolidayCalendar:
        """The GraphQL view of a loaded year."""
        return cls(year=year.year, holidays=sorted(year.holidays), workdays=sorted(year.workdays))


# ---------------------------------------------------------------- inputs and payloads


@strawberry.input
class SubmitMethodologyInput:
    """A methodology version; scenario ones need activityUnit, gramsPerUnit and dailyCapGrams."""

    code: str
    name: str
    kind: MethodologyKind
    methodology_class: MethodologyClass
    version: str
    activity_unit: str | None = None
    grams_per_unit: BigInt | None = None
    daily_cap_grams: BigInt | None = None


@strawberry.input
class PublishInput:
    """The object to publish."""

    id: strawberry.ID


@strawberry.input
class StatusChangeInput:
    """A published methodology or scenario to suspend, or a suspended one to reinstate, and why."""

    id: strawberry.ID
    reason: str


@strawberry.input
class SubmitScenarioInput:
    """A scenario on a published scenario methodology, with the Art. 14 commitment."""

    methodology_id: strawberry.ID
    code: str
    name: str
    no_double_counting_commitment: bool


@strawberry.input
class AssessInput:
    """A center or exchange assessment; publicityStartsOn when publicity was already posted."""

    id: strawberry.ID
    approve: bool
    comment: str | None = None
    publicity_starts_on: date | None = None


@strawberry.input
class ScenarioAuthorizationInput:
    """The scenario a resident authorizes or revokes."""

    scenario_code: str


@strawberry.input
class LoadHolidayCalendarInput:
    """A year's public holidays and make-up working days."""

    year: int
    holidays: list[date]
    workdays: list[date]


@strawberry.type
class MethodologyPayload:
    """The methodology after the mutation, or why not."""

    methodology: Methodology | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class ScenarioPayload:
    """The scenario after the mutation, or why not."""

    scenario: Scenario | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class ScenarioAuthorizationPayload:
    """The authorization after the mutation, or why not."""

    authorization: ScenarioAuthorization | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class LoadHolidayCalendarPayload:
    """The loaded year, or why not."""

    calendar: HolidayCalendar | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


def _methodology_refused(error: UserError) -> MethodologyPayload:
    return MethodologyPayload(user_errors=[error])


def _scenario_refused(error: UserError) -> ScenarioPayload:
    return ScenarioPayload(user_errors=[error])


def _authorization_refused(error: UserError) -> ScenarioAuthorizationPayload:
    return ScenarioAuthorizationPayload(user_errors=[error])


# ---------------------------------------------------------------- root fields


@strawberry.type
class Query:
    """Methodologies and scenarios."""

    @strawberry.field(
        permission_classes=[SignedIn],
        description="Published methodologies to anyone signed in; staff see every status.",
    )
    async def methodologies(
        self,
        info: Info,
        status: MethodologyStatus | None = None,
        kind: MethodologyKind | None = None,
    ) -> list[Methodology]:
        """Methodologies by status and kind."""
        rows = await methodologies.list_methodologies(info.context.caller(), status, kind)
        return [Methodology.from_row(r) for r in rows]

    @strawberry.field(
        permission_classes=[SignedIn],
        description="Published scenarios to anyone signed in; staff see all; operators their own.",
    )
    async def scenarios(self, info: Info, status: ScenarioStatus | None = None) -> list[Scenario]:
        """Reduction scenarios by status."""
        views = await scenarios.list_scenarios(info.context.caller(), status)
        return [Scenario.from_view(v) for v in views]


@strawberry.type
class Mutation:
    """The approval path and resident consent."""

    @strawberry.mutation(permission_classes=[MethodologySubmitter])
    async def submit_methodology(
        self, info: Info, input: SubmitMethodologyInput
    ) -> MethodologyPayload:
        """Submit a methodology version for the center's assessment."""
        principal = info.context.caller()

        async def run() -> MethodologyPayload:
            row = await methodologies.submit_methodology(
                principal,
                code=input.code,
                name=input.name,
                kind=input.kind.value,
                methodology_class=input.methodology_class.value,
                version=input.version,
                activity_unit=input.activity_unit,
                grams_per_unit=input.grams_per_unit,
                daily_cap_grams=input.daily_cap_grams,
            )
            return await _methodology_payload(row)

        return await attempt(run, _methodology_refused)

    @strawberry.mutation(permission_classes=[Center])
    async def assess_methodology(self, info: Info, input: ReviewInput) -> MethodologyPayload:
        """Center: SUBMITTED -> PUBLIC_COMMENT, or REJECTED."""
        principal = info.context.caller()

        async def run() -> MethodologyPayload:
            row = await methodologies.assess_methodology(
                principal, decode_id("Methodology", input.id), input.approve, input.comment
            )
            return await _methodology_payload(row)

        return await attempt(run, _methodology_refused)

    @strawberry.mutation(permission_classes=[Regulator])
    async def publish_methodology(self, info: Info, input: PublishInput) -> MethodologyPayload:
        """Regulator: PUBLIC_COMMENT -> PUBLISHED."""
        principal = info.context.caller()

        async def run() -> MethodologyPayload:
            row = await methodologies.publish_methodology(
                principal, decode_id("Methodology", input.id)
            )
            return await _methodology_payload(row)

        return await attempt(run, _methodology_refused)

    @strawberry.mutation(permission_classes=[ScenarioOperator])
    async def submit_scenario(self, info: Info, input: SubmitScenarioInput) -> ScenarioPayload:
        """A scenario operator submits a scenario for the center's and exchange's assessment."""
        principal = info.context.caller()

        async def run() -> ScenarioPayload:
            row = await scenarios.submit_scenario(
                principal,
                methodology_id=decode_id("Methodology", input.methodology_id, "methodologyId"),
                code=input.code,
                name=input.name,
                no_double_counting_commitment=input.no_double_counting_commitment,
            )
            return await _scenario_payload(row)

        return await attempt(run, _scenario_refused)

    @strawberry.mutation(permission_classes=[CenterOrExchange])
    async def assess_scenario(self, info: Info, input: AssessInput) -> ScenarioPayload:
        """Center and exchange each assess; both approvals open a 5-working-day publicity."""
        principal = info.context.caller()

        async def run() -> ScenarioPayload:
            row = await scenarios.assess_scenario(
                principal,
                decode_id("Scenario", input.id),
                input.approve,
                input.comment,
                input.publicity_starts_on,
            )
            return await _scenario_payload(row)

        return await attempt(run, _scenario_refused)

    @strawberry.mutation(permission_classes=[Regulator])
    async def publish_scenario(self, info: Info, input: PublishInput) -> ScenarioPayload:
        """Regulator, only after the publicity period has ended."""
        principal = info.context.caller()

        async def run() -> ScenarioPayload:
            row = await scenarios.publish_scenario(principal, decode_id("Scenario", input.id))
            return await _scenario_payload(row)

        return await attempt(run, _scenario_refused)

    @strawberry.mutation(permission_classes=[Regulator])
    async def suspend_scenario(self, info: Info, input: StatusChangeInput) -> ScenarioPayload:
        """Regulator (Art. 8): a published scenario stops taking records, issuing and consents."""
        return await _change_status(info, input, "Scenario", suspension.suspend_scenario,
                                    _scenario_payload, _scenario_refused)

    @strawberry.mutation(permission_classes=[Regulator])
    async def reinstate_scenario(self, info: Info, input: StatusChangeInput) -> ScenarioPayload:
        """Regulator: a suspended scenario is published again (what occurred while it was
        suspended stays refused)."""
        return await _change_status(info, input, "Scenario", suspension.reinstate_scenario,
                                    _scenario_payload, _scenario_refused)

    @strawberry.mutation(permission_classes=[Regulator])
    async def suspend_methodology(self, info: Info, input: StatusChangeInput) -> MethodologyPayload:
        """Regulator (Art. 8): no new scenario is submitted on a suspended methodology."""
        return await _change_status(info, input, "Methodology", suspension.suspend_methodology,
                                    _methodology_payload, _methodology_refused)

    @strawberry.mutation(permission_classes=[Regulator])
    async def reinstate_methodology(self, info: Info, input: StatusChangeInput) -> MethodologyPayload:
        """Regulator: a suspended methodology is published again."""
        return await _change_status(info, input, "Methodology", suspension.reinstate_methodology,
                                    _methodology_payload, _methodology_refused)

    @strawberry.mutation(permission_classes=[Regulator])
    async def load_holiday_calendar(
        self, info: Info, input: LoadHolidayCalendarInput
    ) -> LoadHolidayCalendarPayload:
        """Regulator: a year's holidays and make-up working days (they take precedence)."""
        principal = info.context.caller()

        async def run() -> LoadHolidayCalendarPayload:
            year = await load_holiday_calendar(principal, input.year, input.holidays, input.workdays)
            return LoadHolidayCalendarPayload(calendar=HolidayCalendar.from_year(year))

        return await attempt(run, lambda e: LoadHolidayCalendarPayload(user_errors=[e]))

    @strawberry.mutation(permission_classes=[Resident])
    async def authorize_scenario(
        self, info: Info, input: ScenarioAuthorizationInput
    ) -> ScenarioAuthorizationPayload:
        """The resident opts in to a scenario; again while active answers the active grant."""
        principal = info.context.caller()

        async def run() -> ScenarioAuthorizationPayload:
            row, ref = await authorizations.authorize_scenario(principal, input.scenario_code)
            return ScenarioAuthorizationPayload(
                authorization=ScenarioAuthorization.from_row(row, ref)
            )

        return await attempt(run, _authorization_refused)

    @strawberry.mutation(permission_classes=[Resident])
    async def revoke_scenario_authorization(
        self, info: Info, input: ScenarioAuthorizationInput
    ) -> ScenarioAuthorizationPayload:
        """The resident opts out; records after now no longer count."""
        principal = info.context.caller()

        async def run() -> ScenarioAuthorizationPayload:
            row, ref = await authorizations.revoke_scenario_authorization(
                principal, input.scenario_code
            )
            return ScenarioAuthorizationPayload(
                authorization=ScenarioAuthorization.from_row(row, ref)
            )

        return await attempt(run, _authorization_refused)


async def _scenario_payload(row: m.Scenario) -> ScenarioPayload:
    """The payload of a scenario mutation that went through."""
    return ScenarioPayload(scenario=Scenario.from_view(await scenarios.scenario_view(row)))


async def _methodology_payload(row: m.Methodology) -> MethodologyPayload:
    """The payload of a methodology mutation that went through."""
    return MethodologyPayload(methodology=Methodology.from_row(row))


async def _change_status(
    info: Info, input: StatusChangeInput, type_name: str,
    change: Callable[[Principal, int, str | None], Awaitable[Row]],
    payload: Callable[[Row], Awaitable[Payload]], refused: Callable[[UserError], Payload],
) -> Payload:
    """A scenario or methodology (`type_name`) suspended or reinstated, as its payload."""
    principal = info.context.caller()

    async def run() -> Payload:
        return await payload(await change(principal, decode_id(type_name, input.id), input.reason))

    return await attempt(run, refused)
