"""Issuing a scenario's accepted records as one lot credited to each resident.

Which records an issuance took is fixed by periods, not by a per-record mark: an issuance takes
every record that occurred after the scenario's `issued_through` and up to its `periodEnd`,
settles what each earns under the daily cap (`registry.settlement`), credits those with grams,
then moves `issued_through` to `periodEnd`; since records at or before `issued_through` are
refused (OUT_OF_PERIOD), the records of an issuance are exactly those of its scenario in
(previous periodEnd, periodEnd]. Marking a million records one by one would rewrite a million
rows and all their index entries; moving the watermark is one row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from app.auth import Principal
from app.db import dialect
from app.errors import InvalidInput, InvalidState, NotFound
from app.events import account_changed
from app.idempotency import claim
from app.instants import representable, too_far
from app.ledger.bulk import holder_accounts, issue_lot
from app.ledger.models import Asset, Lot
from app.units import BIGINT_MAX
from registry import rules
from registry.models import Issuance, Methodology, Scenario, ScenarioStatus
from registry.records import hold_scenario
from registry.settlement import Total, settle_period

log = logging.getLogger(__name__)

SCOPE = "registry:issue-scenario-reductions"


@dataclass(frozen=True)
class Issued:
    """An issuance and the code of its scenario."""

    issuance: Issuance
    scenario_code: str


def _check_period_end(period_end: datetime, now: datetime) -> datetime:
    if period_end.utcoffset() is None:
        raise InvalidInput("periodEnd must carry an offset.", "periodEnd")
    if period_end > now:
        raise InvalidInput("periodEnd may not be in the future.", "periodEnd")
    if not representable(period_end):
        raise InvalidInput(too_far("periodEnd"), "periodEnd")
    return period_end.astimezone(UTC)


def _vintage(settled: list[Total]) -> int:
    """The one Shanghai year the period's earning records occurred in (a lot has one vintage);
    INVALID_STATE when they span two, naming the end of the earlier year as periodEnd."""
    first = min(t.first_day for t in settled).year
    last = max(t.last_day for t in settled).year
    if first != last:
        raise InvalidState(
            f"The period holds reductions of {first} and of {last}, and a lot has one vintage:"
            f" issue up to the end of {first} first (periodEnd {first}-12-31T23:59:59.999999+08:00).",
            "periodEnd")
    return first


_SERIAL_LOCK = "SELECT pg_advisory_xact_lock(hashtext('serial'), hashtext($1))"


async def _next_serial(conn: BaseDBAsyncClient, base: str) -> str:
    """The serial prefix after the highest of `base` (lots numbered by any release, whatever
    scenario shares the base), held until commit against an issuance of another scenario
    sharing it (PostgreSQL; SQLite runs one transaction at a time)."""
    if dialect() == "postgres":
        await conn.execute_query(_SERIAL_LOCK, [base])
    taken = await Lot.filter(serial_prefix__startswith=base).using_db(conn).values_list(
        "serial_prefix", flat=True)
    numbers = [int(tail) for tail in (s[len(base):] for s in taken) if tail.isdigit()]
    return rules.serial_prefix(base, max(numbers, default=0) + 1)


async def issue_scenario_reductions(
    principal: Principal, scenario_code: str, period_end: datetime, idempotency_key: str
) -> Issued:
    """Issue every accepted, unissued record up to periodEnd as one lot, in one transaction."""
    principal.require("center")
    now = datetime.now(UTC)
    period_end = _check_period_end(period_end, now)
    payload = {"scenarioCode": scenario_code, "periodEnd": period_end.isoformat()}
    async with in_transaction() as conn:
        if dialect() == "postgres":
            # Its few big statements would spend longer being compiled (JIT) than running.
            await conn.execute_script("SET LOCAL jit = off")
        claimed = await claim(SCOPE, idempotency_key, payload, conn)
        if claimed.replay:
            issuance = await Issuance.get(id=claimed.result["issuance_id"]).using_db(conn)
            return Issued(issuance, scenario_code)
        await hold_scenario(conn, scenario_code, exclusive=True)  # batches under way finish first
        scenario = await Scenario.filter(code=scenario_code).select_for_update().using_db(conn).first()
        if scenario is None:
            raise NotFound("No such scenario.", "scenarioCode")
        if scenario.status != ScenarioStatus.PUBLISHED:
            raise InvalidState("Only a published scenario's records are issued.", "scenarioCode")
        methodology = await Methodology.get(id=scenario.methodology_id).using_db(conn)
        settled = await settle_period(conn, scenario, period_end, methodology.daily_cap_grams)
        totals = [(t.participant_id, t.grams, t.records) for t in settled]
        if any(grams > BIGINT_MAX for _, grams, _ in totals):
            raise InvalidState(
                "A resident would receive more grams than an account can hold; issue a shorter"
                " period.", "periodEnd")
        if not totals:
            raise InvalidState("There are no accepted, unissued records up to periodEnd.", "periodEnd")
        total_grams = sum(g for _, g, _ in totals)
        if total_grams > BIGINT_MAX:
            raise InvalidState(
                "The period's grams are more than one issuance can hold; issue a shorter period.",
                "periodEnd")
        vintage = _vintage(settled)
        serial = await _next_serial(conn, rules.serial_base(scenario.code, scenario.id, vintage))
        lot = await Lot.create(
            serial_prefix=serial,
            source_type="scenario",
            source_code=scenario.code,
            methodology_code=methodology.code,
            methodology_version=methodology.version,
            methodology_class=methodology.methodology_class,
            vintage=vintage,
            issued_grams=total_grams,
            using_db=conn,
        )
        issuance = await Issuance.create(
            scenario_id=scenario.id,
            lot_id=lot.id,
            serial_prefix=serial,
            period_end=period_end,
            total_grams=total_grams,
            recipients=len(totals),
            records=sum(n for _, _, n in totals),
            methodology_code=methodology.code,
            methodology_version=methodology.version,
            methodology_class=methodology.methodology_class,
            grams_per_unit=methodology.grams_per_unit,
            issued_by=principal.subject,
            using_db=conn,
        )
        accounts = await holder_accounts(conn, (pid for pid, _, _ in totals), Asset.REDUCTION_GRAMS)
        credits = [(accounts[pid], grams) for pid, grams, _ in totals]
        await issue_lot(conn, lot.id, credits, f"issuance:{issuance.id}", serial, now)
        await Scenario.filter(id=scenario.id).using_db(conn).update(issued_through=period_end)
        await claimed.complete({"issuance_id": issuance.id}, conn)
    log.info("issued %s: %d g to %d residents", serial, total_grams, len(totals))
    await account_changed([pid for pid, _, _ in totals])
    return Issued(issuance, scenario.code)
