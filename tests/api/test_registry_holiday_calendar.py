"""The regulator's loadHolidayCalendar mutation."""

from __future__ import annotations

from registry.models import HolidayCalendar
from tests.helpers import data, error_codes, gql, token
from tests.registry_support import CENTER, REGULATOR

LOAD = """mutation($input: LoadHolidayCalendarInput!) {
  loadHolidayCalendar(input: $input) {
    calendar { year holidays workdays }
    userErrors { code message field }
  }
}"""


async def _load(client, auth, year, holidays, workdays):
    body = await gql(client, LOAD, {"input": {"year": year, "holidays": holidays,
                                              "workdays": workdays}}, auth)
    return body


async def test_the_regulator_loads_and_replaces_a_year(client):
    body = data(await _load(client, REGULATOR, 2029, ["2029-01-01", "2029-01-02"],
                            ["2029-02-11"]))["loadHolidayCalendar"]
    assert body == {"calendar": {"year": 2029, "holidays": ["2029-01-01", "2029-01-02"],
                                 "workdays": ["2029-02-11"]}, "userErrors": []}
    again = data(await _load(client, REGULATOR, 2029, ["2029-01-01"], []))["loadHolidayCalendar"]
    assert again["calendar"]["holidays"] == ["2029-01-01"]
    row = await HolidayCalendar.get(year=2029)
    assert (row.holidays, row.workdays, row.loaded_by) == (["2029-01-01"], [], "regulator-officer")


async def test_bad_years_are_refused_and_store_nothing(client):
    cases = [
        (2030, ["2029-12-31"], [], "holidays"),
        (2030, ["2030-01-01"], ["2030-01-01"], "workdays"),
        (1800, [], [], "year"),
    ]
    for year, holidays, workdays, field in cases:
        body = data(await _load(client, REGULATOR, year, holidays, workdays))["loadHolidayCalendar"]
        assert body["calendar"] is None
        assert [(e["code"], e["field"]) for e in body["userErrors"]] == [("INVALID_INPUT", field)]
    assert not await HolidayCalendar.filter(year__in=[2030, 1800]).exists()
    malformed = await _load(client, REGULATOR, 2030, ["2030-02-30"], [])
    assert malformed.get("errors") and not await HolidayCalendar.filter(year=2030).exists()


async def test_only_the_regulator_loads(client):
    for auth in (CENTER, token()):
        assert error_codes(await _load(client, auth, 2030, [], [])) == ["FORBIDDEN"]
    assert error_codes(await _load(client, None, 2030, [], [])) == ["UNAUTHENTICATED"]
    assert not await HolidayCalendar.filter(year=2030).exists()
