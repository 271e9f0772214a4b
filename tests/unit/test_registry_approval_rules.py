"""Pure approval rules: methodology terms and transitions, scenario assessment, publicity."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from app.calendar import WorkingDays
from app.errors import InvalidInput, InvalidState
from registry.approval_rules import (
    assessing_body,
    methodology_assessment,
    methodology_publication,
    methodology_terms,
    publicity_window,
    scenario_assessment_outcome,
    scenario_publication,
)
from registry.authorizations import authorized_at
from registry.models import MethodologyKind, MethodologyStatus, ScenarioStatus

SCENARIO = dict(code="M-METRO", name="Metro", kind="SCENARIO", methodology_class="II",
                version="1.0", activity_unit="passenger-km", grams_per_unit=47,
                daily_cap_grams=5000)


def test_scenario_methodology_terms_are_kept():
    terms = methodology_terms(**SCENARIO)
    assert terms.kind is MethodologyKind.SCENARIO
    assert (terms.activity_unit, terms.grams_per_unit, terms.daily_cap_grams) == (
        "passenger-km", 47, 5000)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"activity_unit": None}, "activityUnit"),
        ({"activity_unit": "  "}, "activityUnit"),
        ({"grams_per_unit": 0}, "gramsPerUnit"),
        ({"grams_per_unit": None}, "gramsPerUnit"),
        ({"daily_cap_grams": -1}, "dailyCapGrams"),
        ({"kind": "OTHER"}, "kind"),
        ({"methodology_class": "III"}, "methodologyClass"),
        ({"version": ""}, "version"),
        ({"code": "has space"}, "code"),
        ({"name": " "}, "name"),
    ],
)
def test_bad_scenario_methodology_terms_are_refused(change, field):
    with pytest.raises(InvalidInput) as refused:
        methodology_terms(**{**SCENARIO, **change})
    assert refused.value.field == field


def test_project_methodologies_carry_no_scenario_terms():
    plain = {**SCENARIO, "kind": "PROJECT", "activity_unit": None, "grams_per_unit": None,
             "daily_cap_grams": None}
    assert methodology_terms(**plain).kind is MethodologyKind.PROJECT
    with pytest.raises(InvalidInput) as refused:
        methodology_terms(**{**plain, "grams_per_unit": 10})
    assert refused.value.field == "gramsPerUnit"


def test_methodology_transitions():
    assert methodology_assessment("SUBMITTED", True) is MethodologyStatus.PUBLIC_COMMENT
    assert methodology_assessment("SUBMITTED", False) is MethodologyStatus.REJECTED
    assert methodology_publication("PUBLIC_COMMENT") is MethodologyStatus.PUBLISHED
    for status in ("PUBLIC_COMMENT", "PUBLISHED", "REJECTED", "SUSPENDED"):
        with pytest.raises(InvalidState):
            methodology_assessment(status, True)
    for status in ("SUBMITTED", "PUBLISHED", "REJECTED"):
        with pytest.raises(InvalidState):
            methodology_publication(status)


def test_assessing_body_needs_exactly_one_of_center_and_exchange():
    assert assessing_body({"center"}) == "center"
    assert assessing_body({"exchange", "expert"}) == "exchange"
    with pytest.raises(InvalidInput):
        assessing_body({"center", "exchange"})


def test_scenario_assessment_outcomes():
    assert scenario_assessment_outcome({"center": True}) is ScenarioStatus.SUBMITTED
    assert scenario_assessment_outcome({"exchange": False}) is ScenarioStatus.REJECTED
    assert scenario_assessment_outcome({"center": True, "exchange": False}) is ScenarioStatus.REJECTED
    assert scenario_assessment_outcome({"center": True, "exchange": True}) is ScenarioStatus.PUBLICITY


def test_publicity_defaults_to_the_next_working_day():
    cal = WorkingDays()
    # asked on the eve of National Day: starts 10-08, 5th working day counts Saturday 10-10
    assert publicity_window(date(2026, 9, 30), None, cal) == (date(2026, 10, 8), date(2026, 10, 13))


def test_a_given_start_may_be_up_to_90_days_back():
    cal = WorkingDays()
    today = date(2026, 11, 24)
    assert publicity_window(today, date(2026, 9, 30), cal) == (date(2026, 9, 30), date(2026, 10, 12))
    assert publicity_window(today, today - timedelta(days=90), cal)[0] == date(2026, 8, 26)
    with pytest.raises(InvalidInput) as refused:
        publicity_window(today, today - timedelta(days=91), cal)
    assert refused.value.field == "publicityStartsOn"
    with pytest.raises(InvalidInput):
        publicity_window(today, today + timedelta(days=91), cal)


def test_publication_only_after_the_publicity_end():
    end = date(2026, 10, 12)
    with pytest.raises(InvalidState):
        scenario_publication("PUBLICITY", end, end)
    assert scenario_publication("PUBLICITY", end, end + timedelta(days=1)) is ScenarioStatus.PUBLISHED
    with pytest.raises(InvalidState):
        scenario_publication("SUBMITTED", None, end)


def test_authorized_at_is_half_open():
    t0 = datetime(2026, 11, 1, 8, 0)
    t1 = datetime(2026, 11, 2, 8, 0)
    intervals = [(t0, t1), (datetime(2026, 11, 5), None)]
    assert authorized_at(intervals, t0)
    assert not authorized_at(intervals, t1)
    assert not authorized_at(intervals, datetime(2026, 11, 3))
    assert authorized_at(intervals, datetime(2030, 1, 1))
    assert not authorized_at([], t0)
