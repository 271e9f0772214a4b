"""On PostgreSQL a batch looks up its stored refs by one index probe per ref, whatever the
planner's statistics say: a scenario whose records grew since the table was last analyzed looks
empty to the planner, and a plan scanning that scenario's records once per ref would hold the
scenario's lock for minutes on a resend after an issuance."""

from __future__ import annotations

import pytest
from tortoise.transactions import in_transaction

from app.db import dialect
from registry import records_sql
from tests.records_support import make_world

pytestmark = pytest.mark.usefixtures("database")

_GROW = """
INSERT INTO registry_scenario_record (scenario_id, external_ref, participant_id, quantity,
    computed_grams, earned_grams, occurred_at, day, created_at)
SELECT $1, 'grown-' || n, $2, 1, 100, 100, now() - interval '1 hour', current_date, now()
FROM generate_series(1, 20000) AS n
"""


async def test_stored_refs_are_probed_per_ref_in_a_scenario_grown_since_it_was_analyzed():
    if dialect() != "postgres":
        pytest.skip("the plan is PostgreSQL's")
    other, world = await make_world(residents=1, cap=None), await make_world(residents=1, cap=None)
    async with in_transaction() as conn, conn.acquire_connection() as raw:
        await raw.execute(_GROW, other.scenario_id, other.residents[other.subjects[0]])
        await raw.execute("ANALYZE registry_scenario_record")  # records, none of this scenario
        await raw.execute(_GROW, world.scenario_id, world.residents[world.subjects[0]])
        await raw.execute(records_sql._INDEX_PROBES)
        refs = [f"grown-{n}" for n in range(1, 20001, 2)] + [f"new-{n}" for n in range(1000)]
        plan = "\n".join(r[0] for r in await raw.fetch("EXPLAIN " + records_sql._STORED,
                                                       world.scenario_id, refs))
        assert "Join Filter" not in plan, plan
        assert any("Index Cond" in line and "external_ref" in line for line in plan.splitlines()), plan
        found = await records_sql._stored(raw, world.scenario_id, refs)
    assert found == {f"grown-{n}" for n in range(1, 20001, 2)}
