"""Chinese working days for legal deadlines (publicity periods), never guessed.

Two sources: the `chinese_calendar` package (it knows 2004-2026) and holiday calendars the
regulator loads per year (table `registry_holiday_calendar`), which take precedence. A date in a
year known to neither is refused with a DomainError naming the year.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import chinese_calendar
from tortoise.transactions import in_transaction

from app import audit
from app.auth import Principal
from app.errors import InvalidInput, InvalidState

log = logging.getLogger(__name__)

SHANGHAI = ZoneInfo("Asia/Shanghai")
MIN_YEAR, MAX_YEAR = 2000, 2100
# A working-day count never needs more than this many calendar days (longest Chinese holiday
# block plus weekends is far below it); a bound keeps a bad calendar from looping forever.
_MAX_SCAN_DAYS = 366


def shanghai_today(now: datetime | None = None) -> date:
    """Today's date in Asia/Shanghai (the calendar day deadlines are counted in)."""
    return (now or datetime.now(SHANGHAI)).astimezone(SHANGHAI).date()


@dataclass(frozen=True)
class YearCalendar:
    """A loaded year: public holidays (days off) and make-up working days (usually weekends)."""

    year: int
    holidays: frozenset[date]
    workdays: frozenset[date]

    def is_working_day(self, day: date) -> bool:
        """Make-up days work, holidays rest, otherwise Monday to Friday work."""
        if day in self.workdays:
            return True
        return day.weekday() < 5 and day not in self.holidays


def unknown_year(year: int) -> InvalidState:
    """The refusal for a date whose year has no holiday calendar."""
    return InvalidState(
        f"No holiday calendar is known for {year}: the regulator must load the {year} public "
        f"holidays and make-up working days (loadHolidayCalendar or `puhui calendar load`) "
        f"before a deadline in {year} can be computed."
    )


class WorkingDays:
    """Working-day arithmetic over loaded years first, then the chinese_calendar package."""

    def __init__(self, loaded: Mapping[int, YearCalendar] | None = None) -> None:
        self.loaded = dict(loaded or {})

    def is_working_day(self, day: date) -> bool:
        """True on a working day; INVALID_STATE when no calendar knows the year."""
        year_calendar = self.loaded.get(day.year)
        if year_calendar is not None:
            return year_calendar.is_working_day(day)
        try:
            return bool(chinese_calendar.is_workday(day))
        except NotImplementedError:
            raise unknown_year(day.year) from None

    def next_working_day(self, day: date) -> date:
        """The first working day strictly after `day`."""
        return self.nth_working_day(day + timedelta(days=1), 1)

    def nth_working_day(self, start: date, n: int) -> date:
        """The n-th working day counting `start` itself when it is a working day (n >= 1)."""
        if n < 1:
            raise ValueError("n must be at least 1")
        day, seen = start, 0
        for _ in range(_MAX_SCAN_DAYS):
            if self.is_working_day(day):
                seen += 1
                if seen == n:
                    return day
            day += timedelta(days=1)
        raise InvalidState(f"No {n} working days found within a year from {start.isoformat()}.")


def parse_year_calendar(year: object, holidays: Iterable[object], workdays: Iterable[object]
                        ) -> YearCalendar:
    """Validate a year's lists: ISO dates inside the year, no date in both lists."""
    if isinstance(year, bool) or not isinstance(year, int) or not MIN_YEAR <= year <= MAX_YEAR:
        raise InvalidInput(f"year must be a whole number from {MIN_YEAR} to {MAX_YEAR}.", "year")
    parsed: dict[str, frozenset[date]] = {}
    for name, values in (("holidays", holidays), ("workdays", workdays)):
        values = list(values)
        if len(values) > 366:
            raise InvalidInput(f"{name}: a year has at most 366 days.", name)
        days: set[date] = set()
        for value in values:
            day = _as_date(value, name)
            if day.year != year:
                raise InvalidInput(f"{name}: {day.isoformat()} is not in {year}.", name)
            days.add(day)
        parsed[name] = frozenset(days)
    both = sorted(parsed["holidays"] & parsed["workdays"])
    if both:
        raise InvalidInput(
            f"{both[0].isoformat()} is listed both as a holiday and as a working day.", "workdays"
        )
    return YearCalendar(year, parsed["holidays"], parsed["workdays"])


