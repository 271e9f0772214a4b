"""Resident consent to scenarios: when each person's authorization was active (read side).

The records engineer's ingestion calls `active_authorizations` once per batch and then
`authorized_at` per record, so a record counts only if consent was active at `occurredAt`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime

from registry.models import ScenarioAuthorization

Interval = tuple[datetime, datetime | None]

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


def authorized_at(intervals: Sequence[Interval], when: datetime) -> bool:
    """True when `when` falls in one of the intervals: granted_at <= when < revoked_at."""
    return any(
        granted <= when and (revoked is None or when < revoked) for granted, revoked in intervals
    )
