"""Reading issuances back: a scenario's issuances, and where the grams of one lot are now."""

from __future__ import annotations

from dataclasses import dataclass

from tortoise import connections

from app.auth import Principal
from app.db import dialect
from app.errors import NotFound
from app.ledger.models import Lot
from registry.models import Issuance, Scenario

STAFF = ("center", "exchange", "regulator")

_HOLDINGS = """
SELECT CASE WHEN a.kind = 'holder' THEN COALESCE(p.kind, 'holder') ELSE a.kind END AS holder,
       SUM(h.balance) AS grams, COUNT(*) AS accounts
FROM ledger_lot_holding h
JOIN ledger_account a ON a.id = h.account_id
LEFT JOIN participant p ON p.id = a.participant_id
WHERE h.lot_id = {p} AND h.balance > 0
GROUP BY 1 ORDER BY 1
"""


@dataclass(frozen=True)
class Holding:
    """Grams of a lot held by one kind of holder (individual, organisation, reserve, retired)."""

    holder_kind: str
    grams: int
    accounts: int


@dataclass(frozen=True)
class LotTrace:
    """A lot and where its grams are now; the holdings add up to the issued grams."""

    lot: Lot
    holdings: list[Holding]


async def _visible_scenario(principal: Principal, scenario_code: str) -> Scenario:
    scenario = await Scenario.filter(code=scenario_code).first()
    if scenario is None:
        raise NotFound("No such scenario.", "scenarioCode")
    if principal.has(*STAFF):
        return scenario
    if principal.has("scenario_operator") and principal.org == scenario.operator_org:
        return scenario
    raise NotFound("No such scenario.", "scenarioCode")


async def scenario_issuances(
    principal: Principal, scenario_code: str, first: int, before_id: int | None
) -> list[Issuance]:
    """Up to `first + 1` issuances of a scenario, newest first (staff or its operator)."""
    scenario = await _visible_scenario(principal, scenario_code)
    query = Issuance.filter(scenario_id=scenario.id)
    if before_id is not None:
        query = query.filter(id__lt=before_id)
    return await query.order_by("-id").limit(first + 1)


async def trace_lot(principal: Principal, serial_prefix: str) -> LotTrace:
    """A lot by its serial prefix and its current holdings by kind of holder (staff only)."""
    principal.require(*STAFF)
    lot = await Lot.filter(serial_prefix=serial_prefix).first()
    if lot is None:
        raise NotFound("No such lot.", "serialPrefix")
    sql = _HOLDINGS.format(p="$1" if dialect() == "postgres" else "?")
    rows = await connections.get("default").execute_query_dict(sql, [lot.id])
    holdings = [Holding(r["holder"], int(r["grams"]), int(r["accounts"])) for r in rows]
    return LotTrace(lot, holdings)
