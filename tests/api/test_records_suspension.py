"""Records that occurred while their scenario was suspended earn nothing, whenever they are sent:
after the regulator reinstates the scenario they are refused as OUT_OF_PERIOD, by the mutation
and by the stream alike, while the records around the suspension count as before."""

from __future__ import annotations

import asyncio
import os
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest

from app.db import dialect
from graphql_schema.ids import encode_id
from registry import records, records_sql, rules
from registry.models import Issuance, ScenarioRecord, ScenarioSuspension
from registry.rules import Terms
from tests.helpers import data, gql
from tests.records_support import (
    World,
    ago,
    answers,
    issue,
    make_world,
    ndjson,
    record,
    stream,
    submit,
)
from tests.registry_support import REGULATOR

SUSPEND = """mutation($input: StatusChangeInput!) {
  suspendScenario(input: $input) { scenario { status } userErrors { code } } }"""
REINSTATE = """mutation($input: StatusChangeInput!) {
  reinstateScenario(input: $input) { scenario { status } userErrors { code } } }"""
_SUSPENDED = "occurredAt is in a time the scenario was suspended."
_MICROSECOND = timedelta(microseconds=1)


async def _suspend_and_reinstate(client, world: World) -> tuple[datetime, datetime]:
    """The regulator suspends the scenario, then reinstates it; the suspension's times."""
    change = {"input": {"id": encode_id("Scenario", world.scenario_id), "reason": "动态评估：数据质量存疑"}}
    suspended = data(await gql(client, SUSPEND, change, REGULATOR))["suspendScenario"]
    assert suspended == {"scenario": {"status": "SUSPENDED"}, "userErrors": []}
    reinstated = data(await gql(client, REINSTATE, change, REGULATOR))["reinstateScenario"]
    assert reinstated == {"scenario": {"status": "PUBLISHED"}, "userErrors": []}
    kept = await ScenarioSuspension.filter(scenario_id=world.scenario_id).order_by("-id").first()
    assert kept is not None and kept.reinstated_at is not None
    return kept.suspended_at, kept.reinstated_at


