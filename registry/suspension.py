"""Suspension and reinstatement of published scenarios and methodologies (Art. 8, the
regulator's dynamic evaluation): PUBLISHED <-> SUSPENDED, with the reason in the audit trail.

A suspended scenario takes no records, issues nothing and takes no new authorizations until it
is reinstated; batches under way when it is suspended finish first (they hold its row shared).
Each suspension is kept with its times (`ScenarioSuspension`): records that occurred while the
scenario was suspended are refused after it is reinstated too, as OUT_OF_PERIOD.
No scenario is submitted, approved or published on a suspended methodology; scenarios already
published on it go on unless suspended too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TypeVar

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from app import audit
from app.auth import Principal
from app.errors import NotFound
from registry.approval_rules import check_reason, status_change
from registry.models import Methodology, Scenario, ScenarioStatus, ScenarioSuspension
from registry.rules import Interval

Row = TypeVar("Row", Scenario, Methodology)
# The same values in MethodologyStatus.
PUBLISHED, SUSPENDED = ScenarioStatus.PUBLISHED.value, ScenarioStatus.SUSPENDED.value


async def suspend_scenario(principal: Principal, scenario_id: int, reason: str | None) -> Scenario:
    """Regulator: a published scenario stops taking records, issuing and consents."""
    return await _change(principal, Scenario, scenario_id, reason, PUBLISHED, SUSPENDED, "suspend")


async def reinstate_scenario(principal: Principal, scenario_id: int, reason: str | None) -> Scenario:
    """Regulator: SUSPENDED -> PUBLISHED."""
    return await _change(principal, Scenario, scenario_id, reason, SUSPENDED, PUBLISHED, "reinstate")


async def suspend_methodology(principal: Principal, methodology_id: int, reason: str | None) -> Methodology:
    """Regulator: no scenario is submitted, approved or published on the methodology."""
    return await _change(principal, Methodology, methodology_id, reason, PUBLISHED, SUSPENDED, "suspend")


async def reinstate_methodology(
    principal: Principal, methodology_id: int, reason: str | None
) -> Methodology:
    """Regulator: SUSPENDED -> PUBLISHED."""
    return await _change(principal, Methodology, methodology_id, reason, SUSPENDED, PUBLISHED,
                         "reinstate")


async def _change(
    principal: Principal, model: type[Row], row_id: int, reason: str | None, allowed_from: str,
    to: str, verb: str,
) -> Row:
    principal.require("regulator")
    why = check_reason(reason)
    what = model.__name__.lower()
    async with in_transaction() as conn:
        row = await model.filter(id=row_id).select_for_update().using_db(conn).first()
        if row is None:
            raise NotFound(f"No such {what}.", "id")
        row.status = status_change(row.status, allowed_from, to, what)
        await row.save(using_db=conn, update_fields=["status"])
        if isinstance(row, Scenario):
            await _keep_time(conn, row, to)
        await audit.record(principal, f"{what}.{verb}", model.__name__, row.id, why)
    return row


async def suspended_times(conn: BaseDBAsyncClient, scenario_id: int) -> tuple[Interval, ...]:
    """The (suspended_at, reinstated_at) times of a scenario's suspensions, in order, as `conn`
    reads them now."""
    return tuple(
        await ScenarioSuspension.filter(scenario_id=scenario_id).using_db(conn)
        .order_by("id").values_list("suspended_at", "reinstated_at"))


async def _keep_time(conn: BaseDBAsyncClient, scenario: Scenario, to: str) -> None:
    """Open the scenario's suspension, or close the one open (in `conn`'s transaction, which
    holds the scenario's row)."""
    now = datetime.now(UTC)
    if to == SUSPENDED:
        await ScenarioSuspension.create(scenario_id=scenario.id, suspended_at=now, using_db=conn)
    else:
        await ScenarioSuspension.filter(scenario_id=scenario.id, reinstated_at=None).using_db(conn).update(
            reinstated_at=now)
