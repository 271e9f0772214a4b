"""Behavior scenarios through the contract: DefineBehaviorScenario, RecordBehaviors, MyGrowth."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from tortoise.exceptions import IntegrityError

from app.audit import AuditEvent
from points.models import BehaviorEvent, BehaviorScenario, Experience, LevelCrossing
from points.rules import SHANGHAI
from registry.models import Scenario
from tests.helpers import credit_code, data, error_codes, gql, op, token, unique
from tests.points_support import (
    CENTER,
    behavior_scenario,
    consent,
    event,
    record,
    resident,
)
from tests.registry_support import authorize, published_methodology, submitted_scenario

GROWTH = """query($first: Int!, $after: String) { me { growth {
  experience experienceToNextLevel level { code } nextLevel { code minExperience }
  behaviors(first: $first, after: $after) {
    edges { cursor node { behavior experience computedExperience occurredAt scenario { code name } } }
    pageInfo { hasNextPage endCursor } }
  levelCrossings(first: 10) { edges { node { fromCode toCode experience crossedAt } } } } } }"""


def _define(code: str, operator: str, rules: list[dict], name: str = "绿色出行打卡") -> dict:
    return {"input": {"code": code, "name": name, "operatorCreditCode": operator, "rules": rules}}


async def _experience(participant_id: int) -> int:
    row = await Experience.filter(participant_id=participant_id).first()
    return row.total if row else 0


async def test_center_defines_a_behavior_scenario(client):
    code, operator = unique("BEH-"), credit_code()
    rules = [{"behavior": "recycle", "experience": 5, "dailyCap": 20},
             {"behavior": "e-receipt", "experience": 2, "dailyCap": 10}]
    payload = data(await op(client, "DefineBehaviorScenario", _define(code, operator, rules),
                            CENTER))["defineBehaviorScenario"]
    assert payload == {"scenario": {"code": code, "name": "绿色出行打卡"}, "userErrors": []}
    body = await gql(client, "query($c: String!) { behaviorScenario(code: $c) { operatorCreditCode"
                     " rules { behavior experience dailyCap } } }", {"c": code}, token())
    found = data(body)["behaviorScenario"]
    assert found["operatorCreditCode"] == operator
    assert sorted(r["behavior"] for r in found["rules"]) == ["e-receipt", "recycle"]
    assert await AuditEvent.filter(action="define_behavior_scenario", target_id=code).exists()
    # A resident finds it among every behavior scenario, to authorize it.
    listed = data(await gql(client, "{ behaviorScenarios { code name rules { behavior } } }",
                            auth=token()))["behaviorScenarios"]
    [mine] = [s for s in listed if s["code"] == code]
    assert mine["name"] == "绿色出行打卡" and len(mine["rules"]) == 2
    assert [s["code"] for s in listed] == sorted(s["code"] for s in listed)
    assert error_codes(await gql(client, "{ behaviorScenarios { code } }")) == ["UNAUTHENTICATED"]


async def test_bad_definitions_are_refused_and_create_nothing(client):
    ok_rules = [{"behavior": "recycle", "experience": 5, "dailyCap": 20}]
    good = credit_code()
    bad_code = good[:17] + ("0" if good[17] != "0" else "1")
    taken = unique("BEH-")
    first = await op(client, "DefineBehaviorScenario", _define(taken, credit_code(), ok_rules), CENTER)
    assert data(first)["defineBehaviorScenario"]["userErrors"] == []
    cases = [
        (_define(unique("BEH-"), "91310000NOTACODE1", ok_rules), "INVALID_INPUT", "operatorCreditCode"),
        (_define(unique("BEH-"), bad_code, ok_rules), "INVALID_INPUT", "operatorCreditCode"),
        (_define(unique("BEH-"), credit_code(), []), "INVALID_INPUT", "rules"),
        (_define(unique("BEH-"), credit_code(), [{"behavior": "a", "experience": 0, "dailyCap": 5}]),
         "INVALID_INPUT", "rules"),
        (_define(unique("BEH-"), credit_code(), [{"behavior": "a", "experience": 5, "dailyCap": 0}]),
         "INVALID_INPUT", "rules"),
        (_define(unique("BEH-"), credit_code(), ok_rules + ok_rules), "INVALID_INPUT", "rules"),
        (_define("bad code!", credit_code(), ok_rules), "INVALID_INPUT", "code"),
        (_define(unique("BEH-"), credit_code(), ok_rules, name="  "), "INVALID_INPUT", "name"),
        (_define(taken, credit_code(), ok_rules), "DUPLICATE", "code"),
    ]
    count = await BehaviorScenario.all().count()
    for variables, code, field in cases:
        payload = data(await op(client, "DefineBehaviorScenario", variables, CENTER))[
            "defineBehaviorScenario"]
        assert payload["scenario"] is None
        assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [(code, field)]
    assert await BehaviorScenario.all().count() == count
    body = await op(client, "DefineBehaviorScenario", _define(unique("B"), credit_code(), ok_rules),
                    token(roles="scenario_operator", org=credit_code()))
    assert error_codes(body) == ["FORBIDDEN"]


async def test_codes_are_unique_across_reduction_and_behavior_scenarios(client):
    methodology = await published_methodology(client)
    operator = token(roles="scenario_operator", org=credit_code())
    made = await submitted_scenario(client, methodology["id"], operator)
    code = made["scenario"]["code"]
    rules = [{"behavior": "recycle", "experience": 5, "dailyCap": 20}]
    payload = data(await op(client, "DefineBehaviorScenario", _define(code, credit_code(), rules),
                            CENTER))["defineBehaviorScenario"]
    assert [e["code"] for e in payload["userErrors"]] == ["DUPLICATE"]
    assert not await BehaviorScenario.filter(code=code).exists()
    # Nor in another letter case, for either kind.
    other_case = code.lower() if code != code.lower() else code.upper()
    payload = data(await op(client, "DefineBehaviorScenario", _define(other_case, credit_code(), rules),
                            CENTER))["defineBehaviorScenario"]
    assert [e["code"] for e in payload["userErrors"]] == ["DUPLICATE"]
    again = await submitted_scenario(client, methodology["id"], operator, code=other_case)
    assert [e["code"] for e in again["userErrors"]] == ["DUPLICATE"]


async def test_one_code_claimed_at_once_by_both_kinds_of_scenario_goes_to_one(client):
    methodology = await published_methodology(client)
    rules = [{"behavior": "recycle", "experience": 5, "dailyCap": 20}]
    for _ in range(3):
        code = unique("RACE-").upper()
        operator = token(roles="scenario_operator", org=credit_code())
        answers = await asyncio.gather(
            *[submitted_scenario(client, methodology["id"], operator, code=code) for _ in range(3)],
            *[op(client, "DefineBehaviorScenario", _define(code, credit_code(), rules), CENTER)
              for _ in range(3)],
        )
        payloads = [*answers[:3], *(data(a)["defineBehaviorScenario"] for a in answers[3:])]
        codes = sorted(e["code"] for p in payloads for e in p["userErrors"])
        assert codes == ["DUPLICATE"] * 5, payloads
        made = await Scenario.filter(code=code).count() + await BehaviorScenario.filter(code=code).count()
        assert made == 1


async def test_events_earn_experience_clipped_by_the_daily_cap(client):
    code, _, operator = await behavior_scenario(client, [("recycle", 10, 25), ("walk", 3, 100)])
    subject, auth, pid = await resident()
    await consent(pid, code)
    now = datetime.now(UTC)
    today = now.astimezone(SHANGHAI).replace(hour=0, minute=0, second=0, microsecond=0)
    yesterday = today - timedelta(hours=12)
    events = [event(subject, "recycle", now - timedelta(seconds=s)) for s in (1, 2, 3, 4)]
    events += [event(subject, "walk", now), event(subject, "recycle", yesterday)]
    payload = await record(client, operator, code, events)
    assert payload == {"accepted": 6, "duplicates": 0, "rejected": [], "userErrors": []}
    rows = await BehaviorEvent.filter(participant_id=pid, behavior="recycle").order_by("id")
    assert [(r.computed_experience, r.earned_experience) for r in rows] == [
        (10, 10), (10, 10), (10, 5), (10, 0), (10, 10)]
    assert await _experience(pid) == 10 + 10 + 5 + 0 + 3 + 10
    more = await record(client, operator, code, [event(subject, "recycle")])
    assert more["accepted"] == 1 and await _experience(pid) == 38


async def test_lifetime_experience_stops_at_the_largest_int_and_stays_readable(client):
    top = 2**31 - 1
    code, _, operator = await behavior_scenario(client, [("plant", 100_000, top)])
    subject, auth, pid = await resident()
    await consent(pid, code)
    await Experience.create(participant_id=pid, total=top - 150_000)  # years of planting
    payload = await record(client, operator, code, [event(subject, "plant") for _ in range(3)])
    assert payload["accepted"] == 3
    rows = await BehaviorEvent.filter(participant_id=pid).order_by("id")
    assert [r.earned_experience for r in rows] == [100_000, 50_000, 0]
    assert await _experience(pid) == top
    again = await record(client, operator, code, [event(subject, "plant")])
    assert again["accepted"] == 1 and await _experience(pid) == top
    account = await op(client, "MyAccount", None, auth)
    assert data(account)["me"]["account"]["experience"] == top
    growth = await gql(client, GROWTH, {"first": 2}, auth)
    assert data(growth)["me"]["growth"]["experience"] == top
    # The database itself holds no total past it (migration points/0004 brought older ones down).
    _, _, other = await resident()
    with pytest.raises(IntegrityError):
        await Experience.create(participant_id=other, total=top + 1)


async def test_duplicates_count_once_and_rejections_do_not_block_others(client):
    code, _, operator = await behavior_scenario(client, [("recycle", 10, 1000)])
    subject, _, pid = await resident()
    stranger, _, _ = await resident()
    await consent(pid, code)
    ref = unique("ref")
    now = datetime.now(UTC)
    events = [
        event(subject, "recycle", ref=ref),
        event(subject, "recycle", ref=ref),
        event(subject, "fly"),
        event(subject, "recycle", now + timedelta(hours=1)),
        event(subject, "recycle", now - timedelta(days=91)),
        event(stranger, "recycle"),
        event("nobody-" + unique(), "recycle"),
        {**event(subject, "recycle"), "occurredAt": "2026-01-01T10:00:00"},
        event(subject, "recycle", ref=""),
        event(subject, "recycle"),
        {**event(subject, "recycle"), "occurredAt": "0001-01-01T00:00:00+14:00"},
        {**event(subject, "recycle"), "occurredAt": "9999-12-31T23:59:59-14:00"},
    ]
    payload = await record(client, operator, code, events)
    assert payload["accepted"] == 2 and payload["duplicates"] == 1
    assert [(r["index"], r["code"]) for r in payload["rejected"]] == [
        (2, "INVALID_INPUT"), (3, "OUT_OF_PERIOD"), (4, "OUT_OF_PERIOD"), (5, "NOT_AUTHORIZED"),
        (6, "NOT_AUTHORIZED"), (7, "INVALID_INPUT"), (8, "INVALID_INPUT"), (10, "INVALID_INPUT"),
        (11, "INVALID_INPUT")]
    again = await record(client, operator, code, [event(subject, "recycle", ref=ref)])
    assert (again["accepted"], again["duplicates"]) == (0, 1)
    assert await _experience(pid) == 20


async def test_consent_must_be_active_when_the_behavior_happened(client):
    code, _, operator = await behavior_scenario(client, [("recycle", 10, 1000)])
    subject, auth, pid = await resident()
    now = datetime.now(UTC)
    before = await record(client, operator, code, [event(subject, "recycle", now)])
    assert [r["code"] for r in before["rejected"]] == ["NOT_AUTHORIZED"]
    granted = await authorize(client, auth, code)
    assert granted["userErrors"] == [] and granted["authorization"]["scenario"]["code"] == code
    early = await record(client, operator, code,
                         [event(subject, "recycle", now - timedelta(hours=1))])
    assert [r["code"] for r in early["rejected"]] == ["NOT_AUTHORIZED"]
    after = await record(client, operator, code, [event(subject, "recycle", datetime.now(UTC))])
    assert after["accepted"] == 1 and after["rejected"] == []
    assert await _experience(pid) == 10


async def test_only_the_scenario_operator_reports(client):
    code, _, operator = await behavior_scenario(client, [("recycle", 10, 1000)])
    subject, auth, pid = await resident()
    await consent(pid, code)
    other = token(unique("op"), "scenario_operator", org=credit_code())
    payload = await record(client, other, code, [event(subject, "recycle")])
    assert [e["code"] for e in payload["userErrors"]] == ["NOT_FOUND"]
    unknown = await record(client, operator, unique("NOPE-"), [event(subject, "recycle")])
    assert [e["code"] for e in unknown["userErrors"]] == ["NOT_FOUND"]
    body = await op(client, "RecordBehaviors",
                    {"input": {"scenarioCode": code, "events": [event(subject, "recycle")]}}, auth)
    assert error_codes(body) == ["FORBIDDEN"]
    many = await record(client, operator, code, [event(subject, "recycle")] * 1001)
    assert [(e["code"], e["field"]) for e in many["userErrors"]] == [("INVALID_INPUT", "events")]
    assert await _experience(pid) == 0


async def test_growth_shows_level_next_level_history_and_crossings(client):
    code, _, operator = await behavior_scenario(client, [("recycle", 60, 1000)])
    subject, auth, pid = await resident()
    await consent(pid, code)
    mine = data(await op(client, "MyGrowth", {"first": 5}, auth))["me"]["growth"]
    assert mine["experience"] == 0 and mine["level"]["code"] == "L1"
    assert mine["nextLevel"] == {"code": "L2", "name": "新叶", "minExperience": 100}
    assert mine["experienceToNextLevel"] == 100 and mine["behaviors"]["edges"] == []
    now = datetime.now(UTC)
    await record(client, operator, code,
                 [event(subject, "recycle", now - timedelta(minutes=m)) for m in (3, 2, 1)])
    growth = data(await gql(client, GROWTH, {"first": 2}, auth))["me"]["growth"]
    assert growth["experience"] == 180 and growth["level"] == {"code": "L2"}
    assert growth["experienceToNextLevel"] == 320
    nodes = [e["node"] for e in growth["behaviors"]["edges"]]
    assert len(nodes) == 2 and growth["behaviors"]["pageInfo"]["hasNextPage"]
    assert nodes[0]["scenario"]["code"] == code and nodes[0]["experience"] == 60
    rest = data(await gql(client, GROWTH, {"first": 2,
                                           "after": growth["behaviors"]["pageInfo"]["endCursor"]},
                          auth))["me"]["growth"]["behaviors"]
    assert len(rest["edges"]) == 1 and not rest["pageInfo"]["hasNextPage"]
    crossings = [e["node"] for e in growth["levelCrossings"]["edges"]]
    assert [(c["fromCode"], c["toCode"], c["experience"]) for c in crossings] == [("L1", "L2", 180)]
    assert await LevelCrossing.filter(participant_id=pid).count() == 1
    account = data(await op(client, "MyAccount", {}, auth))["me"]["account"]
    assert account["experience"] == 180 and account["level"]["code"] == "L2"
    assert account["nextLevel"]["minExperience"] == 500
    bad = await gql(client, GROWTH, {"first": 2, "after": "nonsense"}, auth)
    assert error_codes(bad) == ["INVALID_INPUT"]


async def test_concurrent_batches_never_exceed_the_cap(client):
    code, _, operator = await behavior_scenario(client, [("recycle", 10, 50)])
    subject, _, pid = await resident()
    await consent(pid, code)
    batches = [[event(subject, "recycle") for _ in range(3)] for _ in range(8)]
    results = await asyncio.gather(*(record(client, operator, code, b) for b in batches))
    assert sum(r["accepted"] for r in results) == 24
    assert await _experience(pid) == 50
    earned = await BehaviorEvent.filter(participant_id=pid).values_list("earned_experience",
                                                                       flat=True)
    assert sum(earned) == 50