def _around(who: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Records just before the suspension, at its start, inside it, at its end and after it."""
    return [
        record(who, 1, start - _MICROSECOND),
        record(who, 1, start),
        record(who, 1, start + (end - start) / 2),
        record(who, 1, end),
        record(who, 1, end + _MICROSECOND),
    ]


async def test_records_that_occurred_while_the_scenario_was_suspended_are_refused_after_it(client):
    world = await make_world(residents=1, cap=None)
    who = world.subjects[0]
    start, end = await _suspend_and_reinstate(client, world)
    assert ago(minutes=1) < start < end <= ago()

    sent = await submit(client, world, _around(who, start, end))
    assert answers(sent) == (3, 0, [(1, "OUT_OF_PERIOD"), (2, "OUT_OF_PERIOD")])
    assert {r["message"] for r in sent["rejected"]} == {_SUSPENDED}

    streamed = await stream(client, world, ndjson(_around(who, start, end)))
    assert streamed.status_code == 200
    assert answers(streamed.json()) == (3, 0, [(1, "OUT_OF_PERIOD"), (2, "OUT_OF_PERIOD")])

    # Only what was accepted is issued: 6 records of 100 g.
    issued = await issue(client, world.code, ago())
    assert issued["userErrors"] == [] and issued["issuance"]["totalGrams"] == "600"


async def test_a_second_suspension_is_kept_beside_the_first(client):
    world = await make_world(residents=1, cap=None)
    who = world.subjects[0]
    first = await _suspend_and_reinstate(client, world)
    second = await _suspend_and_reinstate(client, world)
    assert first[1] < second[0]
    inside = [record(who, 1, start + (end - start) / 2) for start, end in (first, second)]
    between = record(who, 1, first[1] + (second[0] - first[1]) / 2)
    assert answers(await submit(client, world, [*inside, between])) == (
        1, 0, [(0, "OUT_OF_PERIOD"), (1, "OUT_OF_PERIOD")])


async def test_a_batch_prepared_before_a_suspension_was_seen_is_refused_under_the_lock(client, monkeypatch):
    """On PostgreSQL a batch is classified before it takes the scenario's lock. A suspension
    the preparation did not see (committed just after it read, its time already past) is read
    again under the lock, and what occurred in it is refused there."""
    world = await make_world(residents=1, cap=None)
    who = world.subjects[0]
    start, end = ago(hours=3), ago(hours=1)
    real_prepare = records_sql.prepare

    async def prepare(terms, items, now):
        prepared = await real_prepare(terms, items, now)
        await ScenarioSuspension.create(scenario_id=world.scenario_id, suspended_at=start,
                                        reinstated_at=end)
        return prepared

    monkeypatch.setattr(records_sql, "prepare", prepare)
    sent = await submit(client, world, [record(who, 1, ago(hours=2)), record(who, 1, ago(minutes=30))])
    if not await ScenarioSuspension.filter(scenario_id=world.scenario_id).exists():
        # SQLite prepares nothing outside the lock: the suspension is there before the batch
        await ScenarioSuspension.create(scenario_id=world.scenario_id, suspended_at=start,
                                        reinstated_at=end)
        sent = await submit(client, world, [record(who, 1, ago(hours=2)), record(who, 1, ago(minutes=30))])
    assert answers(sent) == (1, 0, [(0, "OUT_OF_PERIOD")])


async def test_a_resend_with_an_item_of_the_suspension_is_answered_alike_on_the_retry_path(client):
    """A resend meets a stored ref, so on PostgreSQL the batch is applied again by the retry path
    (INSERT ... ON CONFLICT); the item of the suspension is still refused there."""
    world = await make_world(residents=1, cap=None)
    who = world.subjects[0]
    first = record(who, 1, ago(hours=2), "sent-twice")
    assert answers(await submit(client, world, [first])) == (1, 0, [])
    start, end = await _suspend_and_reinstate(client, world)
    inside = record(who, 1, start + (end - start) / 2)
    sent = await submit(client, world, [first, inside, record(who, 1, end)])
    assert answers(sent) == (1, 1, [(1, "OUT_OF_PERIOD")])
    assert sent["rejected"][0]["message"] == _SUSPENDED
    stored = await ScenarioRecord.filter(scenario_id=world.scenario_id).values_list("occurred_at", flat=True)
    assert len(stored) == 2 and not any(start <= at < end for at in stored)


async def test_records_accepted_inside_a_suspension_before_it_was_kept_earn_nothing_when_issued(client):
    """Records that occurred in a suspension and were accepted before suspensions were kept
    (read back from the audit trail when the service was upgraded) are issued nothing; the
    records beside them are issued as before."""
    world = await make_world(residents=1, cap=None)
    who = world.subjects[0]
    assert answers(await submit(client, world, [
        record(who, 1, ago(hours=4)), record(who, 2, ago(hours=2)), record(who, 1, ago(minutes=30)),
    ])) == (3, 0, [])
    await ScenarioSuspension.create(scenario_id=world.scenario_id, suspended_at=ago(hours=3),
                                    reinstated_at=ago(hours=1))
    issued = await issue(client, world.code, ago())
    assert issued["userErrors"] == []
    assert issued["issuance"]["totalGrams"] == "200"
    assert (await Issuance.get(scenario_id=world.scenario_id)).records == 2
    voided = await ScenarioRecord.get(scenario_id=world.scenario_id, computed_grams=200)
    assert voided.earned_grams == 0


async def test_a_batch_waiting_for_a_reinstatement_reads_its_time_once_it_is_done(client):
    """A batch that waits for the scenario's row while the regulator reinstates it reads the
    reinstatement's time after it committed, not the still-open suspension it saw when it began
    waiting: a record after the reinstatement is accepted."""
    if dialect() != "postgres":
        pytest.skip("SQLite runs one transaction at a time: nothing waits")
    world = await make_world(residents=1, cap=None)
    change = {"input": {"id": encode_id("Scenario", world.scenario_id), "reason": "动态评估"}}
    assert data(await gql(client, SUSPEND, change, REGULATOR))["suspendScenario"]["userErrors"] == []
    url = os.environ["PUHUI_DATABASE_URL"].replace("postgres://", "postgresql://", 1)
    regulator = await asyncpg.connect(url)
    try:
        reinstating = regulator.transaction()
        await reinstating.start()
        await regulator.execute("UPDATE registry_scenario SET status = 'PUBLISHED' WHERE id = $1",
                                world.scenario_id)
        reinstated_at = ago()
        await regulator.execute(
            "UPDATE registry_scenario_suspension SET reinstated_at = $2"
            " WHERE scenario_id = $1 AND reinstated_at IS NULL", world.scenario_id, reinstated_at)
        terms = Terms(world.scenario_id, world.code, world.grams_per_unit, world.cap)
        item = rules.check_item(0, world.subjects[0], 1, reinstated_at + _MICROSECOND, "after", 100)
        waiting = asyncio.create_task(records._apply(terms, [item], ago(), None, retry=False))
        await asyncio.sleep(0.3)
        assert not waiting.done()  # it waits for the scenario's row
        await reinstating.commit()
        decision = await waiting
    finally:
        await regulator.close()
    assert [i.index for i, _ in decision.accepted] == [0] and decision.rejected == []
