"""Resident consent through the contract: MyScenarios, AuthorizeScenario, RevokeScenarioAuthorization."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest

from app.participants import organisation_id
from registry.authorizations import active_authorizations, authorized_at
from registry.models import ScenarioAuthorization
from tests.helpers import credit_code, data, error_codes, find_resident, op, token, unique
from tests.registry_support import (
    CENTER,
    EXCHANGE,
    authorize,
    ensure_test_calendar,
    published_methodology,
    published_scenario,
    submitted_scenario,
)


@pytest.fixture(autouse=True)
async def _calendar(database):
    await ensure_test_calendar()


async def _revoke(client, resident, code):
    body = {"input": {"scenarioCode": code}}
    return data(await op(client, "RevokeScenarioAuthorization", body, resident))[
        "revokeScenarioAuthorization"]


async def _mine(client, resident):
    return data(await op(client, "MyScenarios", {}, resident))["me"]["scenarioAuthorizations"]


async def test_authorize_is_idempotent_while_active_and_revoke_keeps_history(client):
    scenario = await published_scenario(client)
    sub = unique("res")
    resident = token(sub)
    first = await authorize(client, resident, scenario.scenario_code)
    assert first["userErrors"] == []
    grant = first["authorization"]
    assert grant["scenario"] == {"code": scenario.scenario_code}
    assert grant["grantedAt"] and grant["revokedAt"] is None
    assert (await authorize(client, resident, scenario.scenario_code))["authorization"] == grant

    listed = await _mine(client, resident)
    assert listed == [{"scenario": {"code": scenario.scenario_code, "name": "Test scenario"},
                       "grantedAt": grant["grantedAt"], "revokedAt": None}]

    revoked = await _revoke(client, resident, scenario.scenario_code)
    assert revoked["userErrors"] == []
    assert revoked["authorization"]["grantedAt"] == grant["grantedAt"]
    assert revoked["authorization"]["revokedAt"]

    again = await _revoke(client, resident, scenario.scenario_code)
    assert [(e["code"], e["field"]) for e in again["userErrors"]] == [
        ("INVALID_STATE", "scenarioCode")]
    assert again["authorization"] is None

    regranted = (await authorize(client, resident, scenario.scenario_code))["authorization"]
    assert regranted["revokedAt"] is None
    assert datetime.fromisoformat(regranted["grantedAt"]) >= datetime.fromisoformat(
        revoked["authorization"]["revokedAt"])
    history = await _mine(client, resident)
    assert [h["revokedAt"] is None for h in history] == [True, False]

    pid = await find_resident(sub)
    intervals = (await active_authorizations(scenario.scenario_code, [pid, 2**62]))
    assert intervals[2**62] == []
    [(g1, r1), (g2, r2)] = intervals[pid]
    assert r1 is not None and r2 is None and g1 < r1 <= g2
    assert authorized_at(intervals[pid], g1) and not authorized_at(intervals[pid], r1)


async def test_only_published_scenarios_take_consent(client):
    methodology = await published_methodology(client)
    operator = token(unique("op"), "scenario_operator", org=credit_code())
    made = (await submitted_scenario(client, methodology["id"], operator))["scenario"]
    resident = token()
    unknown = await authorize(client, resident, unique("NOPE-"))
    pending = await authorize(client, resident, made["code"])
    # Residents are shown published scenarios only: a pending one answers as an unknown one.
    assert [(e["code"], e["field"]) for e in pending["userErrors"]] == [
        ("NOT_FOUND", "scenarioCode")]
    assert pending["userErrors"][0]["message"] == f"No scenario {made['code']}."
    for auth in (CENTER, EXCHANGE):
        body = {"input": {"id": made["id"], "approve": True}}
        await op(client, "AssessScenario", body, auth)
    in_publicity = await authorize(client, resident, made["code"])
    assert [e["code"] for e in in_publicity["userErrors"]] == ["NOT_FOUND"]
    assert [e["code"] for e in unknown["userErrors"]] == ["NOT_FOUND"]
    unknown_revoke = await _revoke(client, resident, unique("NOPE-"))
    assert [e["code"] for e in unknown_revoke["userErrors"]] == ["NOT_FOUND"]
    assert await _mine(client, resident) == []


async def test_only_residents_consent(client):
    scenario = await published_scenario(client)
    for auth in (CENTER, scenario.operator):
        body = {"input": {"scenarioCode": scenario.scenario_code}}
        assert error_codes(await op(client, "AuthorizeScenario", body, auth)) == ["FORBIDDEN"]
        assert error_codes(await op(client, "RevokeScenarioAuthorization", body, auth)) == [
            "FORBIDDEN"]
    assert error_codes(await op(client, "AuthorizeScenario",
                                {"input": {"scenarioCode": scenario.scenario_code}})) == [
        "UNAUTHENTICATED"]


async def test_a_behavior_scenario_takes_consent_too(client):
    from points.models import BehaviorScenario

    code = unique("B-")
    org = credit_code()
    await BehaviorScenario.create(code=code, name="Garbage sorting", operator_org=org,
                                  operator_participant_id=await organisation_id(org),
                                  defined_by="test")
    resident = token()
    granted = await authorize(client, resident, code)
    assert granted["userErrors"] == [] and granted["authorization"]["scenario"] == {"code": code}
    assert (await _mine(client, resident))[0]["scenario"] == {"code": code,
                                                               "name": "Garbage sorting"}
    assert (await _revoke(client, resident, code))["authorization"]["revokedAt"]


async def test_concurrent_authorizations_open_one_grant(client):
    scenario = await published_scenario(client)
    sub = unique("res")
    resident = token(sub)
    await op(client, "MyScenarios", {}, resident)  # the account exists before the race
    answers = await asyncio.gather(*[
        authorize(client, resident, scenario.scenario_code) for _ in range(6)])
    assert all(a["userErrors"] == [] for a in answers)
    assert len({a["authorization"]["grantedAt"] for a in answers}) == 1
    pid = await find_resident(sub)
    assert await ScenarioAuthorization.filter(participant_id=pid,
                                              scenario_code=scenario.scenario_code).count() == 1
    revokes = await asyncio.gather(*[
        _revoke(client, resident, scenario.scenario_code) for _ in range(4)])
    assert sorted(len(r["userErrors"]) for r in revokes) == [0, 1, 1, 1]
