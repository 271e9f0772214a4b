"""Operator records of a scenario: who may send them, and applying a batch under the rules.

A batch is applied in one transaction holding the scenario row lock (FOR UPDATE on PostgreSQL),
so concurrent batches of one scenario never both spend the same daily cap nor count one
externalRef twice, and an issuance never runs between reading `issued_through` and writing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import F
from tortoise.transactions import in_transaction

from app.auth import Principal
from app.errors import InvalidInput, InvalidState, NotFound
from app.participants import Participant
from registry import rules
from registry.authorizations import active_authorizations
from registry.models import (
    DailyUsage,
    Methodology,
    Scenario,
    ScenarioRecord,
    ScenarioStatus,
)
from registry.rules import Item, Outcome, Rejection

log = logging.getLogger(__name__)

_IN_CHUNK = 900  # bound parameters per IN (...) query, under SQLite's limit


@dataclass(frozen=True)
class RecordInput:
    """One record as an operator sends it (values not yet checked)."""

    subject: Any
    quantity: Any
    occurred_at: Any
    external_ref: Any


@dataclass(frozen=True)
class Terms:
    """What applying records needs to know of a scenario and its methodology."""

    scenario_id: int
    code: str
    grams_per_unit: int
    daily_cap: int | None


@dataclass(frozen=True)
class Locked:
    """The scenario row as read under its lock: the end of its issued period."""

    issued_through: datetime | None


async def scenario_terms(principal: Principal, scenario_code: str) -> Terms:
    """The scenario the calling operator organisation may send records for.

    Another organisation's scenario answers NOT_FOUND, like a scenario that does not exist.
    """
    org = principal.require_org("scenario_operator")
    scenario = await Scenario.filter(code=scenario_code).first()
    if scenario is None or scenario.operator_org != org:
        raise NotFound("No such scenario.", "scenarioCode")
    if scenario.status != ScenarioStatus.PUBLISHED:
        raise InvalidState("Records are accepted only for a published scenario.", "scenarioCode")
    methodology = await Methodology.filter(id=scenario.methodology_id).first()
    if methodology is None or not methodology.grams_per_unit:
        raise InvalidState("The scenario's methodology has no factor.", "scenarioCode")
    return Terms(scenario.id, scenario.code, methodology.grams_per_unit, methodology.daily_cap_grams)


async def lock_scenario(conn: BaseDBAsyncClient, terms: Terms) -> Locked:
    """Lock the scenario row for this transaction; refuse when it is no longer published."""
    row = (
        await Scenario.filter(id=terms.scenario_id)
        .select_for_update()
        .using_db(conn)
        .only("id", "status", "issued_through")
        .first()
    )
    if row is None or row.status != ScenarioStatus.PUBLISHED:
        raise InvalidState("Records are accepted only for a published scenario.", "scenarioCode")
    return Locked(row.issued_through)


def check_inputs(records: Sequence[RecordInput], grams_per_unit: int) -> list[Item | Rejection]:
    """Check each input's shape and compute its grams."""
    return [
        rules.check_item(i, r.subject, r.quantity, r.occurred_at, r.external_ref, grams_per_unit)
        for i, r in enumerate(records)
    ]


async def submit_scenario_records(
    principal: Principal, scenario_code: str, records: Sequence[RecordInput]
) -> Outcome:
    """Apply up to 1,000 records of the caller's published scenario in one transaction."""
    terms = await scenario_terms(principal, scenario_code)
    if len(records) > rules.MAX_BATCH:
        raise InvalidInput(f"At most {rules.MAX_BATCH} records per call.", "records")
    entries = check_inputs(records, terms.grams_per_unit)
    return await apply_batch(terms, entries, datetime.now(UTC))


async def apply_batch(terms: Terms, entries: list[Item | Rejection], now: datetime) -> Outcome:
    """Apply checked entries in one transaction under the scenario lock (portable path)."""
    async with in_transaction() as conn:
        locked = await lock_scenario(conn, terms)
        return await apply_items(conn, terms, locked, entries, now)


async def _stored_refs(conn: BaseDBAsyncClient, scenario_id: int, refs: set[str]) -> set[str]:
    found: set[str] = set()
    wanted = sorted(refs)
    for start in range(0, len(wanted), _IN_CHUNK):
        rows = await (
            ScenarioRecord.filter(scenario_id=scenario_id, external_ref__in=wanted[start : start + _IN_CHUNK])
            .using_db(conn)
            .values_list("external_ref", flat=True)
        )
        found.update(rows)
    return found


