"""Migration registry/0006 reads the suspensions made before it back from the audit trail: each
suspension is closed by the scenario's next reinstatement in the order they were written,
whatever the clocks that stamped them said."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from app.audit import AuditEvent
from registry.models import ScenarioSuspension

pytestmark = pytest.mark.usefixtures("database")
backfill = importlib.import_module("migrations.registry.0006_scenario_suspensions")


@dataclass
class _Editor:
    """What the migration's step reads of tortoise's schema editor."""

    client: BaseDBAsyncClient


class _RolledBack(Exception):
    """Raised to roll back the test's rows (the backfill reads the whole audit trail)."""


def _at(day: int, hour: int = 0) -> datetime:
    return datetime(2026, 1, day, hour, tzinfo=UTC)


async def test_suspensions_are_read_back_from_the_audit_trail_in_the_order_written():
    events = [  # (action, scenario, stamped at), in the order written
        ("scenario.suspend", "-7", _at(1)),
        ("scenario.reinstate", "-70", _at(2)),    # another scenario's
        ("scenario.reinstate", "-7", _at(5)),
        ("scenario.suspend", "-7", _at(9)),       # still suspended
        ("scenario.suspend", "-8", _at(3, 12)),
        ("scenario.reinstate", "-8", _at(3, 11)),  # stamped by a clock an hour behind
        ("methodology.suspend", "-7", _at(4)),
    ]
    found = []
    with pytest.raises(_RolledBack):
        async with in_transaction() as conn:
            for action, target, at in events:
                await AuditEvent.create(actor_subject="regulator", actor_roles="regulator",
                                        action=action, target_type="Scenario", target_id=target,
                                        created_at=at, using_db=conn)
            await backfill.from_audit(None, _Editor(conn))
            found = await ScenarioSuspension.filter(scenario_id__lt=0).using_db(conn).order_by(
                "id").values_list("scenario_id", "suspended_at", "reinstated_at")
            raise _RolledBack()
    assert found == [(-7, _at(1), _at(5)), (-7, _at(9), None), (-8, _at(3, 12), _at(3, 11))]
