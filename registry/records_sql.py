"""Records on PostgreSQL: the lookups a batch needs, set-based, and its accepted rows by COPY.

Gives the same per-item answers as the portable path (both go by `rules.classify`). Each lookup
is an index probe per row on a unique or leading index (never a scan or hash of a whole table);
the accepted records are written with one binary COPY (`registry.records_copy`). What depends on
other batches runs while the caller holds the scenario (`apply_items`); what does not is looked
up before (`prepare`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asyncpg.exceptions import DeadlockDetectedError, UniqueViolationError
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from registry import consent, records_copy, rules
from registry.rules import Decision, Interval, Item, Locked, Terms
from registry.suspension import suspended_times

RESIDENT_CACHE = 200_000
_residents: dict[str, int] = {}  # subject -> participant id of a resident; ids never change

_ONCE = "registry_record_once"

# Grant intervals of some people for one scenario (registry.consent reads them).
_GRANTS = """
SELECT participant_id, granted_at, revoked_at FROM registry_scenario_authorization
WHERE scenario_code = $1 AND participant_id = ANY($2::bigint[])
"""

# One probe of the unique index per ref, whatever the statistics say: a lateral subquery with
# a LIMIT is never turned into a join, so the refs are always the outer side. (As an EXISTS, a
# scenario that grew since the table was last analyzed looked empty, and the plan scanned its
# records once per ref.)
_STORED = """
SELECT s.ref FROM unnest($2::text[]) AS s(ref)
CROSS JOIN LATERAL (SELECT 1 FROM registry_scenario_record r
                    WHERE r.scenario_id = $1 AND r.external_ref = s.ref LIMIT 1) AS stored
"""


# The accepted rows in the batch's order (their ids keep it), skipping refs already stored.
_INSERT_SKIPPING = f"""
INSERT INTO {records_copy.TABLE} ({", ".join(records_copy.COLUMNS)})
SELECT $1, r.ref, r.pid, r.quantity, r.grams, r.grams, r.at, r.day, $2
FROM unnest($3::text[], $4::bigint[], $5::float8[], $6::bigint[], $7::timestamptz[], $8::date[])
     WITH ORDINALITY AS r(ref, pid, quantity, grams, at, day, n)
