"""Scenario use cases: submit (operator), assess (center and exchange), publish (regulator), list."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from app import audit
from app.auth import STAFF_ROLES, Principal
from app.calendar import shanghai_today, working_days
from app.db import dialect
from app.errors import Duplicate, InvalidInput, InvalidState, NotFound
from app.participants import organisation_id
from points.models import BehaviorScenario
from registry.approval_rules import (
    assessing_body,
    check_code,
    check_comment,
    check_name,
    check_publicity_start,
    publicity_window,
    scenario_assessment_outcome,
    scenario_publication,
)
from registry.methodologies import visible_to
from registry.models import (
    Methodology,
    MethodologyKind,
    MethodologyStatus,
    Scenario,
    ScenarioAssessment,
    ScenarioStatus,
)

_CODE_LOCK = "SELECT pg_advisory_xact_lock(hashtext('scenario_code'), hashtext($1))"


async def claim_code(conn: Any, code: str) -> None:
    """Inside `conn`'s transaction: hold `code` until commit against a scenario of either kind
    created with it at the same moment (the two kinds live in two tables, so neither table's
    unique index sees the other; SQLite runs one transaction at a time), then refuse it as
    DUPLICATE when a reduction or behavior scenario already uses it, in any letter case (codes
    that differ only in case would be told apart by residents and operators by mistake)."""
    if dialect() == "postgres":
        await conn.execute_query(_CODE_LOCK, [code.upper()])
    if (await Scenario.filter(code__iexact=code).using_db(conn).exists()
            or await BehaviorScenario.filter(code__iexact=code).using_db(conn).exists()):
        raise _duplicate_code(code)


_IN_FORCE = "SELECT status FROM registry_methodology WHERE id = $1 FOR SHARE"


async def _methodology_in_force(conn: Any, methodology_id: int, field: str = "methodologyId") -> None:
    """Inside `conn`'s transaction: INVALID_STATE unless the methodology is PUBLISHED, holding
    its row shared until commit (PostgreSQL), so a suspension committing meanwhile waits and a
    scenario never goes on, or is published, on a suspended methodology."""
    if dialect() == "postgres":
        rows = await conn.execute_query_dict(_IN_FORCE, [methodology_id])
    else:
        rows = await Methodology.filter(id=methodology_id).using_db(conn).values("status")
    status = rows[0]["status"] if rows else None
    if status != MethodologyStatus.PUBLISHED:
        raise InvalidState(f"The scenario's methodology is {status}, not PUBLISHED.", field)


def _duplicate_code(code: str) -> Duplicate:
    return Duplicate(f"Scenario code {code} is already in use.", "code")


async def submit_scenario(
    principal: Principal,
    *,
    methodology_id: int,
    code: str,
    name: str,
    no_double_counting_commitment: bool,
) -> Scenario:
    """A scenario operator submits a scenario on a published scenario methodology (Art. 13-14)."""
    org = principal.require_org("scenario_operator")
    if no_double_counting_commitment is not True:
        raise InvalidInput(
            "The operator must commit that these reductions are not claimed elsewhere (CCER, "
            "green power, green certificates) (Art. 14).",
            "noDoubleCountingCommitment",
        )
    code = check_code(code)
    name = check_name(name)
    methodology = await Methodology.filter(id=methodology_id).first()
    if methodology is None or not visible_to(principal, methodology):
        # Another organisation's unpublished methodology is as unknown here as in the listing.
        raise NotFound("No such methodology.", "methodologyId")
    if methodology.kind != MethodologyKind.SCENARIO:
        raise InvalidInput("A scenario needs a SCENARIO methodology.", "methodologyId")
    if methodology.status != MethodologyStatus.PUBLISHED:
        raise InvalidState(
            f"Methodology {methodology.code} {methodology.version} is {methodology.status}, "
            "not PUBLISHED.",
            "methodologyId",
        )
    operator_id = await organisation_id(org)
    try:
        async with in_transaction() as conn:
            await claim_code(conn, code)
            await _methodology_in_force(conn, methodology.id)
            return await Scenario.create(
                code=code,
                name=name,
                methodology_id=methodology.id,
                operator_participant_id=operator_id,
                operator_org=org,
                no_double_counting_commitment=True,
                using_db=conn,
            )
    except IntegrityError:
        raise _duplicate_code(code) from None


async def _locked(conn: Any, scenario_id: int) -> Scenario:
    row = await Scenario.filter(id=scenario_id).select_for_update().using_db(conn).first()
    if row is None:
        raise NotFound("No such scenario.", "id")
    return row


async def assess_scenario(
    principal: Principal,
    scenario_id: int,
    approve: bool,
    comment: str | None = None,
    publicity_starts_on: date | None = None,
) -> Scenario:
    """Center and exchange each assess once; the second approval opens the publicity period."""
    principal.require("center", "exchange")
    body = assessing_body(principal.roles)
    comment = check_comment(comment)
    today = shanghai_today()
    if publicity_starts_on is not None:
        if not approve:
            raise InvalidInput("publicityStartsOn goes with an approval.", "publicityStartsOn")
        check_publicity_start(publicity_starts_on, today)
    calendar = await working_days()
    async with in_transaction() as conn:
        scenario = await _locked(conn, scenario_id)
        if scenario.status != ScenarioStatus.SUBMITTED:
            raise InvalidState(
                f"Only a SUBMITTED scenario can be assessed; this one is {scenario.status}."
            )
        if approve:
            await _methodology_in_force(conn, scenario.methodology_id, "id")
        earlier = await ScenarioAssessment.filter(scenario_id=scenario.id).using_db(conn)
        if any(a.body == body for a in earlier):
            raise InvalidState(f"The {body} has already assessed this scenario.")
        if any(a.assessed_by == principal.subject for a in earlier):
            raise InvalidState("The center and the exchange must be assessed by different people.")
        decisions = {a.body: a.approve for a in earlier} | {body: approve}
        outcome = scenario_assessment_outcome(decisions)
        changed = ["status"]
        if publicity_starts_on is not None:
            scenario.publicity_starts_on = publicity_starts_on
            scenario.publicity_set_by = principal.subject
            changed += ["publicity_starts_on", "publicity_set_by"]
        if outcome is ScenarioStatus.PUBLICITY:
            given = scenario.publicity_starts_on
            if given is not None:
                check_publicity_start(given, today)
            start, end = publicity_window(today, given, calendar)
            scenario.publicity_starts_on, scenario.publicity_ends_on = start, end
            changed += ["publicity_starts_on", "publicity_ends_on"]
        elif outcome is ScenarioStatus.REJECTED:
            # No publicity period opens: a start the first approver gave goes (the audit keeps it).
            scenario.publicity_starts_on = scenario.publicity_set_by = None
            changed += ["publicity_starts_on", "publicity_set_by"]
        scenario.status = outcome.value
        await ScenarioAssessment.create(
            scenario_id=scenario.id,
            body=body,
            approve=approve,
            comment=comment,
            assessed_by=principal.subject,
            using_db=conn,
        )
        await scenario.save(using_db=conn, update_fields=sorted(set(changed)))
        detail = f"{body} {'approve' if approve else 'reject'} -> {outcome.value}"
        if publicity_starts_on is not None:
            detail += f", publicity starts {publicity_starts_on.isoformat()}"
        await audit.record(principal, "scenario.assess", "Scenario", scenario.id, detail)
    return scenario


async def publish_scenario(principal: Principal, scenario_id: int) -> Scenario:
    """Regulator publication, only after the publicity period has ended."""
    principal.require("regulator")
    today = shanghai_today()
    async with in_transaction() as conn:
        scenario = await _locked(conn, scenario_id)
        await _methodology_in_force(conn, scenario.methodology_id, "id")
        scenario.status = scenario_publication(
            scenario.status, scenario.publicity_ends_on, today
        ).value
        scenario.published_by = principal.subject
        scenario.published_at = datetime.now(UTC)
        await scenario.save(using_db=conn, update_fields=["status", "published_by", "published_at"])
        await audit.record(principal, "scenario.publish", "Scenario", scenario.id)
    return scenario


@dataclass(frozen=True)
class ScenarioView:
    """A scenario with its methodology, fetched together."""

    scenario: Scenario
    methodology: Methodology


async def with_methodologies(rows: list[Scenario]) -> list[ScenarioView]:
    """Attach each scenario's methodology with one query."""
    ids = {r.methodology_id for r in rows}
    methodologies = {m.id: m for m in await Methodology.filter(id__in=ids)} if ids else {}
    return [ScenarioView(r, methodologies[r.methodology_id]) for r in rows]


async def list_scenarios(principal: Principal, status: str | None = None) -> list[ScenarioView]:
    """Published scenarios to anyone signed in; staff see all; an operator also sees its own."""
    query = Scenario.all()
    if status is not None:
        query = query.filter(status=ScenarioStatus(status).value)
    if not principal.has(*STAFF_ROLES):
        visible = Q(status=ScenarioStatus.PUBLISHED.value)
        if principal.org and principal.has("scenario_operator"):
            visible |= Q(operator_org=principal.org)
        query = query.filter(visible)
    return await with_methodologies(await query.order_by("code"))


async def scenario_view(scenario: Scenario) -> ScenarioView:
    """One scenario with its methodology."""
    [view] = await with_methodologies([scenario])
    return view
