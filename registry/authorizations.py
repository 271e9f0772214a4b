"""Resident consent to scenarios: authorize, revoke, and when each grant was active.

Ingestion reads `active_authorizations` (through `registry.consent`'s memory) and tests each
record with `authorized_at`, so a record counts only if consent was active at `occurredAt`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tortoise.transactions import in_transaction

from app.auth import Principal
from app.errors import InvalidState, NotFound
from app.participants import Participant, resident_id
from points.models import BehaviorScenario
from registry.models import Scenario, ScenarioAuthorization, ScenarioStatus
from registry.rules import Interval
from registry.rules import authorized_at as authorized_at  # the one interval test, shared

# Stay well under SQLite's bound-parameter limit and keep PostgreSQL statements small.
_CHUNK = 900


async def active_authorizations(
    scenario_code: str, participant_ids: Sequence[int] | Iterable[int]
) -> dict[int, list[Interval]]:
    """Grant intervals (granted_at, revoked_at or None) per participant for one scenario.

    Every participant asked for appears in the answer, with an empty list when they never
    authorized the scenario. Intervals are ordered by granted_at.
    """
    wanted = sorted(set(participant_ids))
    found: dict[int, list[Interval]] = defaultdict(list)
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        rows = (
            await ScenarioAuthorization.filter(scenario_code=scenario_code, participant_id__in=chunk)
            .order_by("participant_id", "granted_at", "id")
            .values_list("participant_id", "granted_at", "revoked_at")
        )
        for participant_id, granted_at, revoked_at in rows:
            found[participant_id].append((granted_at, revoked_at))
    return {pid: found.get(pid, []) for pid in wanted}


@dataclass(frozen=True)
class ScenarioRef:
    """The scenario an authorization is about: a reduction or a behavior scenario."""

    code: str
    name: str
    kind: str  # REDUCTION | BEHAVIOR


async def scenario_refs(codes: Iterable[str]) -> dict[str, ScenarioRef]:
    """Names of reduction and behavior scenarios by code (two queries at most)."""
    wanted = set(codes)
    refs = {
        code: ScenarioRef(code, name, "REDUCTION")
        for code, name in await Scenario.filter(code__in=wanted).values_list("code", "name")
    }
    rest = wanted - refs.keys()
    if rest:
        for code, name in await BehaviorScenario.filter(code__in=rest).values_list("code", "name"):
            refs[code] = ScenarioRef(code, name, "BEHAVIOR")
    return refs


async def _consentable(code: str) -> ScenarioRef:
    """A scenario a resident may authorize: a PUBLISHED reduction scenario or a behavior one."""
    scenario = await Scenario.filter(code=code).only("code", "name", "status").first()
    if scenario is not None:
        if scenario.status != ScenarioStatus.PUBLISHED:
            # Residents are shown published scenarios only: any other is as unknown as no scenario.
            raise NotFound(f"No scenario {code}.", "scenarioCode")
        return ScenarioRef(scenario.code, scenario.name, "REDUCTION")
    refs = await scenario_refs([code])
    if code not in refs:
        raise NotFound(f"No scenario {code}.", "scenarioCode")
    return refs[code]


async def _lock_participant(conn: Any, participant_id: int) -> None:
    # One consent change per resident at a time (PostgreSQL), so two concurrent
    # authorizations cannot both open an active grant. SQLite transactions are serial.
    await Participant.filter(id=participant_id).select_for_update().using_db(conn).only("id").first()


async def authorize_scenario(
    principal: Principal, scenario_code: str
) -> tuple[ScenarioAuthorization, ScenarioRef]:
    """The resident opts in; authorizing again while active answers the active grant (also
    while the scenario is suspended: the resident's own grant reveals nothing)."""
    participant_id = await resident_id(principal)
    code = scenario_code.strip()
    async with in_transaction() as conn:
        await _lock_participant(conn, participant_id)
        active = await _active(conn, participant_id, code)
        if active is not None:
            refs = await scenario_refs([code])
            return active, refs.get(code, ScenarioRef(code, code, "REDUCTION"))
        ref = await _consentable(code)
        row = await ScenarioAuthorization.create(
            participant_id=participant_id,
            scenario_code=ref.code,
            granted_at=datetime.now(UTC),
            using_db=conn,
        )
    return row, ref


async def revoke_scenario_authorization(
    principal: Principal, scenario_code: str
) -> tuple[ScenarioAuthorization, ScenarioRef]:
    """The resident opts out; records after this moment no longer count."""
    participant_id = await resident_id(principal)
    code = scenario_code.strip()
    async with in_transaction() as conn:
        await _lock_participant(conn, participant_id)
        active = await _active(conn, participant_id, code)
        if active is None:
            refs = await scenario_refs([code])
            if code not in refs:
                raise NotFound(f"No scenario {code}.", "scenarioCode")
            raise InvalidState(
                f"There is no active authorization for {code} to revoke.", "scenarioCode"
            )
        active.revoked_at = datetime.now(UTC)
        await active.save(using_db=conn, update_fields=["revoked_at"])
    refs = await scenario_refs([code])
    return active, refs.get(code, ScenarioRef(code, code, "REDUCTION"))


async def _active(conn: Any, participant_id: int, code: str) -> ScenarioAuthorization | None:
    return (
        await ScenarioAuthorization.filter(
            participant_id=participant_id, scenario_code=code, revoked_at__isnull=True
        )
        .using_db(conn)
        .order_by("-granted_at")
        .first()
    )


async def authorization_history(
    participant_id: int,
) -> list[tuple[ScenarioAuthorization, ScenarioRef]]:
    """Every grant of one resident, newest first, with its scenario."""
    rows = await ScenarioAuthorization.filter(participant_id=participant_id).order_by(
        "-granted_at", "-id"
    )
    refs = await scenario_refs({r.scenario_code for r in rows})
    return [
        (r, refs.get(r.scenario_code, ScenarioRef(r.scenario_code, r.scenario_code, "REDUCTION")))
        for r in rows
    ]