ORDER BY r.n
ON CONFLICT ON CONSTRAINT {_ONCE} DO NOTHING
RETURNING external_ref
"""


class AlreadyStored(Exception):
    """A batch written on the assumption that none of its externalRefs was stored met one (or
    deadlocked with a batch beside it storing the same refs)."""


async def _resident_ids(raw: Any, subjects: set[str]) -> Mapping[str, int]:
    """Participant ids of residents by subject: this process's cache, then one query.

    The answer is the cache itself, to be read only. A full cache is replaced by a new one,
    never emptied in place, so an answer already handed out keeps every subject it was asked for
    while other batches go on.
    """
    global _residents
    known = _residents
    missing = subjects - known.keys()
    if missing:
        if len(known) + len(missing) > RESIDENT_CACHE:
            known = _residents = {}
            missing = subjects
        rows = await raw.fetch(
            "SELECT subject, id FROM participant"
            " WHERE kind = 'individual' AND subject = ANY($1::text[])",
            list(missing),
        )
        known.update((r["subject"], r["id"]) for r in rows)
    return known


async def _stored(raw: Any, scenario_id: int, refs: Iterable[str]) -> set[str]:
    wanted = list(set(refs))
    if not wanted:
        return set()
    return {r[0] for r in await raw.fetch(_STORED, scenario_id, wanted)}


async def _grants(raw: Any, code: str, pids: list[int]) -> dict[int, list[Interval]]:
    found: dict[int, list[Interval]] = {pid: [] for pid in pids}
    for pid, granted_at, revoked_at in await raw.fetch(_GRANTS, code, pids):
        found[pid].append((granted_at, revoked_at))
    return found


_INDEX_PROBES = (
    "SET LOCAL jit = off; SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off;"
    " SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off"
)


@dataclass
class Prepared:
    """A batch as far as it can be taken without the scenario lock: its people, the items with
    no consent at occurredAt, and - for the issued period and the suspensions as read then,
    assuming none of its externalRefs is stored - its classification and the COPY payload of
    its accepted items."""

    residents: Mapping[str, int]
    issued_through: datetime | None
    suspended: tuple[Interval, ...]
    unauthorized: set[int]
    decision: Decision
    data: bytes


async def prepare(terms: Terms, items: list[Item], now: datetime) -> Prepared:
    """Look up residents and consent, classify and encode, before taking the scenario lock.

    None of it depends on other batches but the externalRefs they store (checked under the lock
    and by the unique constraint), and consent at occurredAt cannot change meanwhile: a grant or
    a revocation takes effect at the moment it is made, after `now`, and records are never later
    than `now`. So only the stored refs of refused items and the write hold the lock. (An
    issuance or a suspension committed meanwhile is seen under the lock, and the batch is then
    classified again.)
    """
    async with in_transaction() as conn:
        async with conn.acquire_connection() as raw:
            await raw.execute(_INDEX_PROBES)
            residents = await _resident_ids(raw, {i[1] for i in items})
            issued_through = await raw.fetchval(
                "SELECT issued_through FROM registry_scenario WHERE id = $1", terms.scenario_id
            )
            unauthorized = await consent.unauthorized(
                terms.code, items, residents, now, issued_through,
                lambda pids: _grants(raw, terms.code, pids),
            )
        suspended = await suspended_times(conn, terms.scenario_id)  # the ORM, once raw is back
    decision = rules.classify(items, residents, now, issued_through, (), unauthorized, suspended)
    data = records_copy.payload(terms.scenario_id, decision.accepted, now)
    return Prepared(residents, issued_through, suspended, unauthorized, decision, data)


async def _insert_skipping(
    raw: Any, scenario_id: int, accepted: list[tuple[Item, int]], now: datetime
) -> set[str]:
    """Insert the accepted rows in order, skipping refs stored meanwhile; the refs written."""
    rows = await raw.fetch(
        _INSERT_SKIPPING,
        scenario_id,
        now,
        [item.external_ref for item, _ in accepted],
        [pid for _, pid in accepted],
        [float(item.quantity) for item, _ in accepted],
        [item.grams for item, _ in accepted],
        [item.occurred_at for item, _ in accepted],
        [item.day for item, _ in accepted],
    )
    return {r[0] for r in rows}


async def apply_items(
    conn: BaseDBAsyncClient,
    terms: Terms,
    locked: Locked,
    items: list[Item],
    now: datetime,
    prepared: Prepared,
    retry: bool,
) -> Decision:
    """Finish and write one prepared batch inside `conn`'s transaction, under the lock.

    The refs of refused items are looked up (a refused item whose ref is stored answers
    DUPLICATE), those of every item when an issuance moved the period since `prepare`. The
    first attempt writes with one binary COPY, assuming no accepted ref is stored (a resend is
    rare); one that is raises AlreadyStored, and the caller applies the batch again (after
    rolling back) with `retry`, which writes with INSERT ... ON CONFLICT DO NOTHING instead: a
    ref stored by then, or by a batch beside this one that commits first, answers DUPLICATE.
    """
    issued_through = locked.issued_through
    residents, unauthorized = prepared.residents, prepared.unauthorized
    decision = prepared.decision
    suspended = locked.suspended
    # an issuance, or a suspension and reinstatement, came between
    moved = issued_through != prepared.issued_through or suspended != prepared.suspended
    async with conn.acquire_connection() as raw:
        # Plan for index probes, never a scan, hash or merge of a whole table, whatever the
        # statistics say (a table that grew since it was last analyzed looks empty to the
        # planner); compiling (JIT) would cost more than running the statements.
        await raw.execute(_INDEX_PROBES)
        stored: set[str] = set()
        if moved:
            stored = await _stored(raw, terms.scenario_id, (i.external_ref for i in items))
        elif decision.rejected:
            refused = {r.index for r in decision.rejected}
            refs = (i.external_ref for i in items if i.index in refused)
            stored = await _stored(raw, terms.scenario_id, refs)
        if stored or moved:
            # a resend, refused items already counted, or the period moved
            decision = rules.classify(
                items, residents, now, issued_through, stored, unauthorized, suspended)
        if not decision.accepted:
            return decision
        try:
            if not retry:
                data = prepared.data if decision is prepared.decision else records_copy.payload(
                    terms.scenario_id, decision.accepted, now)
                await raw.copy_to_table(
                    records_copy.TABLE, source=memoryview(data), columns=records_copy.COLUMNS,
                    format="binary",
                )
                return decision
            written = await _insert_skipping(raw, terms.scenario_id, decision.accepted, now)
        except UniqueViolationError as exc:
            if exc.constraint_name != _ONCE:
                raise
            raise AlreadyStored() from exc
        except DeadlockDetectedError as exc:
            # batches beside each other storing the same refs in opposite orders
            raise AlreadyStored() from exc
        skipped = {item.external_ref for item, _ in decision.accepted} - written
        if skipped:
            # stored meanwhile by a batch beside this one: a duplicate for every item holding
            # it, refused ones included, as if that batch had come first
            decision = rules.classify(
                items, residents, now, issued_through, stored | skipped, unauthorized, suspended)
    return decision
