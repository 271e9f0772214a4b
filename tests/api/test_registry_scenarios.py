"""Scenarios through the contract: submission, two assessments, publicity, publication."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from app.audit import AuditEvent
from app.calendar import shanghai_today, working_days
from app.participants import organisation_id
from registry import scenarios as scenarios_service
from registry.models import Methodology, Scenario, ScenarioAssessment
from tests.helpers import credit_code, data, error_codes, gql, op, token, unique
from tests.registry_support import (
    CENTER,
    EXCHANGE,
    REGULATOR,
    authorize,
    ensure_test_calendar,
    published_methodology,
    published_scenario,
    submit_methodology,
    submitted_scenario,
)

SCENARIOS = """query($status: ScenarioStatus) {
  scenarios(status: $status) { id code name status publicityStartsOn publicityEndsOn
    methodology { code methodologyClass activityUnit gramsPerUnit } }
}"""


@pytest.fixture(autouse=True)
async def _calendar(database):
    await ensure_test_calendar()


def _operator(org: str | None = None) -> str:
    return token(unique("op"), "scenario_operator", org=org or credit_code())


async def _assess(client, auth, scenario_id, approve=True, **extra):
    body = {"input": {"id": scenario_id, "approve": approve, **extra}}
    return data(await op(client, "AssessScenario", body, auth))["assessScenario"]


async def _publish(client, scenario_id, auth=REGULATOR):
    return data(await op(client, "PublishScenario", {"input": {"id": scenario_id}},
                         auth))["publishScenario"]


async def _fresh(client):
    methodology = await published_methodology(client)
    operator = _operator()
    made = await submitted_scenario(client, methodology["id"], operator)
    assert made["userErrors"] == [] and made["scenario"]["status"] == "SUBMITTED"
    return made["scenario"]


async def _status(scenario_id_code: str) -> str:
    return (await Scenario.get(code=scenario_id_code)).status


async def test_both_approvals_open_a_five_working_day_publicity(client):
    scenario = await _fresh(client)
    first = await _assess(client, CENTER, scenario["id"], comment="data pipeline checked")
    assert first["userErrors"] == []
    assert first["scenario"]["status"] == "SUBMITTED"
    assert first["scenario"]["publicityEndsOn"] is None

    second = await _assess(client, EXCHANGE, scenario["id"])
    assert second["userErrors"] == []
    cal = await working_days()
    today = shanghai_today()
    start = cal.next_working_day(today)
    assert second["scenario"] == {
        "id": scenario["id"],
        "status": "PUBLICITY",
        "publicityStartsOn": start.isoformat(),
        "publicityEndsOn": cal.nth_working_day(start, 5).isoformat(),
    }
    too_early = await _publish(client, scenario["id"])
    assert [e["code"] for e in too_early["userErrors"]] == ["INVALID_STATE"]
    assert await _status(scenario["code"]) == "PUBLICITY"


async def test_a_publicity_already_posted_is_recorded_with_who_set_it_then_published(client):
    scenario = await _fresh(client)
    start = shanghai_today() - timedelta(days=40)
    assert (await _assess(client, EXCHANGE, scenario["id"]))["userErrors"] == []
    opened = await _assess(client, CENTER, scenario["id"], publicityStartsOn=start.isoformat())
    assert opened["scenario"]["publicityStartsOn"] == start.isoformat()
    expected_end = (await working_days()).nth_working_day(start, 5)
    assert opened["scenario"]["publicityEndsOn"] == expected_end.isoformat()
    row = await Scenario.get(code=scenario["code"])
    assert row.publicity_set_by == "center-assessor"

    assert error_codes(await op(client, "PublishScenario", {"input": {"id": scenario["id"]}},
                                CENTER)) == ["FORBIDDEN"]
    done = await _publish(client, scenario["id"])
    assert done == {"scenario": {"id": scenario["id"], "status": "PUBLISHED"}, "userErrors": []}
    again = await _publish(client, scenario["id"])
    assert [e["code"] for e in again["userErrors"]] == ["INVALID_STATE"]


async def test_a_start_given_by_the_first_approver_is_used_when_the_second_opens(client):
    scenario = await _fresh(client)
    start = shanghai_today() - timedelta(days=10)
    first = await _assess(client, CENTER, scenario["id"], publicityStartsOn=start.isoformat())
    assert first["scenario"]["status"] == "SUBMITTED"
    second = await _assess(client, EXCHANGE, scenario["id"])
    assert second["scenario"]["publicityStartsOn"] == start.isoformat()
    assert (await Scenario.get(code=scenario["code"])).publicity_set_by == "center-assessor"


async def test_a_start_given_by_the_first_approver_goes_when_the_second_rejects(client):
    scenario = await _fresh(client)
    start = shanghai_today() - timedelta(days=10)
    await _assess(client, CENTER, scenario["id"], publicityStartsOn=start.isoformat())
    rejected = await _assess(client, EXCHANGE, scenario["id"], approve=False, comment="no")
    assert rejected["scenario"]["status"] == "REJECTED"
    shown = rejected["scenario"]
    assert (shown["publicityStartsOn"], shown["publicityEndsOn"]) == (None, None)
    assert (await Scenario.get(code=scenario["code"])).publicity_set_by is None


async def test_a_start_over_90_days_back_is_refused_and_changes_nothing(client):
    scenario = await _fresh(client)
    assert (await _assess(client, CENTER, scenario["id"]))["userErrors"] == []
    old = (shanghai_today() - timedelta(days=91)).isoformat()
    refused = await _assess(client, EXCHANGE, scenario["id"], publicityStartsOn=old)
    assert [(e["code"], e["field"]) for e in refused["userErrors"]] == [
        ("INVALID_INPUT", "publicityStartsOn")]
    assert refused["scenario"] is None
    row = await Scenario.get(code=scenario["code"])
    assert row.status == "SUBMITTED" and row.publicity_starts_on is None
    assert await ScenarioAssessment.filter(scenario_id=row.id).count() == 1
    with_date_on_rejection = await _assess(client, EXCHANGE, scenario["id"], approve=False,
                                           publicityStartsOn=shanghai_today().isoformat())
    assert [e["code"] for e in with_date_on_rejection["userErrors"]] == ["INVALID_INPUT"]
    ok = await _assess(client, EXCHANGE, scenario["id"])
    assert ok["scenario"]["status"] == "PUBLICITY"


async def test_a_rejection_by_either_body_rejects(client):
    for rejecting in (CENTER, EXCHANGE):
        scenario = await _fresh(client)
        other = EXCHANGE if rejecting is CENTER else CENTER
        rejected = await _assess(client, rejecting, scenario["id"], approve=False, comment="no")
        assert rejected["scenario"]["status"] == "REJECTED"
        late = await _assess(client, other, scenario["id"])
        assert [e["code"] for e in late["userErrors"]] == ["INVALID_STATE"]
        assert await _status(scenario["code"]) == "REJECTED"
        assert [e["code"] for e in (await _publish(client, scenario["id"]))["userErrors"]] == [
            "INVALID_STATE"]


async def test_each_body_assesses_once_and_by_different_people(client):
    scenario = await _fresh(client)
    assert (await _assess(client, CENTER, scenario["id"]))["userErrors"] == []
    twice = await _assess(client, token("center-colleague", "center"), scenario["id"])
    assert [e["code"] for e in twice["userErrors"]] == ["INVALID_STATE"]
    same_person = await _assess(client, token("center-assessor", "exchange"), scenario["id"])
    assert [e["code"] for e in same_person["userErrors"]] == ["INVALID_STATE"]
    both_roles = await _assess(client, token(roles=["center", "exchange"]), scenario["id"])
    assert [e["code"] for e in both_roles["userErrors"]] == ["INVALID_INPUT"]
    for auth in (REGULATOR, token(), _operator()):
        body = {"input": {"id": scenario["id"], "approve": True}}
        assert error_codes(await op(client, "AssessScenario", body, auth)) == ["FORBIDDEN"]
    assert await _status(scenario["code"]) == "SUBMITTED"


async def test_submission_rules(client):
    methodology = await published_methodology(client)
    operator = _operator()
    no_commitment = await submitted_scenario(client, methodology["id"], operator,
                                             noDoubleCountingCommitment=False)
    assert [(e["code"], e["field"]) for e in no_commitment["userErrors"]] == [
        ("INVALID_INPUT", "noDoubleCountingCommitment")]

    pending = data(await submit_methodology(client, operator))["submitMethodology"]["methodology"]
    unpublished = await submitted_scenario(client, pending["id"], operator)
    assert [e["code"] for e in unpublished["userErrors"]] == ["INVALID_STATE"]
    # Another organisation's unpublished methodology is hidden from this one, as in the listing.
    elsewhere = await submitted_scenario(client, pending["id"], _operator())
    assert [(e["code"], e["message"]) for e in elsewhere["userErrors"]] == [
        ("NOT_FOUND", "No such methodology.")]

    project = await published_methodology(client, kind="PROJECT", activityUnit=None,
                                          gramsPerUnit=None, dailyCapGrams=None)
    on_project = await submitted_scenario(client, project["id"], operator)
    assert [(e["code"], e["field"]) for e in on_project["userErrors"]] == [
        ("INVALID_INPUT", "methodologyId")]

    bad_id = await submitted_scenario(client, "xyz", operator)
    assert [(e["code"], e["field"]) for e in bad_id["userErrors"]] == [
        ("INVALID_INPUT", "methodologyId")]

    code = unique("S-")
    first = await submitted_scenario(client, methodology["id"], operator, code=code)
    assert first["userErrors"] == []
    assert await Scenario.filter(code=code).exists()
    dup = await submitted_scenario(client, methodology["id"], _operator(), code=code)
    assert [e["code"] for e in dup["userErrors"]] == ["DUPLICATE"]
    for auth in (token(), CENTER, token(roles="merchant", org=credit_code()),
                 token(roles="scenario_operator")):
        variables = {"input": {"methodologyId": methodology["id"], "code": unique("S-"),
                               "name": "x", "noDoubleCountingCommitment": True}}
        assert error_codes(await op(client, "SubmitScenario", variables, auth)) == ["FORBIDDEN"]
    assert await Scenario.filter(code__in=[code]).count() == 1


async def test_a_behavior_scenario_code_cannot_be_reused(client):
    from points.models import BehaviorScenario

    code = unique("B-")
    org = credit_code()
    await BehaviorScenario.create(code=code, name="Tree planting", operator_org=org,
                                  operator_participant_id=await organisation_id(org),
                                  defined_by="test")
    methodology = await published_methodology(client)
    taken = await submitted_scenario(client, methodology["id"], _operator(), code=code)
    assert [e["code"] for e in taken["userErrors"]] == ["DUPLICATE"]
    assert not await Scenario.filter(code=code).exists()


async def test_scenarios_listing_and_visibility(client):
    published = await published_scenario(client)
    pending = await _fresh(client)
    listed = data(await op(client, "MyScenarios", {}, token()))["scenarios"]
    mine = [s for s in listed if s["code"] == published.scenario_code]
    assert mine == [{"code": published.scenario_code, "name": "Test scenario", "methodology": {
        "code": published.methodology_code, "methodologyClass": "II",
        "activityUnit": "passenger-km", "gramsPerUnit": "47"}}]
    assert pending["code"] not in {s["code"] for s in listed}

    def codes(body):
        return {s["code"] for s in data(body)["scenarios"]}

    assert pending["code"] in codes(await gql(client, SCENARIOS, {"status": "SUBMITTED"}, CENTER))
    assert pending["code"] not in codes(await gql(client, SCENARIOS, {}, token()))
    own = codes(await gql(client, SCENARIOS, {}, published.operator))
    assert published.scenario_code in own
    assert error_codes(await gql(client, SCENARIOS, {})) == ["UNAUTHENTICATED"]


async def test_concurrent_approvals_open_publicity_exactly_once(client):
    for _ in range(3):
        scenario = await _fresh(client)
        answers = await asyncio.gather(
            _assess(client, CENTER, scenario["id"]), _assess(client, EXCHANGE, scenario["id"]))
        assert all(a["userErrors"] == [] for a in answers)
        row = await Scenario.get(code=scenario["code"])
        assert row.status == "PUBLICITY" and row.publicity_ends_on is not None
        assert {a["scenario"]["status"] for a in answers} == {"SUBMITTED", "PUBLICITY"}


async def test_concurrent_submissions_of_one_code_make_one_scenario(client):
    methodology = await published_methodology(client)
    code = unique("S-")
    answers = await asyncio.gather(*[
        submitted_scenario(client, methodology["id"], _operator(), code=code) for _ in range(5)])
    assert sorted(e["code"] for a in answers for e in a["userErrors"]) == ["DUPLICATE"] * 4
    assert await Scenario.filter(code=code).count() == 1


SUSPEND = """mutation($input: StatusChangeInput!) {
  suspendScenario(input: $input) { scenario { status } userErrors { code field } } }"""
REINSTATE = """mutation($input: StatusChangeInput!) {
  reinstateScenario(input: $input) { scenario { status } userErrors { code field } } }"""
SUSPEND_METHODOLOGY = """mutation($input: StatusChangeInput!) {
  suspendMethodology(input: $input) { methodology { status } userErrors { code field } } }"""
REINSTATE_METHODOLOGY = """mutation($input: StatusChangeInput!) {
  reinstateMethodology(input: $input) { methodology { status } userErrors { code field } } }"""


async def test_the_regulator_suspends_a_scenario_and_it_takes_nothing_until_reinstated(client):
    pub = await published_scenario(client)
    earlier = token()
    granted = await authorize(client, earlier, pub.scenario_code)
    assert granted["userErrors"] == []
    change = {"input": {"id": pub.scenario_id, "reason": "动态评估：数据质量存疑"}}
    assert error_codes(await gql(client, SUSPEND, change, CENTER)) == ["FORBIDDEN"]
    blank = data(await gql(client, SUSPEND, {"input": {"id": pub.scenario_id, "reason": " "}},
                           REGULATOR))["suspendScenario"]
    assert blank["userErrors"] == [{"code": "INVALID_INPUT", "field": "reason"}]
    done = data(await gql(client, SUSPEND, change, REGULATOR))["suspendScenario"]
    assert done == {"scenario": {"status": "SUSPENDED"}, "userErrors": []}
    assert await AuditEvent.filter(action="scenario.suspend", detail="动态评估：数据质量存疑").exists()
    again = data(await gql(client, SUSPEND, change, REGULATOR))["suspendScenario"]
    assert again["userErrors"] == [{"code": "INVALID_STATE", "field": "id"}]

    records = {"input": {"scenarioCode": pub.scenario_code, "records": []}}
    refused = data(await op(client, "SubmitScenarioRecords", records, pub.operator))
    assert [e["code"] for e in refused["submitScenarioRecords"]["userErrors"]] == ["INVALID_STATE"]
    streamed = await client.post(f"/ingest/scenarios/{pub.scenario_code}/records", content=b"",
                                 headers={"authorization": f"Bearer {pub.operator}"})
    assert streamed.status_code == 409 and streamed.json()["code"] == "INVALID_STATE"
    issue = {"input": {"scenarioCode": pub.scenario_code, "periodEnd": "2026-01-01T00:00:00+08:00",
                       "idempotencyKey": unique("k")}}
    issued = data(await op(client, "IssueScenarioReductions", issue, CENTER))
    assert [e["code"] for e in issued["issueScenarioReductions"]["userErrors"]] == ["INVALID_STATE"]
    consent = await authorize(client, token(), pub.scenario_code)
    assert [e["code"] for e in consent["userErrors"]] == ["NOT_FOUND"]
    # A resident who authorized before is answered their active grant, as always.
    again = await authorize(client, earlier, pub.scenario_code)
    assert again["userErrors"] == [] and again["authorization"] == granted["authorization"]
    listed = data(await gql(client, "{ scenarios(status: PUBLISHED) { code } }", auth=token()))
    assert pub.scenario_code not in [s["code"] for s in listed["scenarios"]]

    back = data(await gql(client, REINSTATE, change, REGULATOR))["reinstateScenario"]
    assert back == {"scenario": {"status": "PUBLISHED"}, "userErrors": []}
    taken = data(await op(client, "SubmitScenarioRecords", records, pub.operator))
    assert taken["submitScenarioRecords"]["userErrors"] == []
    assert (await authorize(client, token(), pub.scenario_code))["userErrors"] == []


async def test_no_scenario_is_submitted_on_a_suspended_methodology(client):
    found = await published_methodology(client)
    change = {"input": {"id": found["id"], "reason": "Factor under review"}}
    done = data(await gql(client, SUSPEND_METHODOLOGY, change, REGULATOR))["suspendMethodology"]
    assert done == {"methodology": {"status": "SUSPENDED"}, "userErrors": []}
    refused = await submitted_scenario(client, found["id"], _operator())
    assert [e["code"] for e in refused["userErrors"]] == ["INVALID_STATE"]
    assert error_codes(await gql(client, REINSTATE_METHODOLOGY, change, CENTER)) == ["FORBIDDEN"]
    back = data(await gql(client, REINSTATE_METHODOLOGY, change, REGULATOR))["reinstateMethodology"]
    assert back == {"methodology": {"status": "PUBLISHED"}, "userErrors": []}
    assert (await submitted_scenario(client, found["id"], _operator()))["userErrors"] == []


async def test_a_scenario_pending_on_a_suspended_methodology_is_neither_approved_nor_published(client):
    """A scenario submitted before its methodology was suspended is not approved, nor published,
    while the methodology stays suspended."""
    await ensure_test_calendar()
    found = await published_methodology(client)
    operator = token(unique("op"), "scenario_operator", org=credit_code())
    made = await submitted_scenario(client, found["id"], operator)
    assert made["userErrors"] == []
    suspended = data(await gql(client, SUSPEND_METHODOLOGY,
                               {"input": {"id": found["id"], "reason": "factor in doubt"}},
                               REGULATOR))["suspendMethodology"]
    assert suspended["userErrors"] == []
    start = (shanghai_today() - timedelta(days=30)).isoformat()
    answers = []
    for auth, extra in ((CENTER, {}), (EXCHANGE, {"publicityStartsOn": start})):
        body = {"input": {"id": made["scenario"]["id"], "approve": True, **extra}}
        answers.append(data(await op(client, "AssessScenario", body, auth))["assessScenario"])
    done = data(await op(client, "PublishScenario", {"input": {"id": made["scenario"]["id"]}},
                         REGULATOR))["publishScenario"]
    # Refused on the inputs' own field: AssessInput and PublishInput carry the scenario's id.
    assert [[(e["code"], e["field"]) for e in a["userErrors"]] for a in answers] == [
        [("INVALID_STATE", "id")]] * 2
    assert [(e["code"], e["field"]) for e in done["userErrors"]] == [("INVALID_STATE", "id")]


async def test_a_submission_racing_a_methodology_suspension_is_refused(client, monkeypatch):
    """A suspension committed between submitScenario's first look at its methodology and its
    insert: the submission is refused and no scenario is left on the suspended methodology."""
    found = await published_methodology(client)
    operator = token(unique("op"), "scenario_operator", org=credit_code())
    real = scenarios_service.organisation_id

    async def slow_lookup(org: str) -> int:  # between the status check and the insert
        suspended = data(await gql(client, SUSPEND_METHODOLOGY,
                                   {"input": {"id": found["id"], "reason": "factor in doubt"}},
                                   REGULATOR))["suspendMethodology"]
        assert suspended["userErrors"] == []
        return await real(org)

    monkeypatch.setattr(scenarios_service, "organisation_id", slow_lookup)
    made = await submitted_scenario(client, found["id"], operator)
    m = await Methodology.get(code=found["code"])
    rows = await Scenario.filter(methodology_id=m.id).values_list("status", flat=True)
    assert [e["code"] for e in made["userErrors"]] == ["INVALID_STATE"] and rows == []


async def test_a_suspension_waits_for_an_approval_under_way_on_its_methodology(client, monkeypatch):
    """The approval holds the methodology's row shared until it commits: a suspension coming
    meanwhile waits for it, so no approval commits on a methodology suspended under it."""
    await ensure_test_calendar()
    found = await published_methodology(client)
    made = await submitted_scenario(client, found["id"], _operator())
    held, reached = asyncio.Event(), asyncio.Event()
    create = scenarios_service.ScenarioAssessment.create

    async def slow(*args: object, **kwargs: object) -> object:
        reached.set()
        await asyncio.wait_for(held.wait(), 20)
        return await create(*args, **kwargs)

    monkeypatch.setattr(scenarios_service.ScenarioAssessment, "create", slow)
    body = {"input": {"id": made["scenario"]["id"], "approve": True}}
    approval = asyncio.ensure_future(op(client, "AssessScenario", body, CENTER))
    await asyncio.wait_for(reached.wait(), 10)
    change = {"input": {"id": found["id"], "reason": "factor in doubt"}}
    suspension = asyncio.ensure_future(gql(client, SUSPEND_METHODOLOGY, change, REGULATOR))
    await asyncio.sleep(1.0)
    assert not suspension.done()
    held.set()
    assert data(await approval)["assessScenario"]["userErrors"] == []
    assert data(await suspension)["suspendMethodology"]["userErrors"] == []
