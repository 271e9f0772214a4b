"""GraphQL types of points shown on the account and on `me`: levels, growth, credit standing."""

from __future__ import annotations

from datetime import datetime

import strawberry

from graphql_schema.pagination import Connection, build_connection, decode_cursor, page_size
from points import growth as growth_service
from points.credit import Standing
from points.rules import Level


@strawberry.type
class GrowthLevel:
    """A growth level, reached at minExperience of lifetime experience."""

    code: str
    name: str
    min_experience: int

    @classmethod
    def of(cls, level: Level | None) -> GrowthLevel | None:
        """The GraphQL view of a level, or None."""
        if level is None:
            return None
        return cls(code=level.code, name=level.name, min_experience=level.min_experience)


@strawberry.type
class CreditFactor:
    """One input of the credit score and how much it adds (or takes away)."""

    name: str
    contribution: int


@strawberry.type
class CreditStanding:
    """Credit standing (Art. 24): a score 0-1000, its grade, and why."""

    score: int
    grade: str = strawberry.field(description="C < B < A < AA < AAA")
    updated_at: datetime
    factors: list[CreditFactor]

    @classmethod
    def of(cls, standing: Standing) -> CreditStanding:
        """The GraphQL view of a standing."""
        return cls(
            score=standing.score,
            grade=standing.grade,
            updated_at=standing.updated_at,
            factors=[CreditFactor(name=n, contribution=c) for n, c in standing.factors],
        )


@strawberry.type
class BehaviorScenarioRef:
    """The behavior scenario an event came from."""

    code: str
    name: str


@strawberry.type
class BehaviorRecord:
    """One behavior event: the experience it earned under the daily cap, and when it happened."""

    behavior: str
    experience: int
    computed_experience: int
    occurred_at: datetime
    scenario: BehaviorScenarioRef

    @classmethod
    def of(cls, entry: growth_service.BehaviorEntry) -> BehaviorRecord:
        """The GraphQL view of a history entry."""
        return cls(
            behavior=entry.behavior,
            experience=entry.experience,
            computed_experience=entry.computed_experience,
            occurred_at=entry.occurred_at,
            scenario=BehaviorScenarioRef(code=entry.scenario_code, name=entry.scenario_name),
        )


@strawberry.type
class LevelCrossing:
    """Reaching a growth level, and when."""

    from_code: str | None
    to_code: str
    experience: int
    crossed_at: datetime


@strawberry.type
class Growth:
    """The resident's growth: lifetime experience, level, next level, history."""

    participant_id: strawberry.Private[int]
    experience: int = strawberry.field(
        description="Lifetime experience; it stops at 2147483647, the largest Int.")
    level: GrowthLevel | None
    next_level: GrowthLevel | None
    experience_to_next_level: int | None

    @classmethod
    def of(cls, participant_id: int, growth: growth_service.Growth) -> Growth:
        """The GraphQL view of a participant's growth."""
        return cls(
            participant_id=participant_id,
            experience=growth.experience,
            level=GrowthLevel.of(growth.level),
            next_level=GrowthLevel.of(growth.next_level),
            experience_to_next_level=growth.experience_to_next_level,
        )

    @strawberry.field(description=(
        "Behavior events in the order they were recorded, the latest first: what was earned"
        " most recently. An operator may send an event up to 90 days after its occurredAt."))
    async def behaviors(self, first: int, after: str | None = None) -> Connection[BehaviorRecord]:
        """Page through the growth history."""
        size = page_size(first)
        rows = await growth_service.behavior_page(self.participant_id, size, decode_cursor("behavior", after))
        return build_connection("behavior", rows, size, lambda r: r.id, BehaviorRecord.of)

    @strawberry.field(description="Levels reached, newest first.")
    async def level_crossings(
        self, first: int, after: str | None = None
    ) -> Connection[LevelCrossing]:
        """Page through the levels reached, each with its time."""
        size = page_size(first)
        rows = await growth_service.crossing_page(self.participant_id, size, decode_cursor("crossing", after))
        return build_connection(
            "crossing", rows, size, lambda r: r.id,
            lambda r: LevelCrossing(from_code=r.from_code, to_code=r.to_code,
                                    experience=r.experience, crossed_at=r.crossed_at),
        )
