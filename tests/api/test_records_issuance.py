"""IssueScenarioReductions: one lot credited to each resident, once, traceably and idempotently."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from app.events import flush_notices
from app.ledger.accounts import holder_account_id
from app.ledger.models import Account, Asset, Entry, Lot, LotHolding
from app.ledger.verify import verify
from registry.models import Issuance, Scenario, ScenarioRecord
from registry.rules import SHANGHAI
from tests.helpers import data, error_codes, gql, op, token, unique
from tests.records_support import CENTER, ago, answers, issue, make_world, record, shanghai_noon, submit


async def _grams(participant_id: int) -> int:
    account = await holder_account_id(participant_id, Asset.REDUCTION_GRAMS)
    return (await Account.get(id=account)).balance


async def _world_with_records(client):
    world = await make_world(residents=3, grams_per_unit=100, cap=1000)
    a, b, c = world.subjects
    noon = shanghai_noon(5)
    batch = [
        record(a, 4, noon),                           # 400
        record(a, 8, noon + timedelta(minutes=1)),    # 800, clipped to 600
        record(b, 1.5, noon),                         # 150
        record(c, 0.004, noon),                       # 0 g: accepted, nothing to issue
        record(b, 2, shanghai_noon(2)),               # 200, after the period issued below
    ]
    assert answers(await submit(client, world, batch)) == (5, 0, [])
    return world, noon + timedelta(hours=1)


async def test_issuance_credits_each_resident_one_lot_and_marks_the_records(client):
    world, period_end = await _world_with_records(client)
    a, b, c = world.subjects
    payload = await issue(client, world.code, period_end)
    assert payload["userErrors"] == []
    issued = payload["issuance"]
    assert issued["totalGrams"] == "1150" and issued["recipients"] == 2
    assert issued["serialPrefix"].startswith(f"SH-CI-SC-{world.code}-")
    assert issued["serialPrefix"].endswith("-0001")

    assert await _grams(world.residents[a]) == 1000
    assert await _grams(world.residents[b]) == 150
    assert await _grams(world.residents[c]) == 0
    row = await Issuance.get(serial_prefix=issued["serialPrefix"])
    assert (row.records, row.grams_per_unit, row.methodology_class) == (3, 100, "II")
    lot = await Lot.get(id=row.lot_id)
    assert (lot.issued_grams, lot.source_code, lot.methodology_class) == (1150, world.code, "II")
    holdings = await LotHolding.filter(lot_id=lot.id).values_list("balance", flat=True)
    assert sorted(holdings) == [150, 1000]
    scenario = await Scenario.get(id=world.scenario_id)
    assert scenario.issued_through == period_end  # records up to here are issued, or earned 0 g
    issued_records = ScenarioRecord.filter(scenario_id=world.scenario_id, earned_grams__gt=0,
                                           occurred_at__lte=scenario.issued_through)
    assert await issued_records.count() == 3
    assert (await verify()).ok
    await flush_notices()

    # The resident sees the issuance on their ledger.
    resident = token(a, "resident")
    ledger = data(await op(client, "MyLedger", {"first": 5}, resident))
    [edge] = ledger["me"]["account"]["entries"]["edges"]
    node = edge["node"]
    assert (node["kind"], node["asset"], node["amount"], node["balanceAfter"]) == (
        "ISSUANCE", "REDUCTION_GRAMS", "1000", "1000")
    assert node["memo"] == issued["serialPrefix"]

    # A record in the issued period is now OUT_OF_PERIOD; the next issuance takes the rest.
    late = await submit(client, world, [record(b, 1, period_end - timedelta(minutes=5))])
    assert answers(late) == (0, 0, [(0, "OUT_OF_PERIOD")])
    second = await issue(client, world.code, ago(minutes=1))
    assert second["issuance"]["totalGrams"] == "200"
    assert second["issuance"]["serialPrefix"].endswith("-0002")
    assert await _grams(world.residents[b]) == 350


async def test_a_retry_with_the_same_key_returns_the_first_issuance_and_moves_nothing(client):
    world, period_end = await _world_with_records(client)
    key = unique("issue")
    first = await issue(client, world.code, period_end, key)
    again = await issue(client, world.code, period_end, key)
    assert again == first
    assert await _grams(world.residents[world.subjects[0]]) == 1000
    assert await Issuance.filter(scenario_id=world.scenario_id).count() == 1

    conflict = await issue(client, world.code, period_end - timedelta(minutes=1), key)
    assert conflict["issuance"] is None
    assert [e["code"] for e in conflict["userErrors"]] == ["IDEMPOTENCY_CONFLICT"]
    assert await Issuance.filter(scenario_id=world.scenario_id).count() == 1


async def test_nothing_to_issue_is_invalid_state_and_changes_nothing(client):
    world, period_end = await _world_with_records(client)
    early = await issue(client, world.code, period_end - timedelta(days=3))
    assert [e["code"] for e in early["userErrors"]] == ["INVALID_STATE"]
    assert (await Scenario.get(id=world.scenario_id)).issued_through is None
    await issue(client, world.code, period_end)
    repeat = await issue(client, world.code, period_end)
    assert [e["code"] for e in repeat["userErrors"]] == ["INVALID_STATE"]
    assert await Issuance.filter(scenario_id=world.scenario_id).count() == 1


async def test_issuance_input_and_callers_are_checked(client):
    world, period_end = await _world_with_records(client)
    future = await issue(client, world.code, ago(hours=-1))
    assert [(e["code"], e["field"]) for e in future["userErrors"]] == [("INVALID_INPUT", "periodEnd")]
    for extreme in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
        body = await op(client, "IssueScenarioReductions", {"input": {
            "scenarioCode": world.code, "periodEnd": extreme, "idempotencyKey": unique("k")}}, CENTER)
        errors = data(body)["issueScenarioReductions"]["userErrors"]
        assert [(e["code"], e["field"]) for e in errors] == [("INVALID_INPUT", "periodEnd")]
    missing = await issue(client, "NO-SUCH-SCENARIO", period_end)
    assert [e["code"] for e in missing["userErrors"]] == ["NOT_FOUND"]
    variables = {"input": {"scenarioCode": world.code, "periodEnd": period_end.isoformat(),
                           "idempotencyKey": unique("k")}}
    for auth in (world.operator, token(roles="exchange"), token(roles="resident")):
        body = await op(client, "IssueScenarioReductions", variables, auth)
        assert error_codes(body) == ["FORBIDDEN"]
    assert error_codes(await op(client, "IssueScenarioReductions", variables)) == ["UNAUTHENTICATED"]
    blank_key = {"input": {**variables["input"], "idempotencyKey": "  "}}
    refused = data(await op(client, "IssueScenarioReductions", blank_key, CENTER))
    assert [e["code"] for e in refused["issueScenarioReductions"]["userErrors"]] == ["INVALID_INPUT"]
    assert await Issuance.filter(scenario_id=world.scenario_id).count() == 0
    assert await _grams(world.residents[world.subjects[0]]) == 0


async def test_concurrent_issuances_never_issue_a_record_twice(client):
    world, period_end = await _world_with_records(client)
    results = await asyncio.gather(*(issue(client, world.code, period_end) for _ in range(4)))
    made = [r for r in results if r["issuance"]]
    refused = [r for r in results if not r["issuance"]]
    assert len(made) == 1
    assert all([e["code"] for e in r["userErrors"]] == ["INVALID_STATE"] for r in refused)
    assert await _grams(world.residents[world.subjects[0]]) == 1000
    entries = await Entry.filter(account_id=await holder_account_id(world.residents[world.subjects[0]],
                                                                    Asset.REDUCTION_GRAMS)).count()
    assert entries == 1
    assert (await verify()).ok


async def test_issuances_are_listed_and_a_lot_is_traced_to_its_holders(client):
    world, period_end = await _world_with_records(client)
    issued = (await issue(client, world.code, period_end))["issuance"]
    listing = """
      query($code: String!) { scenarioIssuances(scenarioCode: $code, first: 5) {
        edges { node { serialPrefix totalGrams recipients records methodologyCode gramsPerUnit } }
        pageInfo { hasNextPage } } }
    """
    for auth in (CENTER, world.operator):
        page = data(await gql(client, listing, {"code": world.code}, auth))["scenarioIssuances"]
        [edge] = page["edges"]
        assert edge["node"]["serialPrefix"] == issued["serialPrefix"]
        assert (edge["node"]["totalGrams"], edge["node"]["records"]) == ("1150", 3)
    stranger = token(unique("op"), "scenario_operator", org="91310000MA1FL0000X")
    hidden = await gql(client, listing, {"code": world.code}, stranger)
    assert error_codes(hidden) == ["NOT_FOUND"]

    trace = """
      query($serial: String!) { lotTrace(serialPrefix: $serial) {
        serialPrefix issuedGrams methodologyClass vintage holdings { holderKind grams accounts } } }
    """
    found = data(await gql(client, trace, {"serial": issued["serialPrefix"]}, CENTER))["lotTrace"]
    assert found["issuedGrams"] == "1150"
    assert found["holdings"] == [{"holderKind": "individual", "grams": "1150", "accounts": 2}]
    assert error_codes(await gql(client, trace, {"serial": issued["serialPrefix"]},
                                 token(roles="resident"))) == ["FORBIDDEN"]


async def test_recipients_are_told_their_account_changed(client):
    from app.events import account_channel
    from app.redis import get_store

    world, period_end = await _world_with_records(client)
    recipient = world.residents[world.subjects[0]]
    async with get_store().listen(account_channel(recipient)) as listener:
        assert (await issue(client, world.code, period_end))["issuance"]
        await flush_notices()
        async with asyncio.timeout(10):  # a hang guard, not a latency assertion
            assert await listener.next() == "changed"


async def test_a_period_ending_within_a_day_leaves_the_rest_of_its_cap_to_the_next(client):
    world = await make_world(residents=1, grams_per_unit=100, cap=1000)
    who = world.subjects[0]
    noon = shanghai_noon(3)
    first = [record(who, 4, noon, "m1"), record(who, 3, noon + timedelta(minutes=1), "m2")]
    assert answers(await submit(client, world, first)) == (2, 0, [])
    issued = await issue(client, world.code, noon + timedelta(minutes=30))
    assert issued["issuance"]["totalGrams"] == "700"
    later = [record(who, 2, noon + timedelta(hours=1), "m3"),   # 200 of the 300 left
             record(who, 2, noon + timedelta(hours=2), "m4"),   # the last 100
             record(who, 2, noon + timedelta(hours=3), "m5"),   # nothing left
             record(who, 2, noon + timedelta(days=1), "m6")]    # the next day: a new cap
    assert answers(await submit(client, world, later)) == (4, 0, [])
    second = await issue(client, world.code, noon + timedelta(days=1, hours=1))
    assert second["issuance"]["totalGrams"] == "500"
    row = await Issuance.get(serial_prefix=second["issuance"]["serialPrefix"])
    assert row.records == 3
    earned = dict(await ScenarioRecord.filter(scenario_id=world.scenario_id).values_list(
        "external_ref", "earned_grams"))
    assert earned == {"m1": 400, "m2": 300, "m3": 200, "m4": 100, "m5": 0, "m6": 200}
    assert await _grams(world.residents[who]) == 1200
    assert (await verify()).ok


async def test_batches_and_an_issuance_at_once_issue_every_record_of_the_period_once(client):
    """Batches run side by side and an issuance waits for those under way: each record of the
    period is either in the issuance or refused as OUT_OF_PERIOD, never stored and left out."""
    world = await make_world(residents=3, grams_per_unit=100, cap=None)
    people = world.subjects
    period_end = ago(minutes=30)
    assert answers(await submit(client, world, [record(people[0], 1, ago(hours=2), "first")])) \
        == (1, 0, [])
    batches = [
        [record(people[(i + j) % 3], 1 + j, ago(hours=1, minutes=j) if j % 2 else ago(minutes=j),
                f"b{i}-{j}") for j in range(10)]
        for i in range(6)
    ]
    *answered, issued = await asyncio.gather(
        *(submit(client, world, batch) for batch in batches), issue(client, world.code, period_end))
    assert issued["userErrors"] == []
    for payload in answered:
        assert payload["accepted"] + len(payload["rejected"]) == 10
        assert {r["code"] for r in payload["rejected"]} <= {"OUT_OF_PERIOD"}
    stored = await ScenarioRecord.filter(scenario_id=world.scenario_id, occurred_at__lte=period_end) \
        .values_list("computed_grams", flat=True)
    assert int(issued["issuance"]["totalGrams"]) == sum(stored)
    later = await issue(client, world.code, ago(seconds=0))
    assert later["userErrors"] == []
    everything = await ScenarioRecord.filter(scenario_id=world.scenario_id).values_list(
        "computed_grams", flat=True)
    assert int(issued["issuance"]["totalGrams"]) + int(later["issuance"]["totalGrams"]) == sum(everything)
    assert (await verify()).ok


async def test_grams_past_what_an_issuance_or_an_account_holds_are_refused_and_change_nothing(client):
    huge = 2**62  # grams per unit: two records of one unit are past a 64-bit total
    both = await make_world(residents=2, grams_per_unit=huge, cap=None)
    noon = shanghai_noon(5)
    assert answers(await submit(client, both, [record(s, 1, noon) for s in both.subjects]))[0] == 2
    too_much = await issue(client, both.code, noon + timedelta(hours=1))
    assert [(e["code"], e["field"]) for e in too_much["userErrors"]] == [("INVALID_STATE", "periodEnd")]
    assert too_much["issuance"] is None
    assert (await Scenario.get(id=both.scenario_id)).issued_through is None

    one = await make_world(residents=1, grams_per_unit=huge, cap=None)
    [subject] = one.subjects
    assert answers(await submit(client, one, [record(subject, 1, shanghai_noon(6))]))[0] == 1
    first = await issue(client, one.code, shanghai_noon(6) + timedelta(hours=1))
    assert first["userErrors"] == []
    assert await _grams(one.residents[subject]) == huge
    assert answers(await submit(client, one, [record(subject, 1, noon)]))[0] == 1
    past_the_account = await issue(client, one.code, noon + timedelta(hours=1))
    assert [e["code"] for e in past_the_account["userErrors"]] == ["INVALID_STATE"]
    assert "largest balance" in past_the_account["userErrors"][0]["message"]
    assert await _grams(one.residents[subject]) == huge
    assert await Issuance.filter(scenario_id=one.scenario_id).count() == 1
    assert (await verify()).ok


async def test_scenarios_whose_codes_give_one_serial_base_issue_distinct_serials(client):
    # A code unfit for a serial is written S<id>; a scenario may be named exactly that.
    odd = await make_world(residents=1, code=unique("rs_odd_"))
    plain = await make_world(residents=1, code=f"S{odd.scenario_id}")
    for world, hours in ((odd, 3), (plain, 3), (odd, 1)):
        batch = [record(world.subjects[0], 1, ago(hours=hours))]
        assert answers(await submit(client, world, batch))[0] == 1
        payload = await issue(client, world.code, ago(hours=hours - 0.5))
        assert payload["userErrors"] == [], payload
    serials = [i.serial_prefix for i in await Issuance.filter(
        scenario_id__in=[odd.scenario_id, plain.scenario_id]).order_by("id")]
    year = ago().astimezone(SHANGHAI).year
    base = f"SH-CI-SC-S{odd.scenario_id}-{year}-"
    assert serials == [f"{base}0001", f"{base}0002", f"{base}0003"]


async def test_serials_numbered_before_follow_the_highest_of_their_base(client):
    """Serials numbered before the sequence was kept per base and vintage (one sequence per
    scenario across years): a scenario holding <base>-<last year>-0001 and <base>-<Y>-0002
    issues <base>-<Y>-0003 next, never 0002 again. Two real issuances are made, then given the
    serials the earlier numbering gave them."""
    world = await make_world(residents=1)
    year = ago().astimezone(SHANGHAI).year
    base = f"SH-CI-SC-{world.code.upper()}"
    for hours, old_serial in ((5, f"{base}-{year - 1}-0001"), (3, f"{base}-{year}-0002")):
        batch = [record(world.subjects[0], 1, ago(hours=hours))]
        assert answers(await submit(client, world, batch))[0] == 1
        payload = await issue(client, world.code, ago(hours=hours - 0.5))
        assert payload["userErrors"] == [], payload
        made = await Issuance.filter(scenario_id=world.scenario_id).order_by("-id").first()
        await Lot.filter(id=made.lot_id).update(serial_prefix=old_serial)
        await Issuance.filter(id=made.id).update(serial_prefix=old_serial)
    batch = [record(world.subjects[0], 1, ago(hours=1))]
    assert answers(await submit(client, world, batch))[0] == 1
    body = await op(client, "IssueScenarioReductions", {"input": {
        "scenarioCode": world.code, "periodEnd": ago(hours=0.5).isoformat(),
        "idempotencyKey": unique("k")}}, CENTER)
    assert not body.get("errors"), body.get("errors")
    payload = body["data"]["issueScenarioReductions"]
    assert payload["userErrors"] == []
    assert payload["issuance"]["serialPrefix"] == f"{base}-{year}-0003"
