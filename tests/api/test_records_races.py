"""Batches of records beside other batches and issuances: every item still gets its answer.

On PostgreSQL a batch is first prepared without the scenario lock, then written while holding
the scenario shared, and applied again when a ref it writes was stored meanwhile. These tests
put the other work exactly in those windows: what another operator connection or the center
does there. (SQLite runs one transaction at a time: there the windows do not open, and the
same answers must come out.)
"""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta

import asyncpg

from app.db import dialect
from registry import records_sql
from registry.models import ScenarioRecord
from tests.helpers import gql
from tests.records_support import answers, issue, make_world, record, shanghai_noon, submit


async def test_a_batch_meeting_refs_of_many_batches_in_flight_still_gets_its_answer(
    client, monkeypatch
):
    """Ten batches of the same operator, each holding one ref of a bigger batch and committing
    while that batch waits on it: the bigger batch must answer (those refs as duplicates), not
    fail with an unexpected error once its retries run out."""
    world = await make_world(residents=1, cap=None)
    who = world.subjects[0]
    pid = world.residents[who]
    at = shanghai_noon(1)
    refs = [f"race-{n}" for n in range(12)]
    others: list[asyncpg.Connection] = []  # the other operator's connection (PostgreSQL only)
    committing: list[asyncio.Task] = []
    real_prepare = records_sql.prepare

    async def commit_soon(transaction) -> None:
        await asyncio.sleep(0.3)  # the batch has probed its refs and waits on this one by now
        await transaction.commit()

    async def prepare(terms, items, now):
        prepared = await real_prepare(terms, items, now)
        n = len(committing)
        if terms.scenario_id == world.scenario_id and n < 10:
            if committing:
                await committing[-1]
            if not others:
                url = os.environ["PUHUI_DATABASE_URL"].replace("postgres://", "postgresql://", 1)
                others.append(await asyncpg.connect(url))
            other = others[0]
            transaction = other.transaction()
            await transaction.start()
            await other.execute(
                "INSERT INTO registry_scenario_record (scenario_id, external_ref, participant_id,"
                " quantity, computed_grams, earned_grams, occurred_at, day, created_at)"
                " VALUES ($1, $2, $3, 1, 100, 100, $4, $5, $6)",
                world.scenario_id, refs[n], pid, at, (at + timedelta(hours=8)).date(), now,
            )
            committing.append(asyncio.create_task(commit_soon(transaction)))
        return prepared

    monkeypatch.setattr(records_sql, "prepare", prepare)
    try:
        body = await gql(
            client,
            """mutation($input: SubmitScenarioRecordsInput!) {
                 submitScenarioRecords(input: $input) { accepted duplicates
                   rejected { index code } userErrors { code } } }""",
            {"input": {"scenarioCode": world.code,
                       "records": [record(who, 1, at + timedelta(minutes=n), ref)
                                   for n, ref in enumerate(refs)]}},
            world.operator,
        )
    finally:
        await asyncio.gather(*committing, return_exceptions=True)
        for other in others:
            await other.close()
    assert body.get("errors") is None, body["errors"]
    payload = body["data"]["submitScenarioRecords"]
    assert payload["accepted"] + payload["duplicates"] == 12
    stored = await ScenarioRecord.filter(scenario_id=world.scenario_id).values_list("external_ref", flat=True)
    assert sorted(stored) == sorted(refs)


async def test_a_resent_ref_in_a_period_issued_meanwhile_is_a_duplicate(client, monkeypatch):
    """A resent record is a duplicate, issued period or not: the answer does not depend on an
    issuance's landing between the batch's preparation and its write."""
    world = await make_world(residents=1, cap=None)
    who = world.subjects[0]
    noon = shanghai_noon(2)
    assert answers(await submit(client, world, [record(who, 1, noon, "sent-twice")])) == (1, 0, [])
    real_prepare = records_sql.prepare
    issued: list[dict] = []

    async def prepare(terms, items, now):
        prepared = await real_prepare(terms, items, now)
        if terms.scenario_id == world.scenario_id and not issued:
            issued.append(await issue(client, world.code, noon + timedelta(hours=1)))
        return prepared

    monkeypatch.setattr(records_sql, "prepare", prepare)
    resent = await submit(client, world, [record(who, 1, noon, "sent-twice")])
    if not issued:  # SQLite: nothing comes between; issue now
        issued.append(await issue(client, world.code, noon + timedelta(hours=1)))
    assert issued[0]["issuance"]["totalGrams"] == "100"
    # Sent again once the issuance is done, the same record answers DUPLICATE.
    assert answers(await submit(client, world, [record(who, 1, noon, "sent-twice")])) == (0, 1, [])
    assert answers(resent) == (0, 1, [])


async def test_a_capped_day_of_huge_records_is_clipped_and_issued(client):
    """Two records each near the largest grams a record may compute, one person, one day: the
    cap clips them to 1,000 g and the issuance grants that, like any other day over its cap."""
    world = await make_world(residents=2, grams_per_unit=100, cap=1000)
    big, small = world.subjects
    noon = shanghai_noon(2)
    batch = [record(big, 9e16, noon, "huge-1"),                           # 9e18 g each: each fits
             record(big, 9e16, noon + timedelta(minutes=1), "huge-2"),    # a bigint, not both
             record(small, 3, noon, "plain")]
    assert answers(await submit(client, world, batch)) == (3, 0, [])
    issued = await issue(client, world.code, noon + timedelta(hours=1))
    assert issued["userErrors"] == []
    assert issued["issuance"]["totalGrams"] == "1300"
    earned = dict(await ScenarioRecord.filter(scenario_id=world.scenario_id).values_list(
        "external_ref", "earned_grams"))
    assert earned == {"huge-1": 1000, "huge-2": 0, "plain": 300}


async def test_a_batch_arriving_while_an_issuance_waits_comes_after_it(client, monkeypatch):
    """An issuance waits for the batches under way, and a batch that comes while it waits goes
    after it: a steady stream of batches never holds an issuance off."""
    world = await make_world(residents=1, cap=None)
    who = world.subjects[0]
    noon = shanghai_noon(2)
    assert answers(await submit(client, world, [record(who, 1, noon, "before")])) == (1, 0, [])
    release = asyncio.Event()
    held: list[bool] = []
    real_apply = records_sql.apply_items

    async def apply_and_hold(*args):
        decision = await real_apply(*args)
        if not held:  # the first batch keeps its transaction open until released
            held.append(True)
            await release.wait()
        return decision

    monkeypatch.setattr(records_sql, "apply_items", apply_and_hold)
    first = asyncio.create_task(submit(client, world, [record(who, 2, noon + timedelta(minutes=1), "a")]))
    await asyncio.sleep(0.3)
    issuing = asyncio.create_task(issue(client, world.code, noon + timedelta(hours=1)))
    await asyncio.sleep(0.3)
    second = asyncio.create_task(submit(client, world, [record(who, 4, noon + timedelta(minutes=2), "b")]))
    await asyncio.sleep(0.3)
    release.set()
    first_answer, issued, second_answer = await asyncio.gather(first, issuing, second)
    assert answers(first_answer) == (1, 0, [])
    if dialect() == "postgres":
        assert answers(second_answer) == (0, 0, [(0, "OUT_OF_PERIOD")])
        assert issued["issuance"]["totalGrams"] == "300"
    else:  # one transaction at a time: the second batch may come before the issuance
        late = answers(second_answer) == (0, 0, [(0, "OUT_OF_PERIOD")])
        assert issued["issuance"]["totalGrams"] == ("300" if late else "700")
