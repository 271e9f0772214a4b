"""Pure rules of points: growth levels, behavior rules, daily caps and event periods."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from app.errors import InvalidInput

SHANGHAI = ZoneInfo("Asia/Shanghai")
MAX_EVENT_AGE = timedelta(days=90)
CLOCK_SKEW = timedelta(minutes=5)
MAX_EVENTS = 1000
MAX_RULES = 100
MAX_EXPERIENCE_PER_EVENT = 100_000
# Lifetime experience stops here (the largest GraphQL Int): it clips like a daily cap.
MAX_EXPERIENCE = 2**31 - 1
MAX_LEVELS = 50
LEVEL_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
BEHAVIOR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


@dataclass(frozen=True)
class Level:
    """A growth level: reached at `min_experience` of lifetime experience."""

    code: str
    name: str
    min_experience: int


@dataclass(frozen=True)
class Rule:
    """A behavior rule: experience per event and the most one person earns from it a day."""

    behavior: str
    experience: int
    daily_cap: int


def level_for(experience: int, levels: Sequence[Level]) -> tuple[Level | None, Level | None]:
    """The level reached with `experience` and the next one (None at the top), from a table."""
    current: Level | None = None
    following: Level | None = None
    for level in sorted(levels, key=lambda lv: lv.min_experience):
        if level.min_experience <= experience:
            current = level
        elif following is None:
            following = level
    return current, following


def experience_to_next(experience: int, following: Level | None) -> int | None:
    """Experience still needed for the next level, or None at the top."""
    return None if following is None else max(0, following.min_experience - experience)


def check_levels(levels: Sequence[Level]) -> list[Level]:
    """A growth table: 1..50 levels, unique codes, strictly rising thresholds starting at 0."""
    if not 0 < len(levels) <= MAX_LEVELS:
        raise InvalidInput(f"Give 1 to {MAX_LEVELS} levels.", "levels")
    out: list[Level] = []
    for index, level in enumerate(levels):
        code, name = level.code.strip(), level.name.strip()
        if not LEVEL_CODE.match(code):
            raise InvalidInput(
                f"levels[{index}].code must be 1 to 32 letters, digits, '-' or '_'.", "levels"
            )
        if not name or len(name) > 64 or not name.isprintable():
            raise InvalidInput(f"levels[{index}].name must be 1 to 64 characters.", "levels")
        if not 0 <= level.min_experience <= 2**31 - 1:
            raise InvalidInput(f"levels[{index}].minExperience must be 0 or more.", "levels")
        out.append(Level(code, name, level.min_experience))
    if len({lv.code for lv in out}) != len(out):
        raise InvalidInput("Level codes must be unique.", "levels")
    thresholds = [lv.min_experience for lv in out]
    if thresholds[0] != 0 or any(b <= a for a, b in zip(thresholds, thresholds[1:], strict=False)):
        raise InvalidInput(
            "minExperience must start at 0 and rise strictly from level to level.", "levels"
        )
    return out


def check_rules(rules: Sequence[Rule]) -> list[Rule]:
    """Behavior rules: 1..100, unique behaviors, experience 1..100,000, daily cap at least 1."""
    if not 0 < len(rules) <= MAX_RULES:
        raise InvalidInput(f"Give 1 to {MAX_RULES} behavior rules.", "rules")
    out: list[Rule] = []
    for index, rule in enumerate(rules):
        behavior = rule.behavior.strip()
        if not BEHAVIOR.match(behavior):
            raise InvalidInput(
                f"rules[{index}].behavior must be 1 to 64 letters, digits, '.', ':', '-' or '_'.",
                "rules",
            )
        if not 0 < rule.experience <= MAX_EXPERIENCE_PER_EVENT:
            raise InvalidInput(
                f"rules[{index}].experience must be 1 to {MAX_EXPERIENCE_PER_EVENT}.", "rules"
            )
        if not 0 < rule.daily_cap <= 2**31 - 1:
            raise InvalidInput(f"rules[{index}].dailyCap must be at least 1.", "rules")
        out.append(Rule(behavior, rule.experience, rule.daily_cap))
    if len({r.behavior for r in out}) != len(out):
        raise InvalidInput("Each behavior may have one rule only.", "rules")
    return out


def shanghai_day(moment: datetime) -> date:
    """The Asia/Shanghai calendar day of an aware datetime."""
    return moment.astimezone(SHANGHAI).date()


def in_period(occurred_at: datetime, now: datetime) -> bool:
    """True unless the event is in the future (beyond clock skew) or older than 90 days."""
    return now - MAX_EVENT_AGE <= occurred_at <= now + CLOCK_SKEW


def clip_to_cap(experience: int, used_today: int, daily_cap: int, lifetime: int = 0) -> int:
    """Experience an event earns: what it computed, clipped to what is left under the daily cap
    and under MAX_EXPERIENCE after the person's `lifetime` experience."""
    return max(0, min(experience, daily_cap - used_today, MAX_EXPERIENCE - lifetime))
