"""Growth (Art. 24): the level table, a participant's level from lifetime experience, history."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from app import audit
from app.auth import Principal
from app.errors import InvalidState
from points.models import (
    BehaviorEvent,
    BehaviorScenario,
    Experience,
    GrowthLevel,
    LevelCrossing,
)
from points.rules import Level, check_levels, experience_to_next, level_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Growth:
    """Lifetime experience, the level it reaches, the next level and what is missing to it."""

    experience: int
    level: Level | None
    next_level: Level | None

    @property
    def experience_to_next_level(self) -> int | None:
        """Experience still needed for the next level (None at the top)."""
        return experience_to_next(self.experience, self.next_level)


@dataclass(frozen=True)
class BehaviorEntry:
    """One behavior event in a participant's growth history."""

    id: int
    behavior: str
    experience: int
    computed_experience: int
    occurred_at: datetime
    scenario_code: str
    scenario_name: str


def growth_of(experience: int, levels: list[Level]) -> Growth:
    """The Growth for an experience total under a level table."""
    current, following = level_for(experience, levels)
    return Growth(experience, current, following)


async def levels(conn: BaseDBAsyncClient | None = None) -> list[Level]:
    """The growth table, lowest level first."""
    query = GrowthLevel.all().order_by("min_experience")
    if conn is not None:
        query = query.using_db(conn)
    return [Level(r.code, r.name, r.min_experience) for r in await query]


async def growth(participant_id: int) -> Growth:
    """A participant's growth now."""
    row = await Experience.filter(participant_id=participant_id).only("total").first()
    return growth_of(row.total if row else 0, await levels())


async def set_levels(principal: Principal, table: list[Level]) -> list[Level]:
    """Center: replace the growth table; levels follow from lifetime experience at once."""
    principal.require("center")
    checked = check_levels(table)
    try:
        async with in_transaction() as conn:
            await GrowthLevel.all().using_db(conn).delete()
            await GrowthLevel.bulk_create(
                [GrowthLevel(code=lv.code, name=lv.name, min_experience=lv.min_experience)
                 for lv in checked],
                using_db=conn,
            )
    except IntegrityError:
        raise InvalidState("The growth table was being changed at the same time; retry.") from None
    await audit.record(
        principal, "set_growth_levels", "growth_table", "current",
        ", ".join(f"{lv.code}>={lv.min_experience}" for lv in checked),
    )
    return checked


async def record_crossings(
    conn: BaseDBAsyncClient, gains: dict[int, tuple[int, int]], now: datetime | None = None
) -> None:
    """Record every level reached by participants whose experience rose from old to new."""
    table = await levels(conn)
    rows: list[LevelCrossing] = []
    for participant_id, (old, new) in sorted(gains.items()):
        before, _ = level_for(old, table)
        for level in table:
            if old < level.min_experience <= new:
                rows.append(LevelCrossing(
                    participant_id=participant_id,
                    from_code=before.code if before else None,
                    to_code=level.code,
                    experience=new,
                    crossed_at=now or datetime.now(UTC),
                ))
                before = level
    if rows:
        await LevelCrossing.bulk_create(rows, using_db=conn)


async def behavior_page(
    participant_id: int, first: int, before_id: int | None
) -> list[BehaviorEntry]:
    """Up to `first + 1` of a participant's behavior events, latest recorded first, before before_id."""
    query = BehaviorEvent.filter(participant_id=participant_id)
    if before_id is not None:
        query = query.filter(id__lt=before_id)
    rows = await query.order_by("-id").limit(first + 1)
    scenarios = {
        sid: (code, name)
        for sid, code, name in await BehaviorScenario.filter(
            id__in={r.scenario_id for r in rows}
        ).values_list("id", "code", "name")
    }
    return [
        BehaviorEntry(r.id, r.behavior, r.earned_experience, r.computed_experience,
                      r.occurred_at, *scenarios.get(r.scenario_id, ("", "")))
        for r in rows
    ]


async def crossing_page(
    participant_id: int, first: int, before_id: int | None
) -> list[LevelCrossing]:
    """Up to `first + 1` of a participant's level crossings, newest first."""
    query = LevelCrossing.filter(participant_id=participant_id)
    if before_id is not None:
        query = query.filter(id__lt=before_id)
    return await query.order_by("-id").limit(first + 1)
