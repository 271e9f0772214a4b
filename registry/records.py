"""Operator records of a scenario: who may send them, and applying a batch under the rules.

A batch is applied in one transaction holding the scenario shared (on PostgreSQL an advisory
lock in shared mode, then the row FOR SHARE): batches of one scenario run side by side, and an
issuance (which holds it exclusive) never runs between a batch's reading `issued_through` and
its writing, and goes before batches that come while it waits. An externalRef is counted once by
the unique constraint: a batch that meets a ref stored meanwhile is applied again, skipping the
refs stored by then. What an accepted record earns under the daily cap is settled when it is
issued (`registry.settlement`), in the order records were accepted, so batches need not wait
for each other to read a person's day. Both backends decide with the same pure rules
(`rules.classify`); only the lookups and the writes differ (`registry.records_sql` on
PostgreSQL).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from app.auth import Principal
from app.db import dialect
from app.errors import InvalidInput, InvalidState, NotFound
from app.participants import Participant
from registry import consent, records_sql, rules
from registry.approval_rules import CODE_RE
from registry.authorizations import active_authorizations
from registry.models import Methodology, Scenario, ScenarioRecord, ScenarioStatus
from registry.records_sql import AlreadyStored
from registry.rules import Decision, Item, Locked, Outcome, Rejection, Terms
from registry.suspension import suspended_times

log = logging.getLogger(__name__)

_IN_CHUNK = 900  # bound parameters per IN (...) query, under SQLite's limit
MAX_ATTEMPTS = 8  # a batch that deadlocks with batches beside it storing the same refs


@dataclass(frozen=True)
class RecordInput:
    """One record as an operator sends it (values not yet checked)."""

    subject: Any
    quantity: Any
    occurred_at: Any
    external_ref: Any


async def scenario_terms(principal: Principal, scenario_code: str) -> Terms:
    """The scenario the calling operator organisation may send records for.

    Another organisation's scenario answers NOT_FOUND, like a scenario that does not exist.
    """
    org = principal.require_org("scenario_operator")
    if not CODE_RE.fullmatch(scenario_code):  # no scenario has such a code
        raise NotFound("No such scenario.", "scenarioCode")
    scenario = await Scenario.filter(code=scenario_code).first()
    if scenario is None or scenario.operator_org != org:
        raise NotFound("No such scenario.", "scenarioCode")
    if scenario.status != ScenarioStatus.PUBLISHED:
        raise InvalidState("Records are accepted only for a published scenario.", "scenarioCode")
    methodology = await Methodology.filter(id=scenario.methodology_id).first()
    if methodology is None or not methodology.grams_per_unit:
        raise InvalidState("The scenario's methodology has no factor.", "scenarioCode")
    return Terms(scenario.id, scenario.code, methodology.grams_per_unit, methodology.daily_cap_grams)


_SHARE = "SELECT status, issued_through FROM registry_scenario WHERE id = $1 FOR SHARE"
# A scenario's batches hold this lock shared, its issuances exclusive. Unlike row locks, it
# queues in arrival order: a batch that comes while an issuance waits waits behind it, so a
# steady stream of batches cannot hold an issuance off.
_ADVISORY = "SELECT pg_advisory_xact_lock{mode}(hashtext('registry_scenario'), hashtext($1))"


async def hold_scenario(conn: BaseDBAsyncClient, scenario_code: str, exclusive: bool) -> None:
    """Queue for the scenario's records lock until the transaction ends: shared for a batch,
    exclusive for an issuance (PostgreSQL; SQLite runs one transaction at a time)."""
    if dialect() == "postgres":
        await conn.execute_query(_ADVISORY.format(mode="" if exclusive else "_shared"), [scenario_code])


async def lock_scenario(conn: BaseDBAsyncClient, terms: Terms) -> Locked:
    """Hold the scenario for this transaction (its records lock shared, then its row in share
    mode) and read its issued period and suspensions; refuse when it is no longer published.
    (SQLite runs one transaction at a time.)"""
    if dialect() == "postgres":
        await hold_scenario(conn, terms.code, exclusive=False)
        rows = await conn.execute_query_dict(_SHARE, [terms.scenario_id])
    else:
        rows = await Scenario.filter(id=terms.scenario_id).using_db(conn).values("status", "issued_through")
    if not rows or rows[0]["status"] != ScenarioStatus.PUBLISHED:
        raise InvalidState("Records are accepted only for a published scenario.", "scenarioCode")
    # A statement of its own, once the row is held: it sees a suspension or reinstatement that
    # committed while the lock was awaited (the locking statement's other reads would not).
    return Locked(rows[0]["issued_through"], await suspended_times(conn, terms.scenario_id))


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
    """Apply checked entries in one transaction under the scenario lock; the per-item answer.

    On PostgreSQL the batch is first written assuming none of its externalRefs is stored yet (a
    resend is rare), which spares a lookup per record; when one was, the unique constraint
    refuses the write, the transaction rolls back, and the batch is applied again, skipping the
    refs stored by then (`records_sql.apply_items`). Only a deadlock with batches beside it
    storing the same refs sends it round again. Both backends give the same answer.
    """
    items = [e for e in entries if isinstance(e, Item)]
    postgres = dialect() == "postgres"
    # Prepared once: what it holds stays true across attempts (a moved period is seen under
    # the lock).
    prepared = await records_sql.prepare(terms, items, now) if postgres and items else None
    for attempt in range(MAX_ATTEMPTS):
        try:
            decision = await _apply(terms, items, now, prepared, retry=attempt > 0)
            break
        except AlreadyStored:
            log.info("batch of %s met refs stored meanwhile; applying it again", terms.code)
    else:
        raise InvalidState(
            "Other batches kept storing this batch's externalRefs at the same time; nothing of"
            " it was stored. Send it again.",
            "records",
        )
    rejected = decision.rejected + [e for e in entries if isinstance(e, Rejection)]
    rejected.sort(key=lambda r: r.index)
    return Outcome(len(decision.accepted), decision.duplicates, rejected)


async def _apply(
    terms: Terms, items: list[Item], now: datetime, prepared: records_sql.Prepared | None, retry: bool
) -> Decision:
    async with in_transaction() as conn:
        locked = await lock_scenario(conn, terms)
        if not items:
            return Decision()
        if prepared is not None:
            return await records_sql.apply_items(conn, terms, locked, items, now, prepared, retry)
        return await apply_items(conn, terms, locked, items, now)


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


async def apply_items(
    conn: BaseDBAsyncClient, terms: Terms, locked: Locked, items: list[Item], now: datetime
) -> Decision:
    """The portable path: look everything up with the ORM, decide, insert the accepted records."""
    seen = await _stored_refs(conn, terms.scenario_id, {i.external_ref for i in items})
    residents = await _residents(conn, (i.subject for i in items))
    unauthorized = await consent.unauthorized(
        terms.code, items, residents, now, locked.issued_through,
        lambda pids: active_authorizations(terms.code, pids),
    )
    decision = rules.classify(
        items, residents, now, locked.issued_through, seen, unauthorized, locked.suspended)
    records = [
        ScenarioRecord(
            scenario_id=terms.scenario_id,
            external_ref=item.external_ref,
            participant_id=pid,
            quantity=float(item.quantity),
            computed_grams=item.grams,
            earned_grams=item.grams,
            occurred_at=item.occurred_at,
            day=item.day,
        )
        for item, pid in decision.accepted
    ]
    if records:
        await ScenarioRecord.bulk_create(records, batch_size=500, using_db=conn)
    return decision
