"""Working days: real 2026 facts from chinese_calendar, a loaded 2027, refusal of unknown years."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from app.calendar import WorkingDays, parse_year_calendar, shanghai_today
from app.errors import InvalidInput, InvalidState

Y2027 = parse_year_calendar(
    2027,
    ["2027-01-01", "2027-01-02", "2027-01-03", "2027-02-06", "2027-02-07", "2027-02-08",
     "2027-02-09", "2027-02-10", "2027-02-11", "2027-02-12"],
    ["2027-02-13", "2027-02-14"],
)


def test_2026_national_day_and_its_make_up_saturday():
    cal = WorkingDays()
    for day in range(1, 8):
        assert not cal.is_working_day(date(2026, 10, day))
    assert cal.is_working_day(date(2026, 10, 10))  # Saturday, a make-up working day
    assert not cal.is_working_day(date(2026, 10, 11))  # an ordinary Sunday
    assert cal.is_working_day(date(2026, 10, 8))


def test_five_working_days_across_national_day_count_the_make_up_saturday():
    cal = WorkingDays()
    # 09-30 (1), holidays 10-01..07, 10-08 (2), 10-09 (3), Sat 10-10 (4), Sun off, 10-12 (5)
    assert cal.nth_working_day(date(2026, 9, 30), 5) == date(2026, 10, 12)
    # a start on a holiday counts from the first working day after it
    assert cal.nth_working_day(date(2026, 10, 1), 5) == date(2026, 10, 13)
    assert cal.nth_working_day(date(2026, 10, 1), 1) == date(2026, 10, 8)


def test_next_working_day_is_strictly_after():
    cal = WorkingDays()
    assert cal.next_working_day(date(2026, 9, 30)) == date(2026, 10, 8)
    assert cal.next_working_day(date(2026, 10, 9)) == date(2026, 10, 10)
    assert cal.next_working_day(date(2026, 11, 20)) == date(2026, 11, 23)  # Friday -> Monday


def test_a_deadline_crossing_into_an_unknown_year_is_refused_naming_it():
    cal = WorkingDays()
    # 12-28 (1) .. 12-31 (4): the 5th working day lies in 2027, which nobody knows yet
    with pytest.raises(InvalidState) as refused:
        cal.nth_working_day(date(2026, 12, 28), 5)
    assert "2027" in refused.value.message
    # a deadline inside 2026 never looks beyond it
    assert cal.nth_working_day(date(2026, 12, 21), 5) == date(2026, 12, 25)


def test_a_loaded_2027_answers_the_crossing_deadline():
    cal = WorkingDays({2027: Y2027})
    # 12-28..12-31 (4), 2027-01-01..03 holidays, Monday 01-04 (5)
    assert cal.nth_working_day(date(2026, 12, 28), 5) == date(2027, 1, 4)
    assert not cal.is_working_day(date(2027, 2, 8))  # a Monday holiday
    assert cal.is_working_day(date(2027, 2, 14))  # a make-up Sunday
    assert cal.next_working_day(date(2027, 2, 5)) == date(2027, 2, 13)


def test_a_loaded_year_takes_precedence_over_the_package():
    override = parse_year_calendar(2026, ["2026-11-23"], ["2026-11-22"])
    cal = WorkingDays({2026: override})
    assert not cal.is_working_day(date(2026, 11, 23))
    assert cal.is_working_day(date(2026, 11, 22))
    # the package's own holidays no longer apply to the overridden year
    assert cal.is_working_day(date(2026, 10, 1))


def test_years_before_the_package_are_unknown_too():
    with pytest.raises(InvalidState) as refused:
        WorkingDays().is_working_day(date(2003, 5, 6))
    assert "2003" in refused.value.message


@pytest.mark.parametrize(
    ("year", "holidays", "workdays", "field"),
    [
        (2027, ["2026-12-31"], [], "holidays"),
        (2027, [], ["2028-01-01"], "workdays"),
        (2027, ["2027-01-01"], ["2027-01-01"], "workdays"),
        (2027, ["2027-13-01"], [], "holidays"),
        (2027, [20270101], [], "holidays"),
        ("2027", [], [], "year"),
        (True, [], [], "year"),
        (1999, [], [], "year"),
        (2027, ["2027-01-01"] * 367, [], "holidays"),
    ],
)
def test_calendar_lists_are_validated(year, holidays, workdays, field):
    with pytest.raises(InvalidInput) as refused:
        parse_year_calendar(year, holidays, workdays)
    assert refused.value.field == field


def test_shanghai_today_is_utc_plus_8():
    late_utc = datetime(2026, 12, 31, 16, 30, tzinfo=UTC)
    assert shanghai_today(late_utc) == date(2027, 1, 1)
    assert shanghai_today(late_utc - timedelta(hours=1)) == date(2026, 12, 31)
