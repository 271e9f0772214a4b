"""A batch applied again (after meeting a stored ref) beside another batch storing its refs.

The first write of the batch meets a ref stored before it (so the batch is applied again);
during the second application another operator connection holds refs of the batch, not yet
committed. The answer must still be one a fresh application would give, and a deadlock with
that connection must send the batch round again rather than fail. PostgreSQL only: SQLite
runs one transaction at a time, so nothing can come between.
"""

from __future__ import annotations

import asyncio
import os
from datetime import datetime, timedelta

import asyncpg
import pytest

from app.db import dialect
from tests.helpers import gql
from tests.records_support import (
    World,
    add_resident,
    answers,
    make_world,
    record,
    shanghai_noon,
    submit,
)

_SUBMIT = """mutation($input: SubmitScenarioRecordsInput!) {
  submitScenarioRecords(input: $input) { accepted duplicates rejected { index code } } }"""

_INSERT = (
    "INSERT INTO registry_scenario_record (scenario_id, external_ref, participant_id,"
    " quantity, computed_grams, earned_grams, occurred_at, day, created_at)"
    " VALUES ($1, $2, $3, 1, 100, 100, $4, $5, now())"
)


async def _other() -> asyncpg.Connection:
    url = os.environ["PUHUI_DATABASE_URL"].replace("postgres://", "postgresql://", 1)
    conn = await asyncpg.connect(url)
    await conn.execute("SET deadlock_timeout = '10s'")  # the batch is the one to see a deadlock
    return conn


async def _store(conn: asyncpg.Connection, world: World, ref: str, at: datetime) -> None:
    pid = world.residents[world.subjects[0]]
    await conn.execute(_INSERT, world.scenario_id, ref, pid, at, (at + timedelta(hours=8)).date())


async def _until_waiting(conn: asyncpg.Connection) -> None:
    """Until a backend other than `conn`'s waits on a lock (the batch, on a held ref)."""
    for _ in range(200):
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND pid <> pg_backend_pid() AND datname = current_database()"
        )
        if waiting:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the batch never waited on the held ref")


async def _world(client) -> World:
    if dialect() != "postgres":
        pytest.skip("SQLite runs one transaction at a time")
    return await make_world(residents=1, cap=None)


async def _send_while_holding(client, world: World, batch: list[dict], held: str,
                              then_store: str | None = None) -> dict:
    """Send `batch` while another connection holds ref `held` (stored, not committed): once the
    batch waits on it, optionally store `then_store` too (waiting on the batch in turn), then
    commit. The batch's answer."""
    noon = shanghai_noon(2)
    other = await _other()
    try:
        transaction = other.transaction()
        await transaction.start()
        await _store(other, world, held, noon + timedelta(minutes=5))
        sent = asyncio.create_task(gql(client, _SUBMIT, {"input": {"scenarioCode": world.code,
                                                                   "records": batch}}, world.operator))
        await _until_waiting(other)
        if then_store is not None:
            await _store(other, world, then_store, noon + timedelta(minutes=6))
        await transaction.commit()
        body = await sent
    finally:
        await other.close()
    assert body.get("errors") is None, body["errors"]
    return body["data"]["submitScenarioRecords"]


async def test_a_refused_item_whose_ref_a_batch_beside_stores_during_the_retry_is_a_duplicate(client):
    """[stored ref, refused item with ref r, valid item with ref r]: the first write meets the
    stored ref; while the batch is applied again another connection stores r. The valid item
    then answers DUPLICATE, so must the refused one (a fresh application answers (0, 3, []))."""
    world = await _world(client)
    who = world.subjects[0]
    stranger = await add_resident(world, since=None)  # no authorization: NOT_AUTHORIZED
    noon = shanghai_noon(2)
    assert answers(await submit(client, world, [record(who, 1, noon, "kept")])) == (1, 0, [])
    batch = [record(who, 1, noon, "kept"),
             record(stranger, 1, noon + timedelta(minutes=1), "shared"),
             record(who, 1, noon + timedelta(minutes=2), "shared")]
    assert answers(await _send_while_holding(client, world, batch, "shared")) == (0, 3, [])


async def test_a_retried_batch_deadlocking_with_a_batch_beside_it_is_applied_again(client):
    """The retried write holds ref a and waits on ref b, held by another connection that then
    writes ref a: the deadlock must send the batch round again, not fail the request."""
    world = await _world(client)
    who = world.subjects[0]
    noon = shanghai_noon(2)
    assert answers(await submit(client, world, [record(who, 1, noon, "kept")])) == (1, 0, [])
    batch = [record(who, 1, noon, "kept"),
             record(who, 1, noon + timedelta(minutes=1), "a"),
             record(who, 1, noon + timedelta(minutes=2), "b")]
    assert answers(await _send_while_holding(client, world, batch, "b", then_store="a")) == (0, 3, [])