def _as_date(value: object, field: str) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise InvalidInput(f"{field}: {value!r} is not a date (YYYY-MM-DD).", field)


async def loaded_calendars() -> dict[int, YearCalendar]:
    """Every year the regulator has loaded (a handful of rows)."""
    from registry.models import HolidayCalendar

    rows = await HolidayCalendar.all()
    return {
        row.year: YearCalendar(
            row.year,
            frozenset(date.fromisoformat(d) for d in row.holidays),
            frozenset(date.fromisoformat(d) for d in row.workdays),
        )
        for row in rows
    }


async def working_days() -> WorkingDays:
    """The working-day calendar as it stands now (loaded years included)."""
    return WorkingDays(await loaded_calendars())


async def is_working_day(day: date) -> bool:
    """True on a Chinese working day; INVALID_STATE for a year no calendar knows."""
    return (await working_days()).is_working_day(day)


async def next_working_day(day: date) -> date:
    """The first working day strictly after `day`."""
    return (await working_days()).next_working_day(day)


async def nth_working_day(start: date, n: int) -> date:
    """The n-th working day counting `start` when it is itself a working day."""
    return (await working_days()).nth_working_day(start, n)


async def save_calendar(year_calendar: YearCalendar, loaded_by: str) -> None:
    """Store (or replace) a year's calendar; it takes precedence over the package from now on."""
    from registry.models import HolidayCalendar

    values = {
        "holidays": sorted(d.isoformat() for d in year_calendar.holidays),
        "workdays": sorted(d.isoformat() for d in year_calendar.workdays),
        "loaded_by": loaded_by,
    }
    await HolidayCalendar.update_or_create(defaults=values, year=year_calendar.year)
    log.info("holiday calendar %d loaded by %s", year_calendar.year, loaded_by)


async def fill_unknown_years(years: Iterable[int], loaded_by: str) -> list[int]:
    """Store a placeholder (weekends off, no holidays) for each of `years` that neither a loaded
    calendar nor the package knows; the years filled. For demonstrations and tests only: a
    real deployment loads the official calendar instead."""
    known = WorkingDays(await loaded_calendars())
    filled = []
    for year in sorted(set(years)):
        try:
            known.is_working_day(date(year, 6, 1))
        except InvalidState:
            await save_calendar(parse_year_calendar(year, [], []), loaded_by)
            filled.append(year)
    return filled


async def load_calendar_file(path: str | Path, loaded_by: str) -> int:
    """Load {"year", "holidays", "workdays"} from a JSON file; return the year."""
    try:
        raw = json.loads(await asyncio.to_thread(Path(path).read_text, encoding="utf-8"))
    except (OSError, UnicodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"cannot read a calendar from {path}: {exc}") from None
    if not isinstance(raw, dict) or not all(
        isinstance(raw.get(k), list) for k in ("holidays", "workdays")
    ):
        raise InvalidInput('a calendar file is {"year": Y, "holidays": [...], "workdays": [...]}')
    year_calendar = parse_year_calendar(raw.get("year"), raw["holidays"], raw["workdays"])
    await save_calendar(year_calendar, loaded_by)
    return year_calendar.year


async def load_holiday_calendar(
    principal: Principal, year: int, holidays: Iterable[date], workdays: Iterable[date]
) -> YearCalendar:
    """Regulator: load (or replace) a year's holidays and make-up working days."""
    principal.require("regulator")
    year_calendar = parse_year_calendar(year, holidays, workdays)
    async with in_transaction():
        await save_calendar(year_calendar, principal.subject)
        await audit.record(principal, "calendar.load", "HolidayCalendar", year_calendar.year)
    return year_calendar