async def _residents(conn: BaseDBAsyncClient, subjects: Iterable[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    wanted = sorted(set(subjects))
    for start in range(0, len(wanted), _IN_CHUNK):
        rows = await (
            Participant.filter(kind="individual", subject__in=wanted[start : start + _IN_CHUNK])
            .using_db(conn)
            .values_list("subject", "id")
        )
        found.update(rows)
    return found


async def _usage(
    conn: BaseDBAsyncClient, scenario_id: int, keys: set[tuple[int, date]]
) -> dict[tuple[int, date], int]:
    used: dict[tuple[int, date], int] = {}
    people = sorted({pid for pid, _ in keys})
    days = sorted({day for _, day in keys})
    for start in range(0, len(people), _IN_CHUNK):
        rows = await (
            DailyUsage.filter(
                scenario_id=scenario_id, participant_id__in=people[start : start + _IN_CHUNK], day__in=days
            )
            .using_db(conn)
            .values_list("participant_id", "day", "grams")
        )
        used.update({(pid, day): grams for pid, day, grams in rows if (pid, day) in keys})
    return used


async def apply_items(
    conn: BaseDBAsyncClient,
    terms: Terms,
    locked: Locked,
    entries: list[Item | Rejection],
    now: datetime,
) -> Outcome:
    """Count, reject or accept each entry in index order, clipping at the daily cap."""
    outcome = Outcome()
    items = sorted((e for e in entries if isinstance(e, Item)), key=lambda e: e.index)
    rejected = [e for e in entries if isinstance(e, Rejection)]
    seen = await _stored_refs(conn, terms.scenario_id, {i.external_ref for i in items})
    residents = await _residents(conn, (i.subject for i in items))
    grants = await active_authorizations(terms.code, residents.values())
    candidates = [
        (i, residents[i.subject]) for i in items if i.external_ref not in seen and i.subject in residents
    ]
    used = await _usage(conn, terms.scenario_id, {(pid, i.day) for i, pid in candidates})
    before = dict(used)

    records: list[ScenarioRecord] = []
    for item in items:
        if item.external_ref in seen:
            outcome.duplicates += 1
            continue
        if rules.period_problem(item.occurred_at, now, locked.issued_through):
            rejected.append(Rejection(item.index, rules.OUT_OF_PERIOD, rules.MESSAGES[rules.OUT_OF_PERIOD]))
            continue
        pid = residents.get(item.subject)
        if pid is None or not rules.authorized_at(grants.get(pid, []), item.occurred_at):
            rejected.append(Rejection(item.index, rules.NOT_AUTHORIZED, rules.MESSAGES[rules.NOT_AUTHORIZED]))
            continue
        key = (pid, item.day)
        earned = rules.clip(item.grams, used.get(key, 0), terms.daily_cap)
        used[key] = used.get(key, 0) + earned
        seen.add(item.external_ref)
        outcome.accepted += 1
        records.append(
            ScenarioRecord(
                scenario_id=terms.scenario_id,
                external_ref=item.external_ref,
                participant_id=pid,
                quantity=float(item.quantity),
                computed_grams=item.grams,
                earned_grams=earned,
                occurred_at=item.occurred_at,
                day=item.day,
            )
        )
    if records:
        await ScenarioRecord.bulk_create(records, batch_size=500, using_db=conn)
    await _add_usage(conn, terms.scenario_id, before, used)
    outcome.rejected = sorted(rejected, key=lambda r: r.index)
    return outcome


async def _add_usage(
    conn: BaseDBAsyncClient,
    scenario_id: int,
    before: dict[tuple[int, date], int],
    after: dict[tuple[int, date], int],
) -> None:
    for (pid, day), grams in after.items():
        delta = grams - before.get((pid, day), 0)
        if delta <= 0:
            continue
        if (pid, day) in before:
            await DailyUsage.filter(scenario_id=scenario_id, participant_id=pid, day=day).using_db(
                conn
            ).update(grams=F("grams") + delta)
        else:
            await DailyUsage.create(
                scenario_id=scenario_id, participant_id=pid, day=day, grams=delta, using_db=conn
            )
