"""Pure rules of points: credit standing, grades, levels, behavior rules, caps, periods."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from app.errors import InvalidInput
from app.units import grams_to_points
from points.credit import GRADES, grade_at_least
from points.credit_rules import CreditInputs, compute_credit, grade_for
from points.rules import (
    Level,
    Rule,
    check_levels,
    check_rules,
    clip_to_cap,
    experience_to_next,
    in_period,
    level_for,
    shanghai_day,
)

TABLE = [Level("L1", "a", 0), Level("L2", "b", 100), Level("L3", "c", 500)]


def test_a_new_participant_starts_at_base_grade_b():
    result = compute_credit(CreditInputs())
    assert (result.score, result.grade) == (400, "B")
    assert dict(result.factors)["base"] == 400
    assert sum(v for _, v in result.factors) == 400


def test_each_factor_adds_up_to_its_cap():
    full = compute_credit(CreditInputs(
        reductions_earned_grams=10**9, points_earned=10**6, points_spent=10**6,
        experience=10**6, days_active=10_000,
    ))
    assert full.score == 1000 and full.grade == "AAA"
    assert dict(full.factors) == {
        "base": 400, "reductions_earned": 200, "points_earned": 100, "points_spent": 50,
        "experience": 150, "days_active": 100, "fraudulent_records": 0, "other_misconduct": 0,
        "voucher_cancellations": 0,
    }
    some = compute_credit(CreditInputs(reductions_earned_grams=123_456, points_earned=120,
                                       experience=45, days_active=20))
    assert dict(some.factors)["reductions_earned"] == 24
    assert some.score == 400 + 24 + 2 + 2 + 2


def test_misconduct_takes_away_and_the_score_never_goes_below_zero():
    flagged = compute_credit(CreditInputs(fraud_flags=1))
    assert (flagged.score, flagged.grade) == (150, "C")
    worst = compute_credit(CreditInputs(fraud_flags=3, other_flags=2, recent_cancellations=50))
    assert worst.score == 0
    assert dict(compute_credit(CreditInputs(recent_cancellations=3)).factors)[
        "voucher_cancellations"] == 0
    assert dict(compute_credit(CreditInputs(recent_cancellations=5)).factors)[
        "voucher_cancellations"] == -50
    assert dict(compute_credit(CreditInputs(recent_cancellations=100)).factors)[
        "voucher_cancellations"] == -200


def test_grades_are_ordered_with_their_floors():
    assert GRADES == ("C", "B", "A", "AA", "AAA")
    assert [grade_for(s) for s in (0, 399, 400, 549, 550, 699, 700, 849, 850, 1000)] == [
        "C", "C", "B", "B", "A", "A", "AA", "AA", "AAA", "AAA"]
    assert grade_at_least("AA", "A") and grade_at_least("A", "A")
    assert not grade_at_least("B", "A")
    with pytest.raises(ValueError):
        grade_at_least("Z", "A")


def test_level_and_next_level_follow_lifetime_experience():
    assert level_for(0, TABLE) == (TABLE[0], TABLE[1])
    assert level_for(99, TABLE) == (TABLE[0], TABLE[1])
    assert level_for(100, TABLE) == (TABLE[1], TABLE[2])
    assert level_for(10**6, TABLE) == (TABLE[2], None)
    assert level_for(5, list(reversed(TABLE))) == (TABLE[0], TABLE[1])
    assert experience_to_next(30, TABLE[1]) == 70
    assert experience_to_next(30, None) is None


@pytest.mark.parametrize("table", [
    [],
    [Level("L1", "a", 5)],
    [Level("L1", "a", 0), Level("L2", "b", 0)],
    [Level("L1", "a", 0), Level("L2", "b", 50), Level("L3", "c", 40)],
    [Level("L1", "a", 0), Level("L1", "b", 50)],
    [Level("bad code", "a", 0)],
    [Level("L1", " ", 0)],
    [Level("L1", "a", 0), Level("L2", "b", 2**31)],
])
def test_bad_level_tables_are_refused(table):
    with pytest.raises(InvalidInput):
        check_levels(table)


def test_a_good_level_table_is_kept_in_order():
    assert check_levels([Level(" L1 ", "萌芽", 0), Level("L2", "b", 10)]) == [
        Level("L1", "萌芽", 0), Level("L2", "b", 10)]


@pytest.mark.parametrize("rules", [
    [],
    [Rule("walk", 0, 10)],
    [Rule("walk", 100_001, 10**6)],
    [Rule("walk", 5, 0)],
    [Rule("walk", 5, 10), Rule("walk", 3, 10)],
    [Rule("", 5, 10)],
    [Rule("has space", 5, 10)],
])
def test_bad_behavior_rules_are_refused(rules):
    with pytest.raises(InvalidInput):
        check_rules(rules)


def test_caps_clip_and_never_go_negative():
    assert clip_to_cap(10, 0, 25) == 10
    assert clip_to_cap(10, 20, 25) == 5
    assert clip_to_cap(10, 25, 25) == 0
    assert clip_to_cap(10, 30, 25) == 0


def test_days_and_periods_are_those_of_shanghai():
    late_utc = datetime(2026, 10, 1, 17, 30, tzinfo=UTC)  # 01:30 on 2 October in Shanghai
    assert shanghai_day(late_utc) == date(2026, 10, 2)
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    assert in_period(now - timedelta(days=89), now)
    assert not in_period(now - timedelta(days=91), now)
    assert in_period(now + timedelta(minutes=4), now)
    assert not in_period(now + timedelta(minutes=10), now)


def test_whole_points_round_in_the_reserves_favour():
    assert grams_to_points(1_234, 10) == (123, 1_230)
    assert grams_to_points(9, 10) == (0, 0)
