"""Operations record and lift misconduct flags; staff read another participant's standing.

Every staff action here is audited: flags with their reasons, and each read of a standing.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from tortoise.transactions import in_transaction

from app import audit
from app.auth import Principal
from app.errors import InvalidInput, InvalidState, NotFound
from app.participants import Participant
from points.credit import Standing, current_standing, recompute_credit, refresh_credit
from points.models import MisconductFlag, MisconductKind

log = logging.getLogger(__name__)


def _reason(value: str, field: str) -> str:
    value = value.strip()
    if not 0 < len(value) <= 500:
        raise InvalidInput(f"{field} must be 1 to 500 characters.", field)
    return value


async def find_participant(subject: str | None, org_code: str | None) -> int:
    """A participant named by exactly one of a resident subject or an organisation code."""
    if (subject is None) == (org_code is None):
        raise InvalidInput("Name the participant by subject or by orgCode, not both.", "subject")
    query = (
        Participant.filter(subject=subject.strip())
        if subject is not None
        else Participant.filter(org_code=(org_code or "").strip().upper())
    )
    row = await query.only("id").first()
    if row is None:
        raise NotFound("No such participant.", "subject" if subject is not None else "orgCode")
    return row.id


async def record_flag(
    principal: Principal, subject: str | None, org_code: str | None, kind: str, reason: str
) -> MisconductFlag:
    """Center: record a misconduct finding against a participant, with its reason."""
    principal.require("center")
    if kind not in MisconductKind.__members__:
        raise InvalidInput("Unknown misconduct kind.", "kind")
    reason = _reason(reason, "reason")
    participant_id = await find_participant(subject, org_code)
    flag = await MisconductFlag.create(
        participant_id=participant_id, kind=kind, reason=reason,
        recorded_by=principal.subject, recorded_at=datetime.now(UTC),
    )
    await audit.record(principal, "record_misconduct", "participant", participant_id,
                       f"flag {flag.id} {kind}: {reason}")
    await _restate(participant_id)
    return flag


async def _restate(participant_id: int) -> None:
    """Recompute the standing now (no balance changed, so a stored one would look current);
    on failure the flag stands and the refresh is queued instead of failing the call."""
    try:
        await recompute_credit(participant_id)
    except Exception:
        log.warning("could not recompute the standing after a misconduct change", exc_info=True)
        await refresh_credit(participant_id)


async def lift_flag(principal: Principal, flag_id: int, reason: str) -> MisconductFlag:
    """Center: lift an active misconduct flag, with the reason for lifting it."""
    principal.require("center")
    reason = _reason(reason, "reason")
    async with in_transaction() as conn:
        flag = await MisconductFlag.filter(id=flag_id).select_for_update().using_db(conn).first()
        if flag is None:
            raise NotFound("No such misconduct flag.", "flagId")
        if flag.lifted_at is not None:
            raise InvalidState("This flag was already lifted.", "flagId")
        flag.lifted_by = principal.subject
        flag.lift_reason = reason
        flag.lifted_at = datetime.now(UTC)
        await flag.save(using_db=conn, update_fields=["lifted_by", "lift_reason", "lifted_at"])
    await audit.record(principal, "lift_misconduct", "participant", flag.participant_id,
                       f"flag {flag.id}: {reason}")
    await _restate(flag.participant_id)
    return flag


async def flags_of(participant_id: int) -> list[MisconductFlag]:
    """Every flag of a participant, newest first, lifted ones included."""
    return await MisconductFlag.filter(participant_id=participant_id).order_by("-id")


async def staff_standing(
    principal: Principal, subject: str | None, org_code: str | None
) -> tuple[int, Standing]:
    """Center or regulator: another participant's standing; every read is audited."""
    principal.require("center", "regulator")
    participant_id = await find_participant(subject, org_code)
    await audit.record(principal, "read_credit_standing", "participant", participant_id)
    return participant_id, await current_standing(participant_id)
