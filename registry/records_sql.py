"""Records on PostgreSQL: the lookups a batch needs, set-based, and its accepted rows by COPY.

Gives the same per-item answers as the portable path (both decide with `rules.decide`). Each
lookup is an index probe per row on a unique or leading index (never a scan or hash of a whole
table); the accepted records are written with one binary COPY (`registry.records_copy`). The
caller holds the scenario row lock in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from asyncpg.exceptions import UniqueViolationError
from tortoise.backends.base.client import BaseDBAsyncClient

from registry import records_copy, rules
from registry.rules import Decision, Item, Locked, Terms

RESIDENT_CACHE = 200_000
_residents: dict[str, int] = {}  # subject -> participant id of a resident; ids never change

_ONCE = "registry_record_once"

# Items (as ordinals into the arrays) whose person had no active consent at occurredAt.
_UNAUTHORIZED = """
SELECT c.n FROM unnest($2::bigint[], $3::timestamptz[]) WITH ORDINALITY AS c(pid, at, n)
WHERE (SELECT 1 FROM registry_scenario_authorization a
        WHERE a.scenario_code = $1 AND a.participant_id = c.pid AND a.granted_at <= c.at
          AND (a.revoked_at IS NULL OR c.at < a.revoked_at)
        LIMIT 1) IS NULL
"""

# Grams already earned per (participant, day) that has any record: one probe of the
# (scenario, day, participant) index per distinct pair, the pairs in that index's order.
_USED = """
WITH u AS MATERIALIZED (
    SELECT d.pid, d.day,
           (SELECT SUM(r.earned_grams) FROM registry_scenario_record r
             WHERE r.scenario_id = $1 AND r.day = d.day AND r.participant_id = d.pid) AS used
    FROM (SELECT DISTINCT day, pid FROM unnest($2::bigint[], $3::date[]) AS x(pid, day)
          ORDER BY day, pid) d
)
SELECT pid, day, used FROM u WHERE used IS NOT NULL
"""

_STORED = """
SELECT s.ref FROM unnest($2::text[]) AS s(ref)
WHERE EXISTS (SELECT 1 FROM registry_scenario_record r
               WHERE r.scenario_id = $1 AND r.external_ref = s.ref)
"""


class AlreadyStored(Exception):
    """A batch written on the assumption that none of its externalRefs was stored met one."""


async def _resident_ids(raw: Any, subjects: set[str]) -> dict[str, int]:
    """Participant ids of residents by subject: this process's cache, then one query."""
    missing = [subject for subject in subjects if subject not in _residents]
    if missing:
        if len(_residents) + len(missing) > RESIDENT_CACHE:
            _residents.clear()
        rows = await raw.fetch(
            "SELECT subject, id FROM participant"
            " WHERE kind = 'individual' AND subject = ANY($1::text[])",
            missing,
        )
        _residents.update((r["subject"], r["id"]) for r in rows)
    return _residents


async def _stored(raw: Any, scenario_id: int, refs: Iterable[str]) -> set[str]:
    wanted = list(set(refs))
    if not wanted:
        return set()
    return {r[0] for r in await raw.fetch(_STORED, scenario_id, wanted)}


async def _unauthorized(raw: Any, code: str, candidates: list[tuple[Item, int]]) -> set[int]:
    if not candidates:
        return set()
    rows = await raw.fetch(
        _UNAUTHORIZED, code, [pid for _, pid in candidates], [i.occurred_at for i, _ in candidates]
    )
    return {candidates[n - 1][0].index for (n,) in rows}


async def _used(
    raw: Any, terms: Terms, candidates: list[tuple[Item, int]]
) -> dict[tuple[int, date], int]:
    if terms.daily_cap is None or not candidates:
        return {}
    rows = await raw.fetch(
        _USED, terms.scenario_id, [pid for _, pid in candidates], [i.day for i, _ in candidates]
    )
    return {(pid, day): int(used) for pid, day, used in rows}


async def apply_items(
    conn: BaseDBAsyncClient,
    terms: Terms,
    locked: Locked,
    items: list[Item],
    now: datetime,
    probe: bool,
) -> Decision:
    """Look up, decide and write one batch inside `conn`'s transaction.

    With `probe` every externalRef is looked up; without it only those of refused items are (a
    refused item whose ref is stored answers DUPLICATE), and a stored ref among the accepted
    ones raises AlreadyStored from the write, so that the caller applies the batch again with
    `probe` (the transaction must then be rolled back).
    """
    issued_through = locked.issued_through
    async with conn.acquire_connection() as raw:
        # Plan for index probes, never a scan, hash or merge of a whole table, whatever the
        # statistics say (a table that grew since it was last analyzed looks empty to the
        # planner); compiling (JIT) would cost more than running the statements.
        await raw.execute(
            "SET LOCAL jit = off; SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off;"
            " SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off"
        )
        residents = await _resident_ids(raw, {i.subject for i in items})
        candidates = rules.candidates(items, residents, now, issued_through)
        unauthorized = await _unauthorized(raw, terms.code, candidates)
        used = await _used(raw, terms, candidates)
        stored = await _stored(raw, terms.scenario_id, (i.external_ref for i in items)) if probe else set()
        decision = rules.decide(
            items, residents, now, issued_through, terms.daily_cap, stored, unauthorized, used
        )
        if decision.rejected and not probe:
            refused = {r.index for r in decision.rejected}
            refs = (i.external_ref for i in items if i.index in refused)
            stored = await _stored(raw, terms.scenario_id, refs)
            if stored:
                decision = rules.decide(
                    items, residents, now, issued_through, terms.daily_cap, stored, unauthorized, used
                )
        if decision.accepted:
            data = records_copy.payload(terms.scenario_id, decision.accepted, now)
            try:
                await raw.copy_to_table(
                    records_copy.TABLE, source=memoryview(data), columns=records_copy.COLUMNS,
                    format="binary",
                )
            except UniqueViolationError as exc:
                if probe or exc.constraint_name != _ONCE:
                    raise
                raise AlreadyStored() from exc
    return decision
