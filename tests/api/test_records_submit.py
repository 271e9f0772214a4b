"""SubmitScenarioRecords: per-item answers, exact grams, the daily cap, duplicates, who may send."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from registry.models import Issuance, ScenarioRecord
from registry.rules import shanghai_day
from tests.helpers import credit_code, error_codes, op, token, unique
from tests.records_support import (
    add_resident,
    ago,
    answers,
    issue,
    make_world,
    record,
    shanghai_noon,
    submit,
)


async def _stored(world) -> dict[str, tuple[int, int]]:
    rows = await ScenarioRecord.filter(scenario_id=world.scenario_id).values_list(
        "external_ref", "computed_grams", "earned_grams"
    )
    return {ref: (computed, earned) for ref, computed, earned in rows}


async def _earned_on(world, who: str, moment) -> int:
    """Grams a resident earned on the Shanghai day of `moment` (what the daily cap reads)."""
    earned = await ScenarioRecord.filter(
        scenario_id=world.scenario_id, participant_id=world.residents[who], day=shanghai_day(moment)
    ).values_list("earned_grams", flat=True)
    return sum(earned)


async def test_records_earn_exact_floor_grams_and_the_cap_clips_at_issuance(client):
    world = await make_world(residents=1, grams_per_unit=100, cap=1000)
    who = world.subjects[0]
    when = [shanghai_noon(1) + timedelta(minutes=m) for m in (1, 2, 3)]
    batch = [
        record(who, 2.3, when[0], "a"),    # 2.3 x 100 = 230 exactly (binary float: 229.99...)
        record(who, 6.789, when[1], "b"),  # floor(678.9) = 678; cap leaves 770
        record(who, 5, when[2], "c"),      # 500 computed, 92 left under the cap
    ]
    payload = await submit(client, world, batch)
    assert answers(payload) == (3, 0, [])
    assert payload["userErrors"] == []
    more = await submit(client, world, [record(who, 1, when[2] + timedelta(seconds=5), "d")])
    assert answers(more) == (1, 0, [])  # accepted: a cap clips, it never refuses

    issued = await issue(client, world.code, when[2] + timedelta(minutes=1))
    assert issued["issuance"]["totalGrams"] == "1000"
    row = await Issuance.get(serial_prefix=issued["issuance"]["serialPrefix"])
    assert row.records == 3  # "d" earns nothing: the cap is spent
    assert await _stored(world) == {"a": (230, 230), "b": (678, 678), "c": (500, 92), "d": (100, 0)}
    assert await _earned_on(world, who, when[0]) == 1000


async def test_an_external_ref_counts_once_within_a_batch_and_forever(client):
    world = await make_world(residents=2)
    a, b = world.subjects
    first = [record(a, 1, ago(hours=5), "r1"), record(b, 1, ago(hours=4), "r1"),
             record(a, 1, ago(hours=3), "r2")]
    assert answers(await submit(client, world, first)) == (2, 1, [])
    before = await _stored(world)

    again = await submit(client, world, first + [record(b, 2, ago(hours=2), "r3")])
    assert answers(again) == (1, 3, [])
    after = await _stored(world)
    assert {k: after[k] for k in before} == before
    assert set(after) == {"r1", "r2", "r3"}


async def test_a_rejected_item_does_not_use_up_its_external_ref(client):
    world = await make_world(residents=1)
    who = world.subjects[0]
    batch = [record(who, 1, ago(days=200), "x"), record(who, 1, ago(hours=1), "x")]
    assert answers(await submit(client, world, batch)) == (1, 0, [(0, "OUT_OF_PERIOD")])


async def test_each_refusal_has_its_code_and_blocks_no_other_item(client):
    world = await make_world(residents=1)
    ok = world.subjects[0]
    never = await add_resident(world, since=None)
    revoked = await add_resident(world, since=timedelta(days=20), until=timedelta(days=10))
    late = await add_resident(world, since=timedelta(hours=2))
    batch = [
        record(ok, 1, ago(hours=1)),                 # 0 accepted
        record(ok, 0, ago(hours=1)),                 # 1 quantity must be > 0
        record(ok, -3.5, ago(hours=1)),              # 2
        record(ok, 1, ago(hours=-1)),                # 3 in the future
        record(ok, 1, ago(days=91)),                 # 4 older than 90 days
        record(unique("nobody"), 1, ago(hours=1)),   # 5 unknown person
        record(never, 1, ago(hours=1)),              # 6 never authorized
        record(revoked, 1, ago(days=5)),             # 7 authorization revoked before
        record(revoked, 1, ago(days=15)),            # 8 authorized then
        record(late, 1, ago(hours=3)),               # 9 authorized only after it happened
        record(ok, 1, ago(hours=1), ""),             # 10 empty externalRef
        {**record(ok, 1, ago(hours=1)), "occurredAt": "2026-11-01T08:00:00"},  # 11 no offset
        record(ok, 1e300, ago(hours=1)),             # 12 grams beyond 64 bits
        {**record(ok, 1, ago(hours=1)), "occurredAt": "0001-01-01T00:00:00+14:00"},  # 13 before year 1 in UTC
        {**record(ok, 1, ago(hours=1)), "occurredAt": "9999-12-31T23:59:59-14:00"},  # 14 after 9999
    ]
    payload = await submit(client, world, batch)
    assert answers(payload) == (2, 0, [
        (1, "INVALID_INPUT"), (2, "INVALID_INPUT"), (3, "OUT_OF_PERIOD"), (4, "OUT_OF_PERIOD"),
        (5, "NOT_AUTHORIZED"), (6, "NOT_AUTHORIZED"), (7, "NOT_AUTHORIZED"), (9, "NOT_AUTHORIZED"),
        (10, "INVALID_INPUT"), (11, "INVALID_INPUT"), (12, "INVALID_INPUT"), (13, "INVALID_INPUT"),
        (14, "INVALID_INPUT"),
    ])
    assert all(r["message"] for r in payload["rejected"])
    assert await ScenarioRecord.filter(scenario_id=world.scenario_id).count() == 2


async def test_more_than_a_thousand_records_is_refused_whole(client):
    world = await make_world(residents=1)
    batch = [record(world.subjects[0], 1, ago(hours=1)) for _ in range(1001)]
    payload = await submit(client, world, batch)
    assert [e["code"] for e in payload["userErrors"]] == ["INVALID_INPUT"]
    assert payload["userErrors"][0]["field"] == "records"
    assert await ScenarioRecord.filter(scenario_id=world.scenario_id).count() == 0


async def test_only_the_scenarios_own_operator_may_send_records(client):
    world = await make_world(residents=1)
    batch = [record(world.subjects[0], 1, ago(hours=1))]
    other = token(unique("op"), "scenario_operator", org=credit_code())
    payload = await submit(client, world, batch, auth=other)
    assert [e["code"] for e in payload["userErrors"]] == ["NOT_FOUND"]
    missing = await op(client, "SubmitScenarioRecords", {"input": {"scenarioCode": "NO-SUCH",
                                                                   "records": batch}}, other)
    assert [e["code"] for e in missing["data"]["submitScenarioRecords"]["userErrors"]] == ["NOT_FOUND"]
    variables = {"input": {"scenarioCode": world.code, "records": batch}}
    resident = await op(client, "SubmitScenarioRecords", variables, token(roles="resident"))
    assert error_codes(resident) == ["FORBIDDEN"]
    anonymous = await op(client, "SubmitScenarioRecords", variables)
    assert error_codes(anonymous) == ["UNAUTHENTICATED"]
    assert await ScenarioRecord.filter(scenario_id=world.scenario_id).count() == 0


async def test_records_of_an_unpublished_scenario_are_refused(client):
    from registry.models import Scenario

    world = await make_world(residents=1)
    await Scenario.filter(id=world.scenario_id).update(status="SUSPENDED")
    payload = await submit(client, world, [record(world.subjects[0], 1, ago(hours=1))])
    assert [e["code"] for e in payload["userErrors"]] == ["INVALID_STATE"]
    assert await ScenarioRecord.filter(scenario_id=world.scenario_id).count() == 0


async def test_concurrent_batches_never_exceed_the_daily_cap(client):
    world = await make_world(residents=1, grams_per_unit=100, cap=1000)
    who = world.subjects[0]
    when = shanghai_noon(2)
    batches = [[record(who, 3, when + timedelta(seconds=i * 10 + j)) for j in range(2)]
               for i in range(6)]
    results = await asyncio.gather(*(submit(client, world, b) for b in batches))
    assert sum(r["accepted"] for r in results) == 12
    issued = await issue(client, world.code, when + timedelta(minutes=5))
    assert issued["issuance"]["totalGrams"] == "1000"
    stored = await _stored(world)
    assert sum(earned for _, earned in stored.values()) == 1000
    assert all(computed == 300 for computed, _ in stored.values())
    assert await _earned_on(world, who, when) == 1000


async def test_a_refused_item_whose_ref_is_already_counted_is_a_duplicate(client):
    world = await make_world(residents=1)
    who = world.subjects[0]
    never = await add_resident(world, since=None)
    assert answers(await submit(client, world, [record(who, 1, ago(hours=3), "x")])) == (1, 0, [])
    again = [record(never, 1, ago(hours=2), "x"), record(who, 1, ago(days=100), "x"),
             record(never, 1, ago(hours=2), "y")]
    assert answers(await submit(client, world, again)) == (0, 2, [(2, "NOT_AUTHORIZED")])
    assert set(await _stored(world)) == {"x"}


async def test_an_issuance_between_looking_up_and_writing_moves_the_period(client, monkeypatch):
    from app.auth import Principal
    from app.events import flush_notices
    from registry import records_sql
    from registry.issuance import issue_scenario_reductions

    world = await make_world(residents=1)
    who = world.subjects[0]
    assert answers(await submit(client, world, [record(who, 1, ago(days=5), "old")])) == (1, 0, [])
    prepare = records_sql.prepare
    issued = []

    async def prepare_then_issue(*args):
        prepared = await prepare(*args)
        center = Principal(subject="records-center", roles=frozenset({"center"}))
        issued.append(await issue_scenario_reductions(center, world.code, ago(days=3), unique("k")))
        return prepared

    # On PostgreSQL consent is looked up before the scenario lock is taken; SQLite has no such
    # step (its transactions run one at a time), so there the issuance does not come between.
    monkeypatch.setattr(records_sql, "prepare", prepare_then_issue)
    payload = await submit(client, world, [record(who, 1, ago(days=4), "late")])
    if issued:
        assert answers(payload) == (0, 0, [(0, "OUT_OF_PERIOD")])
        assert set(await _stored(world)) == {"old"}
        await flush_notices()
    else:
        assert answers(payload) == (1, 0, [])


async def test_every_known_resident_counts_when_the_resident_cache_empties(client, monkeypatch):
    """The per-process cache of residents may empty between or during batches: a resident it
    held before is still recognised (not refused as unknown)."""
    from registry import records_sql

    world = await make_world(residents=3)
    a, b, c = world.subjects
    monkeypatch.setattr(records_sql, "RESIDENT_CACHE", 2)
    assert answers(await submit(client, world, [record(a, 1, ago(hours=6)), record(b, 1, ago(hours=5))])) \
        == (2, 0, [])
    both = await submit(client, world, [record(a, 1, ago(hours=4)), record(c, 1, ago(hours=3))])
    assert answers(both) == (2, 0, [])


async def test_concurrent_batches_sharing_refs_count_each_ref_once(client):
    """Batches run side by side (they only share the scenario row): refs sent by several at
    once, in opposite orders, are each counted once, and every other copy is a duplicate."""
    world = await make_world(residents=2, cap=None)
    a, b = world.subjects
    refs = [f"shared-{n}" for n in range(20)]
    batches = []
    for i in range(6):
        order = refs if i % 2 == 0 else refs[::-1]
        batches.append([record(a if n % 2 else b, 1, ago(hours=1, minutes=n), ref)
                        for n, ref in enumerate(order)] + [record(a, 1, ago(hours=2), f"own-{i}")])
    results = await asyncio.gather(*(submit(client, world, batch) for batch in batches))
    assert all(r["userErrors"] == [] and r["rejected"] == [] for r in results)
    assert sum(r["accepted"] for r in results) == 20 + 6
    assert sum(r["duplicates"] for r in results) == 5 * 20
    assert sorted(await _stored(world)) == sorted(refs + [f"own-{i}" for i in range(6)])
