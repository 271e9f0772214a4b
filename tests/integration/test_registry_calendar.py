"""Loaded holiday calendars: the New Year crossing, precedence, the file loader and the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import date
from pathlib import Path

import pytest

from app.calendar import (
    fill_unknown_years,
    is_working_day,
    load_calendar_file,
    next_working_day,
    nth_working_day,
)
from app.errors import InvalidInput, InvalidState
from registry.models import HolidayCalendar

ROOT = Path(__file__).resolve().parents[2]
YEAR_2027 = {
    "year": 2027,
    "holidays": ["2027-01-01", "2027-01-02", "2027-01-03", "2027-02-06", "2027-02-07",
                 "2027-02-08", "2027-02-09", "2027-02-10", "2027-02-11", "2027-02-12"],
    "workdays": ["2027-02-13", "2027-02-14"],
}


def _write(path: Path, content: object) -> Path:
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


async def test_a_deadline_into_2027_is_refused_until_2027_is_loaded(database, tmp_path):
    await HolidayCalendar.filter(year=2027).delete()
    with pytest.raises(InvalidState) as refused:
        await nth_working_day(date(2026, 12, 28), 5)
    assert "2027" in refused.value.message
    assert await nth_working_day(date(2026, 12, 21), 5) == date(2026, 12, 25)

    year = await load_calendar_file(_write(tmp_path / "2027.json", YEAR_2027), "regulator-test")
    assert year == 2027
    assert await nth_working_day(date(2026, 12, 28), 5) == date(2027, 1, 4)
    assert await next_working_day(date(2027, 2, 5)) == date(2027, 2, 13)
    assert await is_working_day(date(2027, 2, 14))
    row = await HolidayCalendar.get(year=2027)
    assert row.loaded_by == "regulator-test" and "2027-01-01" in row.holidays


async def test_a_loaded_year_takes_precedence_over_the_package(database, tmp_path):
    # chinese_calendar: Monday 2004-03-08 works, Sunday 2004-03-07 rests; the loaded 2004 swaps them
    assert await is_working_day(date(2004, 3, 8))
    assert not await is_working_day(date(2004, 3, 7))
    await load_calendar_file(_write(tmp_path / "2004.json", {
        "year": 2004, "holidays": ["2004-03-08"], "workdays": ["2004-03-07"]}), "regulator-test")
    assert not await is_working_day(date(2004, 3, 8))
    assert await is_working_day(date(2004, 3, 7))


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        [],
        {"year": 2031, "holidays": "2031-01-01", "workdays": []},
        {"year": 2031, "holidays": ["2030-12-31"], "workdays": []},
        {"year": 2031, "holidays": ["2031-01-01"], "workdays": ["2031-01-01"]},
        {"year": "2031", "holidays": [], "workdays": []},
    ],
)
async def test_bad_calendar_files_are_refused_and_store_nothing(database, tmp_path, content):
    with pytest.raises(InvalidInput):
        await load_calendar_file(_write(tmp_path / "bad.json", content), "regulator-test")
    assert not await HolidayCalendar.filter(year=2031).exists()


async def test_missing_file_is_refused(database, tmp_path):
    with pytest.raises(InvalidInput):
        await load_calendar_file(tmp_path / "absent.json", "regulator-test")


async def test_the_cli_loads_a_file_and_refuses_a_bad_one_in_one_line(database, tmp_path):
    env = {**os.environ, "PUHUI_DATABASE_URL": database}

    async def cli(path: Path) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sys; from app.cli import main; main(sys.argv[1:])",
            "calendar", "load", str(path), "--by", "cli-test", env=env, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        return proc.returncode, out.decode(), err.decode()

    good = _write(tmp_path / "2032.json", {"year": 2032, "holidays": ["2032-01-01"],
                                            "workdays": []})
    code, out, _ = await cli(good)
    assert (code, out.strip()) == (0, "calendar for 2032 loaded")
    assert (await HolidayCalendar.get(year=2032)).loaded_by == "cli-test"

    bad = _write(tmp_path / "bad.json", {"year": 2033, "holidays": ["2034-01-01"], "workdays": []})
    code, _, err = await cli(bad)
    assert code == 2
    assert err.strip().splitlines() == ["puhui: holidays: 2034-01-01 is not in 2033."]
    assert not await HolidayCalendar.filter(year=2033).exists()


async def test_placeholders_fill_only_the_years_no_calendar_knows(database, tmp_path):
    await HolidayCalendar.filter(year__in=[2031, 2032]).delete()
    await load_calendar_file(_write(tmp_path / "2032.json", {**YEAR_2027, "year": 2032,
                                                             "holidays": [], "workdays": []}),
                             "regulator-test")
    try:
        filled = await fill_unknown_years([2026, 2031, 2032, 2031], "demo placeholder")
        assert filled == [2031]
        row = await HolidayCalendar.get(year=2031)
        assert (row.holidays, row.workdays, row.loaded_by) == ([], [], "demo placeholder")
        assert (await HolidayCalendar.get(year=2032)).loaded_by == "regulator-test"
        assert await is_working_day(date(2031, 1, 1))  # a placeholder knows no holiday
        assert not await is_working_day(date(2026, 10, 1))  # the package's National Day stays
        assert await fill_unknown_years([2031], "again") == []
    finally:
        await HolidayCalendar.filter(year__in=[2031, 2032]).delete()
